"""Tests of the real-data problem kinds (dmtl.data.real) and their errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dmtl.config import load_config
from dmtl.data import datasets
from dmtl.data.datasets import DATASETS, MultiTaskDataset, data_dir
from dmtl.data.real import problem_from_dataset, real_problem, related_tasks, select_frequent_features
from dmtl.errors import ConfigError, DataError
from dmtl.runner import build_problem, run
from dmtl.seeding import RunStreams


@pytest.fixture(scope="module")
def shared() -> Path:
    folder = data_dir()
    if not folder.is_dir():
        pytest.skip(f"real data directory {folder} is absent (provide ../shared/data or set DMTL_DATA)")
    return folder


def _need(folder: Path, name: str) -> None:
    if not (folder / DATASETS[name].filename).is_file():
        pytest.skip(f"{DATASETS[name].filename} is absent from {folder}")


def _build(overrides: list[str]):
    cfg = load_config(None, overrides)
    return build_problem(cfg, RunStreams(cfg["seed"]))


def test_landmine_small_problem(shared):
    _need(shared, "landmine_small")
    p = _build(["problem.kind=dataset", "problem.name=landmine_small", "topology.nodes=29"])
    assert p.n_tasks == 29 and p.n_features == 9 and p.n_nodes == 29
    np.testing.assert_array_equal(p.placement.task_node, np.arange(29))
    assert set(np.unique(p.y[p.mask])) == {-1.0, 1.0}
    total = p.n_samples + p.n_test
    np.testing.assert_array_equal(total, datasets.load("landmine_small").n_samples)
    np.testing.assert_allclose(p.n_test / total, 0.25, atol=0.02)
    Xtr = p.X[p.mask]
    np.testing.assert_allclose(Xtr.mean(0), 0.0, atol=1e-10)  # standardised on the training split
    np.testing.assert_allclose(Xtr.std(0), 1.0, atol=1e-10)
    # the split follows split_seed (null: the run's data stream) and is reproducible
    q = _build(["problem.kind=dataset", "problem.name=landmine_small", "topology.nodes=29"])
    np.testing.assert_array_equal(p.X, q.X)
    r = _build(["problem.kind=dataset", "problem.name=landmine_small", "topology.nodes=29", "seed=5"])
    assert not np.array_equal(p.X, r.X)
    # fewer nodes than tasks: contiguous groups
    g = _build(["problem.kind=dataset", "problem.name=landmine_small", "topology.nodes=5"])
    assert g.n_nodes == 5 and np.all(np.diff(g.placement.task_node) >= 0)
    with pytest.raises(ConfigError, match="topology.nodes=30 exceeds the 29 tasks"):
        _build(["problem.kind=dataset", "problem.name=landmine_small", "topology.nodes=30"])


@pytest.mark.parametrize("name, K, d", [("school", 139, 28), ("parkinsons", 42, 19), ("landmine", 29, 9)])
def test_other_dense_problems(shared, name, K, d):
    _need(shared, name)
    p = real_problem(name, split_seed=1, bias=(name == "parkinsons"))
    assert p.n_tasks == K and p.n_features == d + (name == "parkinsons")
    assert p.X_test is not None and np.all(p.n_test >= 1)
    if name == "parkinsons":
        np.testing.assert_array_equal(p.X[p.mask][:, -1], 1.0)
        assert p.y[p.mask].min() > 0  # motor UPDRS scores, not recoded


def test_spam_keeps_most_frequent_training_words(shared):
    _need(shared, "spam")
    p = real_problem("spam", max_features=50, split_seed=0, standardize=False)
    assert p.n_tasks == 15 and p.n_features == 50
    ds = datasets.load("spam")
    train, _ = datasets.train_test_split(ds, 0.25, 0)
    cols = select_frequent_features(train, 50)
    df = sum(np.bincount(x.indices, minlength=ds.n_features) for x in train.X)
    assert df[cols].min() >= np.sort(df)[-50]  # no unselected word is more frequent
    np.testing.assert_allclose(p.X[0, : p.n_samples[0]], train.X[0][:, cols].toarray())


def test_missing_and_altered_files(shared, tmp_path):
    _need(shared, "landmine_small")
    with pytest.raises(DataError, match="landmine_small_mocha.mat"):
        _build(["problem.kind=dataset", "problem.name=landmine_small", f"problem.data_dir={tmp_path}"])
    bad = tmp_path / "landmine_small_mocha.mat"
    shutil.copy(shared / "landmine_small_mocha.mat", bad)
    bad.chmod(0o644)
    with bad.open("r+b") as fh:
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DataError, match="SHA-256"):
        real_problem("landmine_small", data_dir=str(tmp_path))


def test_bad_parameters(shared):
    with pytest.raises(ConfigError, match="problem.name must be one of"):
        real_problem("mnist")
    with pytest.raises(ConfigError, match="test_fraction"):
        real_problem("landmine_small", test_fraction=1.5)
    with pytest.raises(ConfigError, match="unknown field problem.foo"):
        _build(["problem.kind=dataset", "problem.foo=1"])


def test_empty_task_is_rejected():
    with pytest.raises(DataError, match="task 1 is empty"):
        MultiTaskDataset("toy", [np.ones((3, 2)), np.ones((0, 2))], [np.ones(3), np.ones(0)])
    with pytest.raises(DataError, match="task 1 is empty"):
        from dmtl.data.real import pad_tasks

        pad_tasks([np.ones((3, 2)), np.ones((0, 2))], [np.ones(3), np.ones(0)])
    ds = MultiTaskDataset("toy", [np.ones((3, 2)), np.ones((2, 2))], [np.ones(3), -np.ones(2)], kind="binary")
    p = problem_from_dataset(ds)
    assert p.n_samples.tolist() == [3, 2]


def test_regression_labels_with_hinge_loss_fail_clearly(shared):
    _need(shared, "school")
    with pytest.raises(DataError, match=r"hinge loss needs labels in \{-1, \+1\}"):
        run(
            None,
            [
                "problem.kind=dataset",
                "problem.name=school",
                "topology.nodes=139",
                "algorithm.name=mocha",
                "rounds=1",
                "output.progress=off",
            ],
        )


def test_mocha_runs_on_landmine_small(shared):
    _need(shared, "landmine_small")
    r = run(
        None,
        [
            "problem.kind=dataset",
            "problem.name=landmine_small",
            "topology.nodes=29",
            "algorithm.name=mocha",
            "algorithm.lam=1e-3",
            "algorithm.inner_iters=20",
            "rounds=60",
            "eval_every=20",
            "output.progress=off",
        ],
    )
    assert r.final("duality_gap") >= 0
    assert r.final("test_error") < 0.4


def test_related_tasks_kind():
    p = _build(["problem.kind=related_tasks", "problem.tasks=5", "topology.nodes=5"])
    assert p.n_tasks == 5 and set(np.unique(p.y[p.mask])) == {-1.0, 1.0}
    assert p.truth["W"].shape == (5, 5)
    q = related_tasks(tasks=4, kind="regression")
    assert len(np.unique(q.y[q.mask])) > 10
    with pytest.raises(ConfigError, match="problem.labels"):
        related_tasks(kind="ordinal")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"flip": 1.5}, r"problem.flip must be a probability in \[0, 1\], got 1.5"),
        ({"flip": -3}, "problem.flip must be a probability"),
        ({"spread": float("nan")}, "problem.spread must be a finite number >= 0"),
        ({"noise": -1.0}, "problem.noise must be a finite number >= 0"),
        ({"test_samples": -2}, "problem.test_samples must be an integer >= 0"),
        ({"test_samples": 2.5}, "problem.test_samples must be an integer >= 0"),
    ],
)
def test_related_tasks_parameters_are_validated(params, match):
    with pytest.raises(ConfigError, match=match):
        related_tasks(**params)
