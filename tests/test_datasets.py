"""Tests of dmtl.data.datasets: registry, verified loading of the real files, preprocessing.

Tests that need a data file locate it with the library's own :func:`data_dir` logic and skip, with
the reason, when the directory or the file is absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from dmtl.data import datasets
from dmtl.data.datasets import (
    DATASETS,
    MultiTaskDataset,
    StreamArrays,
    data_dir,
    dataset_path,
    load,
    load_stream,
    partition_by_id,
    partition_dirichlet,
    partition_size_skew,
    standardize,
    train_test_split,
)
from dmtl.errors import DataError

# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_dir() -> Path:
    """The data directory found by data_dir(); skips when it does not exist."""
    directory = data_dir()
    if not directory.is_dir():
        pytest.skip(f"real data directory {directory} is absent (provide ../shared/data or set DMTL_DATA)")
    return directory


def _require_file(directory: Path, name: str) -> Path:
    path = directory / DATASETS[name].filename
    if not path.is_file():
        pytest.skip(f"{DATASETS[name].filename} is absent from {directory}")
    return path


@pytest.fixture(scope="module")
def get(shared_dir: Path):
    """Load a data set once per module: ``get(name, **options)``; skips when its file is absent."""
    cache: dict[tuple, object] = {}

    def _get(name: str, **options):
        key = (name, tuple(sorted(options.items())))
        if key not in cache:
            _require_file(shared_dir, name)
            cache[key] = load(name, shared_dir, **options)
        return cache[key]

    return _get


def _toy(n_tasks: int = 3, n_per: int = 10, d: int = 4, seed: int = 0) -> MultiTaskDataset:
    """Dense toy data whose column 0 is a global row id, and column d-1 a bias."""
    rng = np.random.default_rng(seed)
    xs, ys, start = [], [], 0
    for t in range(n_tasks):
        n = n_per + t
        x = rng.normal(size=(n, d))
        x[:, 0] = np.arange(start, start + n)
        x[:, -1] = 1.0
        start += n
        xs.append(x)
        ys.append(rng.normal(size=n))
    return MultiTaskDataset(name="toy", X=xs, y=ys)


def _ids(ds: MultiTaskDataset) -> list[np.ndarray]:
    return [np.asarray(x[:, 0]).ravel().astype(int) for x in ds.X]


# --------------------------------------------------------------------------------------------------
# Registry and file handling
# --------------------------------------------------------------------------------------------------


def test_registry_entries() -> None:
    assert set(DATASETS) == {
        "school",
        "landmine",
        "landmine_small",
        "spam",
        "parkinsons",
        "omtl_synthetic",
    }
    for name, info in DATASETS.items():
        assert info.name == name
        assert len(info.sha256) == 64 and int(info.sha256, 16) >= 0
        assert info.kind in ("regression", "binary", "online")
        assert info.origin and "\n" not in info.origin
    assert DATASETS["omtl_synthetic"].kind == "online"
    assert "Alberta-Lee/NC-24" in DATASETS["omtl_synthetic"].origin


def test_unknown_name() -> None:
    with pytest.raises(DataError, match=r"unknown data set 'nope'.*school.*landmine_small"):
        load("nope")
    with pytest.raises(ValueError):
        dataset_path("nope")


def test_missing_file_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load("school", tmp_path)
    msg = str(info.value)
    assert "school.mat" in msg and "DMTL_DATA" in msg and str(tmp_path) in msg
    assert "MALSAR" in msg
    assert "\n" not in msg


def test_explicit_missing_directory_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dir"
    assert data_dir(missing) == missing.resolve()
    with pytest.raises(DataError, match="no_such_dir"):
        dataset_path("landmine", missing)


def test_checksum_mismatch(shared_dir: Path, tmp_path: Path) -> None:
    source = _require_file(shared_dir, "landmine_small")
    target = tmp_path / source.name
    shutil.copyfile(source, target)
    assert load("landmine_small", tmp_path).n_tasks == 29  # an exact copy verifies
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        load("landmine_small", tmp_path)
    msg = str(info.value)
    assert "landmine_small_mocha.mat" in msg and "SHA-256" in msg
    assert DATASETS["landmine_small"].sha256 in msg
    assert "\n" not in msg


def test_checksum_cached_by_path_size_mtime(
    shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _require_file(shared_dir, "landmine_small")
    target = tmp_path / source.name
    shutil.copyfile(source, target)
    calls: list[Path] = []
    original = datasets._sha256_file

    def counting(path: Path) -> str:
        calls.append(path)
        return original(path)

    monkeypatch.setattr(datasets, "_sha256_file", counting)
    dataset_path("landmine_small", tmp_path)
    dataset_path("landmine_small", tmp_path)
    assert len(calls) == 1
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    dataset_path("landmine_small", tmp_path)
    assert len(calls) == 2


def test_data_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DMTL_DATA", raising=False)
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    env = tmp_path / "env"
    env.mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    project = tmp_path / "project"
    project.mkdir()

    monkeypatch.chdir(project)
    assert data_dir() == (tmp_path / "shared" / "data").resolve()  # ../shared/data from the cwd
    monkeypatch.setenv("DMTL_DATA", str(env))
    assert data_dir() == env.resolve()  # the environment variable beats the cwd
    assert data_dir(explicit) == explicit.resolve()  # the argument beats both

    # Neither env nor cwd: fall back to the repository's sibling shared/data (if there is one).
    monkeypatch.delenv("DMTL_DATA")
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    repo_guess = Path(datasets.__file__).resolve().parents[3] / ".." / "shared" / "data"
    if repo_guess.is_dir():
        assert data_dir() == repo_guess.resolve()
    else:
        assert data_dir() == (elsewhere / ".." / "shared" / "data").resolve()


def test_mistyped_dmtl_data_is_reported_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a ../shared/data next to the working directory must not silently stand in for a mistyped DMTL_DATA
    (tmp_path / "shared" / "data").mkdir(parents=True)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    typo = tmp_path / "shraed"
    monkeypatch.setenv("DMTL_DATA", str(typo))
    assert data_dir() == typo.resolve()
    with pytest.raises(DataError, match=r"DMTL_DATA=.*shraed is not a directory; point DMTL_DATA at") as info:
        dataset_path("landmine_small")
    assert "\n" not in str(info.value)


def test_data_dir_and_split_seed_of_the_wrong_kind_are_data_errors() -> None:
    with pytest.raises(DataError, match="data_dir must be a directory path .* got 123"):
        data_dir(123)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="split seed must be an integer >= 0, got -3"):
        train_test_split(_toy(), 0.25, -3)


def test_unknown_option_and_target() -> None:
    # Options are validated before the file is looked up: no data needed.
    with pytest.raises(DataError, match=r"unknown option\(s\) foo.*accepted: none"):
        load("school", foo=1)
    with pytest.raises(DataError, match="motor_UPDRS, total_UPDRS"):
        load("parkinsons", target="UPDRS")
    with pytest.raises(DataError, match="accepted: target"):
        load("parkinsons", targt="total_UPDRS")
    with pytest.raises(DataError, match="not an online stream"):
        load_stream("school")


# --------------------------------------------------------------------------------------------------
# The real files
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n_tasks", "n_features", "total", "smallest", "largest", "kind", "coding"),
    [
        ("school", 139, 28, 15_362, 22, 251, "regression", None),
        ("landmine", 29, 9, 14_820, 445, 690, "binary", "{0,1}->{-1,+1}"),
        ("landmine_small", 29, 9, 1_464, 44, 69, "binary", "{-1,+1}"),
        ("spam", 15, 152_543, 6_000, 400, 400, "binary", "{0,1}->{-1,+1}"),
        ("parkinsons", 42, 19, 5_875, 101, 168, "regression", None),
    ],
)
def test_file_shapes(get, name, n_tasks, n_features, total, smallest, largest, kind, coding) -> None:
    ds = get(name)
    assert isinstance(ds, MultiTaskDataset)
    assert ds.n_tasks == n_tasks == len(ds.y) == len(ds.task_names)
    assert ds.n_features == n_features
    assert ds.n_samples.sum() == total
    assert ds.n_samples.min() == smallest and ds.n_samples.max() == largest
    assert ds.kind == kind and ds.label_coding == coding
    for x, y in zip(ds.X, ds.y, strict=True):
        assert x.dtype == np.float64 and y.dtype == np.float64 and y.ndim == 1
    summary = ds.summary()
    assert summary["n_samples"] == total and summary["n_tasks"] == n_tasks


def test_school_details(get) -> None:
    ds = get("school")
    y = np.concatenate(ds.y)
    assert y.min() == 1 and y.max() == 70
    assert all(np.all(x[:, 27] == 1.0) for x in ds.X)  # the bias column is kept


def test_binary_labels_are_pm1(get, shared_dir: Path) -> None:
    for name in ("landmine", "landmine_small", "spam"):
        ds = get(name)
        assert set(np.unique(np.concatenate(ds.y)).tolist()) == {-1.0, 1.0}
    landmine = get("landmine")
    raw = scipy.io.loadmat(str(shared_dir / "landmine.mat"))["label"]
    for t in (0, 28):
        np.testing.assert_array_equal(landmine.y[t], 2.0 * raw[0, t].ravel() - 1.0)
    assert 0.05 < landmine.summary()["positive_fraction"] < 0.07
    assert get("spam").summary()["positive_fraction"] == 0.5


def test_spam_stays_sparse(get) -> None:
    ds = get("spam")
    assert ds.is_sparse
    assert all(isinstance(x, sp.csr_array) and x.shape == (400, 152_543) for x in ds.X)
    train, test = train_test_split(ds, seed=1)
    assert train.n_samples.tolist() == [300] * 15 and test.n_samples.tolist() == [100] * 15
    std_train, std_test = standardize(train, test)
    for before, after in zip(train.X, std_train.X, strict=True):
        assert isinstance(after, sp.csr_array) and after.nnz == before.nnz
    assert isinstance(std_test.X[0], sp.csr_array)


def test_parkinsons(get) -> None:
    motor = get("parkinsons")
    total = get("parkinsons", target="total_UPDRS")
    assert motor.n_tasks == 42 and motor.n_features == 19
    assert motor.task_names[0] == "subject_1" and motor.task_names[-1] == "subject_42"
    names = motor.feature_names
    assert names is not None and names[:3] == ["age", "sex", "test_time"]
    assert not {"subject#", "motor_UPDRS", "total_UPDRS"} & set(names)
    assert np.all(np.concatenate(total.y) >= np.concatenate(motor.y))  # total includes motor
    np.testing.assert_array_equal(motor.X[5], total.X[5])


def test_omtl_stream(get, shared_dir: Path) -> None:
    stream = get("omtl_synthetic")
    assert isinstance(stream, StreamArrays)
    assert stream.xs.shape == (5, 10_000, 9) and stream.ys.shape == (5, 10_000)
    assert stream.xs.dtype == np.float64 and set(np.unique(stream.ys).tolist()) == {-1.0, 1.0}
    again = load_stream(data_dir=shared_dir)
    np.testing.assert_array_equal(again.ys, stream.ys)


# --------------------------------------------------------------------------------------------------
# Container validation
# --------------------------------------------------------------------------------------------------


def test_nan_rejected() -> None:
    x = np.ones((3, 2))
    bad = x.copy()
    bad[1, 0] = np.nan
    with pytest.raises(DataError, match="task 1"):
        MultiTaskDataset(name="bad", X=[x, bad], y=[np.zeros(3), np.zeros(3)])
    with pytest.raises(DataError, match="task 0: targets"):
        MultiTaskDataset(name="bad", X=[x], y=[np.array([0.0, np.inf, 1.0])])


def test_shape_errors() -> None:
    x = np.ones((3, 2))
    with pytest.raises(DataError, match="task 1 is empty"):
        MultiTaskDataset(name="e", X=[x, np.ones((0, 2))], y=[np.zeros(3), np.zeros(0)])
    with pytest.raises(DataError, match="task 1 has 3 features"):
        MultiTaskDataset(name="e", X=[x, np.ones((3, 3))], y=[np.zeros(3), np.zeros(3)])
    with pytest.raises(DataError, match="task 0: 3 feature rows but 2 targets"):
        MultiTaskDataset(name="e", X=[x], y=[np.zeros(2)])
    with pytest.raises(DataError, match=r"task 0: binary labels must be in \{-1,\+1\}"):
        MultiTaskDataset(name="e", X=[x], y=[np.array([0.0, 1.0, 1.0])], kind="binary")


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------


def test_split_deterministic_disjoint_covering() -> None:
    ds = _toy(n_tasks=4, n_per=9)
    train, test = train_test_split(ds, test_fraction=0.3, seed=7)
    train2, test2 = train_test_split(ds, test_fraction=0.3, seed=7)
    other, _ = train_test_split(ds, test_fraction=0.3, seed=8)
    for t in range(ds.n_tasks):
        a, b = _ids(train)[t], _ids(test)[t]
        assert not set(a) & set(b)
        np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), _ids(ds)[t])
        np.testing.assert_array_equal(a, _ids(train2)[t])
        np.testing.assert_array_equal(b, _ids(test2)[t])
        np.testing.assert_array_equal(ds.y[t][np.searchsorted(_ids(ds)[t], b)], test.y[t])
    assert any(not np.array_equal(a, b) for a, b in zip(_ids(train), _ids(other), strict=True))


def test_split_small_tasks() -> None:
    two = MultiTaskDataset(name="two", X=[np.arange(4.0).reshape(2, 2)], y=[np.zeros(2)])
    train, test = train_test_split(two, test_fraction=0.01)
    assert train.n_samples.tolist() == [1] and test.n_samples.tolist() == [1]
    one = MultiTaskDataset(name="one", X=[np.ones((1, 2))], y=[np.zeros(1)])
    with pytest.raises(DataError, match="task 0"):
        train_test_split(one)


def test_standardize_school_uses_train_stats(get) -> None:
    train, test = train_test_split(get("school"), seed=0)
    std_train, std_test = standardize(train, test)
    stacked_train = np.vstack(std_train.X)
    stacked_test = np.vstack(std_test.X)
    varying = np.arange(27)
    np.testing.assert_allclose(stacked_train[:, varying].mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(stacked_train[:, varying].std(axis=0), 1.0, rtol=1e-10)
    assert np.all(stacked_test[:, varying].mean(axis=0) != 0.0)
    assert np.all(stacked_train[:, 27] == 1.0) and np.all(stacked_test[:, 27] == 1.0)
    raw_train = np.vstack(train.X)
    expected = (np.vstack(test.X)[:, 3] - raw_train[:, 3].mean()) / raw_train[:, 3].std()
    np.testing.assert_allclose(stacked_test[:, 3], expected)
    np.testing.assert_array_equal(std_test.y[0], test.y[0])  # targets untouched


def test_standardize_per_task() -> None:
    ds = _toy(n_tasks=3, n_per=20)
    train, test = train_test_split(ds, seed=0)
    std_train, std_test = standardize(train, test, per_task=True)
    for t in range(3):
        np.testing.assert_allclose(std_train.X[t][:, :-1].mean(axis=0), 0.0, atol=1e-12)
        mu, sd = train.X[t][:, 1].mean(), train.X[t][:, 1].std()
        np.testing.assert_allclose(std_test.X[t][:, 1], (test.X[t][:, 1] - mu) / sd)
        assert np.all(std_test.X[t][:, -1] == 1.0)
    alone, none = standardize(train)
    assert none is None and alone.n_tasks == 3


def test_standardize_sparse_scales_only() -> None:
    rng = np.random.default_rng(3)
    dense = [rng.poisson(0.7, size=(30, 6)).astype(float) for _ in range(2)]
    dense[0][:, 5] = 0.0
    dense[1][:, 5] = 0.0  # an all-zero column stays zero
    ds = MultiTaskDataset(name="s", X=[sp.csr_array(d) for d in dense], y=[np.ones(30)] * 2)
    out, _ = standardize(ds)
    stacked = np.vstack(dense)
    scale = stacked.std(axis=0)
    scale[5] = 1.0
    for before, after in zip(dense, out.X, strict=True):
        assert isinstance(after, sp.csr_array)
        np.testing.assert_allclose(after.toarray(), before / scale)


def test_partition_dirichlet_covers_once() -> None:
    rng = np.random.default_rng(0)
    n = 500
    X = np.column_stack([np.arange(n), rng.normal(size=(n, 2))])
    y = rng.integers(0, 3, size=n).astype(float)
    ds = partition_dirichlet(X, y, n_clients=7, alpha=0.3, seed=1, min_size=5)
    assert ds.n_tasks == 7 and ds.n_samples.min() >= 5
    np.testing.assert_array_equal(np.sort(np.concatenate(_ids(ds))), np.arange(n))
    for ids, targets in zip(_ids(ds), ds.y, strict=True):
        np.testing.assert_array_equal(y[ids], targets)
    again = partition_dirichlet(X, y, n_clients=7, alpha=0.3, seed=1, min_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(_ids(ds), _ids(again), strict=True))
    assert ds.kind == "regression"  # labels {0,1,2} are not {-1,+1}
    with pytest.raises(DataError, match="cannot give"):
        partition_dirichlet(X, y, n_clients=7, alpha=0.3, seed=1, min_size=100)


def test_partition_size_skew_and_by_id() -> None:
    n = 300
    X = np.column_stack([np.arange(n), np.ones(n)])
    y = np.where(np.arange(n) % 3 == 0, 1.0, -1.0)
    ds = partition_size_skew(X, y, n_clients=10, sigma=1.5, seed=2)
    assert ds.n_tasks == 10 and ds.n_samples.min() >= 1 and ds.n_samples.sum() == n
    assert ds.n_samples.max() > 2 * ds.n_samples.min()
    assert ds.kind == "binary"
    np.testing.assert_array_equal(np.sort(np.concatenate(_ids(ds))), np.arange(n))

    ids = np.array(["b", "a", "b", "c", "a", "a"])
    Xs = sp.csr_array(np.arange(12.0).reshape(6, 2))
    by_id = partition_by_id(Xs, np.arange(6.0), ids)
    assert by_id.task_names == ["a", "b", "c"] and by_id.is_sparse
    np.testing.assert_array_equal(by_id.y[0], [1.0, 4.0, 5.0])
    np.testing.assert_array_equal(by_id.X[1].toarray(), [[0.0, 1.0], [4.0, 5.0]])
