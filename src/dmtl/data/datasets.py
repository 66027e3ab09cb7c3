"""Real multi-task benchmark data sets: registry, verified loading, and preprocessing.

The data files are never shipped with dmtl. They are read from a directory (see :func:`data_dir`),
checked against the SHA-256 recorded in :data:`DATASETS`, and parsed into a :class:`MultiTaskDataset`
(one feature matrix and one target vector per task) or, for the online stream, a
:class:`StreamArrays`.

Conventions
-----------
* Features are ``float64``; every data set but ``spam`` is dense. ``spam`` stays a list of
  :class:`scipy.sparse.csr_array` (15 x 400 e-mails x 152,543 bag-of-words counts) and is never
  densified, not even by :func:`standardize`.
* Targets are 1-D ``float64``. Binary labels are always ``{-1, +1}``: files coded ``{0, 1}``
  (``landmine``, ``spam``) are mapped by ``y -> 2 y - 1`` and the dataset's ``label_coding`` records
  the original coding, e.g. ``"{0,1}->{-1,+1}"``.
* ``school`` keeps its 28 columns as stored, including the constant bias column (index 27, all ones).
  :func:`standardize` leaves constant columns untouched, so the bias survives standardisation.

What the files hold (checked against the SHA-256 in :data:`DATASETS`)
--------------------------------------------------------------------
=================  ===================================================================================
school             cells ``X`` (n_t, 28) and ``Y`` (n_t, 1), 1x139; 15,362 students, 22..251 per task;
                   targets are exam scores 1..70; column 27 is the bias (all ones).
landmine           cells ``feature`` (n_t, 9) and ``label`` (n_t, 1) uint8 in {0,1}, 1x29; 14,820 samples,
                   445..690 per task, about 6.1% positive.
landmine_small     cells ``X`` (n_t, 9) and ``Y`` (n_t, 1) int16 in {-1,+1}, 1x29; 1,464 samples,
                   44..69 per task (the data README says 50..69; the file has eleven tasks of 44).
spam               cells ``X`` (400, 152543) ``csc_array`` of word counts and ``Y`` (400, 1) uint8 in
                   {0,1}, 1x15; rows are e-mails already (no transpose needed), 200 spam per user.
parkinsons         CSV with header, 5,875 rows x 22 columns; 42 subjects (ids 1..42), 101..168 rows each.
omtl_synthetic     ``xs`` (5, 10000, 9) float64, ``ys`` (5, 10000) float64 in {-1,+1}.
=================  ===================================================================================
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from dmtl.errors import DataError

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "MultiTaskDataset",
    "StreamArrays",
    "data_dir",
    "dataset_path",
    "load",
    "load_stream",
    "partition_by_id",
    "partition_dirichlet",
    "partition_size_skew",
    "standardize",
    "train_test_split",
]

ENV_VAR = "DMTL_DATA"
"""Environment variable naming the directory that holds the data files."""

SeedLike = int | np.random.Generator | None


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry of one data set.

    Attributes
    ----------
    name : str
        Key in :data:`DATASETS` and argument of :func:`load`.
    filename : str
        File name inside the data directory.
    sha256 : str
        Expected SHA-256 of the file (lower-case hex).
    description : str
        What the data set is and its shape.
    kind : {"regression", "binary", "online"}
        Learning problem; ``"online"`` data load as :class:`StreamArrays`.
    origin : str
        One sentence telling a user where to download the file.
    """

    name: str
    filename: str
    sha256: str
    description: str
    kind: Literal["regression", "binary", "online"]
    origin: str


_MALSAR = "the MALSAR multi-task learning toolbox and many MTL papers' code"

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="school",
            filename="school.mat",
            sha256="d1d0cae26bae30c78d9515ee6f95bd685038f77ea0bd956fb17274e38d2c9058",
            description=(
                "Inner London Education Authority exam scores: 139 schools (tasks), 15,362 students, "
                "28 features including a bias column; regression on scores 1..70"
            ),
            kind="regression",
            origin=f"school.mat (School data) is distributed with {_MALSAR}.",
        ),
        DatasetInfo(
            name="landmine",
            filename="landmine.mat",
            sha256="2163ab20a80e33a8b65593c48cf283c540599dcb291105e63fa4af2ce24c2bea",
            description=(
                "Landmine detection from radar images: 29 fields (tasks), 14,820 samples, 9 features; "
                "binary, about 6% positive"
            ),
            kind="binary",
            origin=f"landmine.mat (Landmine data) is distributed with {_MALSAR}.",
        ),
        DatasetInfo(
            name="landmine_small",
            filename="landmine_small_mocha.mat",
            sha256="456e9e96087ad2d0404a259af0a42a2d5880fba6cbc5f8ec0f6710c0ac3f45cc",
            description=(
                "Subsample of Landmine shipped with the reference MOCHA code: 29 tasks, 1,464 samples, "
                "9 features; binary"
            ),
            kind="binary",
            origin=(
                "landmine_small_mocha.mat is the Landmine subsample shipped with the reference MOCHA "
                f"code (the full Landmine set is distributed with {_MALSAR})."
            ),
        ),
        DatasetInfo(
            name="spam",
            filename="spam_emails.mat",
            sha256="0f661cd1ad2d1cc54065c4526721a7b5f4374f7e08b3471509c04bc79fae0cce",
            description=(
                "ECML/PKDD 2006 Discovery Challenge spam filtering: 15 users (tasks) x 400 e-mails, "
                "152,543 sparse bag-of-words features; binary"
            ),
            kind="binary",
            origin=(
                "spam_emails.mat holds the data of the ECML/PKDD 2006 Discovery Challenge on "
                "personalised spam filtering."
            ),
        ),
        DatasetInfo(
            name="parkinsons",
            filename="parkinsons_updrs.csv",
            sha256="f2c7d5025dec4e92e7feae367a5f7ccf58789a10ac6b54bdf15976c599f9dd39",
            description=(
                "UCI Parkinson's telemonitoring: 42 patients (tasks), 5,875 recordings, 19 features "
                "(age, sex, test_time, 16 voice measures); regression on motor_UPDRS or total_UPDRS"
            ),
            kind="regression",
            origin=(
                "parkinsons_updrs.csv is the 'Parkinsons Telemonitoring' data set of the UCI Machine "
                "Learning Repository (comma-separated with a header row)."
            ),
        ),
        DatasetInfo(
            name="omtl_synthetic",
            filename="omtl_synthetic.npz",
            sha256="4a62bf5cdd93d731f1b03b8764dd5a39a82d9a8180112a1e5b369a077dd8dba1",
            description=(
                "Synthetic online multi-task stream of the reference C-ADMM code: 5 tasks x 10,000 "
                "rounds, 9 polynomial features (not normalised); binary labels {-1,+1}"
            ),
            kind="online",
            origin=(
                "omtl_synthetic.npz is file data/synthetic.npz of the online ADMM paper's reference "
                "code, GitHub repository Alberta-Lee/NC-24 (save it as omtl_synthetic.npz)."
            ),
        ),
    )
}


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        known = ", ".join(DATASETS)
        raise DataError(f"unknown data set {name!r}; known data sets: {known}") from None


# --------------------------------------------------------------------------------------------------
# Locating and verifying files
# --------------------------------------------------------------------------------------------------


def _repo_candidates() -> list[Path]:
    """``<ancestor>/../shared/data`` for every ancestor of this file, nearest first."""
    here = Path(__file__).resolve()
    return [parent / ".." / "shared" / "data" for parent in here.parents]


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Directory holding the data files.

    Parameters
    ----------
    path : str or path-like, optional
        Explicit directory. When given it is returned as is (resolved), whether or not it exists, so
        a mistyped directory produces a "file missing" error naming it instead of being silently
        replaced by another directory.

    Returns
    -------
    pathlib.Path
        Without ``path``: the environment variable ``DMTL_DATA`` when it is set, as is, like an
        explicit ``path`` (loading then reports a mistyped one, naming ``DMTL_DATA``); otherwise the
        first existing directory among ``../shared/data`` relative to the current working directory
        and ``<ancestor>/../shared/data`` for the ancestors of this source file, nearest first (for an
        editable install at ``/work/main/src/dmtl/data/datasets.py`` that is ``/work/shared/data``).
        If none exists, the working-directory candidate is returned, and loading then reports the
        missing file.

    Raises
    ------
    DataError
        ``path`` is neither a string nor a path.
    """
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise DataError(f"data_dir must be a directory path (a string), got {path!r}")
        return Path(path).expanduser().resolve()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        # never replaced by another folder: a typo would otherwise load other files without a word
        return Path(env).expanduser().resolve()
    candidates = [Path.cwd() / ".." / "shared" / "data"]
    fallback = candidates[0]
    candidates.extend(_repo_candidates())
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return fallback.resolve()


_CHECKSUMS: dict[tuple[str, int, int], str] = {}
"""SHA-256 digests already computed, keyed by (resolved path, size, mtime in ns)."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum(path: Path) -> str:
    """SHA-256 of ``path``, cached in-process while its size and mtime are unchanged."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _CHECKSUMS.get(key)
    if cached is None:
        cached = _sha256_file(path)
        _CHECKSUMS[key] = cached
    return cached


def dataset_path(name: str, directory: str | os.PathLike[str] | None = None, verify: bool = True) -> Path:
    """Path of a data set's file, checked to exist and (by default) to match its SHA-256.

    Parameters
    ----------
    name : str
        Key of :data:`DATASETS`.
    directory : str or path-like, optional
        Data directory; resolved by :func:`data_dir` when omitted.
    verify : bool, default True
        Compare the file's SHA-256 with the registry. Digests are cached per
        (path, size, mtime), so repeated loads do not rehash.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DataError
        Unknown name, missing file, unreadable file, or checksum mismatch (one-line messages).
    """
    info = _info(name)
    folder = data_dir(directory)
    path = folder / info.filename
    env = os.environ.get(ENV_VAR, "").strip()
    if directory is None and env and not folder.is_dir():
        raise DataError(
            f"{ENV_VAR}={env} is not a directory; point {ENV_VAR} at the folder holding {info.filename} "
            f"(or unset it to use ../shared/data)"
        )
    if not path.is_file():
        raise DataError(
            f"data set {name!r} needs {info.filename} in {folder}, which does not exist; "
            f"set {ENV_VAR} or pass data_dir=..., the file comes from {info.origin}"
        )
    if verify:
        try:
            actual = _checksum(path)
        except OSError as exc:
            raise DataError(f"cannot read {info.filename} in {folder}: {exc}") from exc
        if actual != info.sha256:
            raise DataError(
                f"{info.filename} in {folder} has SHA-256 {actual}, expected {info.sha256}; "
                f"the file is altered or a different version: {info.origin}"
            )
    return path


# --------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------


def _is_sparse(x: Any) -> bool:
    return sp.issparse(x)


def _check_finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise DataError(f"{what} contains NaN or infinite values")


@dataclass(eq=False, repr=False)
class MultiTaskDataset:
    """Per-task feature matrices and targets.

    Parameters
    ----------
    name : str
        Data set name.
    X : list of numpy.ndarray or scipy.sparse.csr_array
        One ``(n_t, d)`` matrix per task, all dense or all sparse, same ``d``. Dense matrices are
        converted to ``float64`` arrays, sparse ones to ``float64`` CSR arrays (never densified).
    y : list of numpy.ndarray
        One 1-D ``float64`` target vector of length ``n_t`` per task.
    kind : {"regression", "binary"}
        ``"binary"`` targets must be in ``{-1, +1}``.
    feature_names : list of str, optional
        ``d`` names, or None.
    task_names : list of str, optional
        ``n_tasks`` names; ``task_0``, ``task_1``, ... when empty.
    label_coding : str, optional
        How binary labels were recoded from the source, e.g. ``"{0,1}->{-1,+1}"``, or
        ``"{-1,+1}"`` when unchanged; None for regression.

    Raises
    ------
    DataError
        No task, an empty task, mismatched lengths or feature dimensions, non-finite values, or
        binary labels outside ``{-1, +1}``; the message names the task index.
    """

    name: str
    X: list[Any]
    y: list[np.ndarray]
    kind: Literal["regression", "binary"] = "regression"
    feature_names: list[str] | None = None
    task_names: list[str] = field(default_factory=list)
    label_coding: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("regression", "binary"):
            raise DataError(f"kind must be 'regression' or 'binary', got {self.kind!r}")
        xs, ys = list(self.X), list(self.y)
        if not xs:
            raise DataError(f"data set {self.name!r} has no task")
        if len(xs) != len(ys):
            raise DataError(f"{len(xs)} feature matrices but {len(ys)} target vectors")
        sparse = _is_sparse(xs[0])
        n_features: int | None = None
        for t, (x, target) in enumerate(zip(xs, ys, strict=True)):
            if _is_sparse(x) != sparse:
                raise DataError(f"task {t}: mixes sparse and dense feature matrices")
            if sparse:
                x = sp.csr_array(x, dtype=np.float64)
                if x.ndim != 2:
                    raise DataError(f"task {t}: features must be 2-D, got shape {x.shape}")
                _check_finite(x.data, f"task {t}: features")
            else:
                x = np.asarray(x, dtype=np.float64)
                if x.ndim != 2:
                    raise DataError(f"task {t}: features must be 2-D, got shape {x.shape}")
                _check_finite(x, f"task {t}: features")
            target = np.asarray(target, dtype=np.float64)
            if target.ndim != 1:
                raise DataError(f"task {t}: targets must be 1-D, got shape {target.shape}")
            if x.shape[0] == 0:
                raise DataError(f"task {t} is empty")
            if target.shape[0] != x.shape[0]:
                raise DataError(f"task {t}: {x.shape[0]} feature rows but {target.shape[0]} targets")
            if n_features is None:
                n_features = x.shape[1]
            elif x.shape[1] != n_features:
                raise DataError(f"task {t} has {x.shape[1]} features, task 0 has {n_features}")
            _check_finite(target, f"task {t}: targets")
            if self.kind == "binary" and not np.isin(target, (-1.0, 1.0)).all():
                found = np.unique(target)[:5]
                raise DataError(
                    f"task {t}: binary labels must be in {{-1,+1}}, found {found.tolist()}; "
                    "recode {0,1} labels with y = 2*y - 1"
                )
            xs[t], ys[t] = x, target
        self.X, self.y = xs, ys
        if self.feature_names is not None:
            self.feature_names = [str(f) for f in self.feature_names]
            if len(self.feature_names) != n_features:
                raise DataError(f"{len(self.feature_names)} feature names for {n_features} features")
        if not self.task_names:
            self.task_names = [f"task_{t}" for t in range(len(xs))]
        else:
            self.task_names = [str(t) for t in self.task_names]
            if len(self.task_names) != len(xs):
                raise DataError(f"{len(self.task_names)} task names for {len(xs)} tasks")

    @property
    def n_tasks(self) -> int:
        """Number of tasks."""
        return len(self.X)

    @property
    def n_features(self) -> int:
        """Feature dimension, shared by all tasks."""
        return int(self.X[0].shape[1])

    @property
    def n_samples(self) -> np.ndarray:
        """Samples per task, an integer array of length :attr:`n_tasks`."""
        return np.array([x.shape[0] for x in self.X], dtype=np.int64)

    @property
    def is_sparse(self) -> bool:
        """Whether the feature matrices are sparse CSR arrays."""
        return _is_sparse(self.X[0])

    def summary(self) -> dict[str, Any]:
        """Plain-Python description of the data set.

        Returns
        -------
        dict
            ``name``, ``kind``, ``n_tasks``, ``n_features``, ``n_samples`` (total),
            ``n_samples_min``, ``n_samples_max``, ``sparse``, ``label_coding``, and
            ``positive_fraction`` (binary) or ``y_mean`` / ``y_std`` (regression).
        """
        n = self.n_samples
        y = np.concatenate(self.y)
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "n_tasks": self.n_tasks,
            "n_features": self.n_features,
            "n_samples": int(n.sum()),
            "n_samples_min": int(n.min()),
            "n_samples_max": int(n.max()),
            "sparse": self.is_sparse,
            "label_coding": self.label_coding,
        }
        if self.kind == "binary":
            out["positive_fraction"] = float(np.mean(y > 0))
        else:
            out["y_mean"] = float(y.mean())
            out["y_std"] = float(y.std())
        return out

    def __repr__(self) -> str:
        n = self.n_samples
        return (
            f"MultiTaskDataset(name={self.name!r}, kind={self.kind!r}, n_tasks={self.n_tasks}, "
            f"n_features={self.n_features}, n_samples={int(n.sum())}, sparse={self.is_sparse})"
        )


@dataclass(eq=False, repr=False)
class StreamArrays:
    """An online multi-task stream as plain arrays.

    Returned by :func:`load_stream` (and by :func:`load` for ``kind == "online"`` data sets)
    instead of a :class:`MultiTaskDataset`: round ``r`` reveals ``xs[k, r]`` to task ``k`` and then
    its label ``ys[k, r]``.

    Parameters
    ----------
    xs : numpy.ndarray
        ``(K, T, d)`` float64 features.
    ys : numpy.ndarray
        ``(K, T)`` float64 labels in ``{-1, +1}``.
    name : str, default "stream"
        Data set name.
    """

    xs: np.ndarray
    ys: np.ndarray
    name: str = "stream"

    def __post_init__(self) -> None:
        self.xs = np.asarray(self.xs, dtype=np.float64)
        self.ys = np.asarray(self.ys, dtype=np.float64)
        if self.xs.ndim != 3:
            raise DataError(f"stream features must be (K, T, d), got shape {self.xs.shape}")
        if self.ys.shape != self.xs.shape[:2]:
            raise DataError(f"stream labels must have shape {self.xs.shape[:2]}, got {self.ys.shape}")
        _check_finite(self.xs, "stream features")
        if not np.isin(self.ys, (-1.0, 1.0)).all():
            raise DataError("stream labels must be in {-1,+1}")

    @property
    def n_tasks(self) -> int:
        """Number of tasks ``K``."""
        return int(self.xs.shape[0])

    @property
    def n_rounds(self) -> int:
        """Number of rounds ``T``."""
        return int(self.xs.shape[1])

    @property
    def n_features(self) -> int:
        """Feature dimension ``d``."""
        return int(self.xs.shape[2])

    def summary(self) -> dict[str, Any]:
        """Plain-Python description: name, kind, n_tasks, n_rounds, n_features, positive_fraction."""
        return {
            "name": self.name,
            "kind": "online",
            "n_tasks": self.n_tasks,
            "n_rounds": self.n_rounds,
            "n_features": self.n_features,
            "positive_fraction": float(np.mean(self.ys > 0)),
        }

    def __repr__(self) -> str:
        return (
            f"StreamArrays(name={self.name!r}, n_tasks={self.n_tasks}, n_rounds={self.n_rounds}, "
            f"n_features={self.n_features})"
        )


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def _loadmat(path: Path) -> dict[str, Any]:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except (OSError, ValueError, TypeError, NotImplementedError) as exc:
        raise DataError(f"cannot parse {path.name} in {path.parent}: {exc}") from exc


def _cells(mat: dict[str, Any], key: str, path: Path) -> list[Any]:
    """Contents of a 1xK MATLAB cell array as a list."""
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path.name} has no variable {key!r}; found {found}")
    cell = mat[key]
    if not isinstance(cell, np.ndarray) or cell.dtype != object or cell.ndim != 2:
        raise DataError(f"{path.name}: {key!r} is not a cell array")
    return list(cell.ravel(order="F"))


def _targets(cells: list[Any], path: Path) -> list[np.ndarray]:
    out = []
    for t, c in enumerate(cells):
        arr = np.asarray(c, dtype=np.float64)
        if arr.ndim == 2 and 1 in arr.shape:
            arr = arr.ravel()
        if arr.ndim != 1:
            raise DataError(f"{path.name}: targets of task {t} have shape {arr.shape}")
        out.append(arr)
    return out


def _to_pm1(ys: list[np.ndarray], path: Path) -> tuple[list[np.ndarray], str]:
    """Recode binary labels to {-1,+1}; returns the labels and the coding note."""
    values = np.unique(np.concatenate(ys))
    if np.isin(values, (-1.0, 1.0)).all():
        return ys, "{-1,+1}"
    if np.isin(values, (0.0, 1.0)).all():
        return [2.0 * y - 1.0 for y in ys], "{0,1}->{-1,+1}"
    raise DataError(f"{path.name}: labels {values[:5].tolist()} are neither {{0,1}} nor {{-1,+1}}")


def _mat_dataset(
    path: Path, name: str, xkey: str, ykey: str, kind: Literal["regression", "binary"], prefix: str
) -> MultiTaskDataset:
    mat = _loadmat(path)
    xs = _cells(mat, xkey, path)
    ys = _targets(_cells(mat, ykey, path), path)
    coding = None
    if kind == "binary":
        ys, coding = _to_pm1(ys, path)
    return MultiTaskDataset(
        name=name,
        X=[np.asarray(x, dtype=np.float64) for x in xs],
        y=ys,
        kind=kind,
        task_names=[f"{prefix}_{t}" for t in range(len(xs))],
        label_coding=coding,
    )


def _load_school(path: Path) -> MultiTaskDataset:
    """139 schools; ``X`` cells (n_t, 28) with the bias in column 27, ``Y`` cells (n_t, 1)."""
    return _mat_dataset(path, "school", "X", "Y", "regression", "school")


def _load_landmine(path: Path) -> MultiTaskDataset:
    """29 fields; ``feature`` cells (n_t, 9), ``label`` cells (n_t, 1) in {0,1} -> {-1,+1}."""
    return _mat_dataset(path, "landmine", "feature", "label", "binary", "field")


def _load_landmine_small(path: Path) -> MultiTaskDataset:
    """29 fields of the MOCHA subsample; ``X`` cells (n_t, 9), ``Y`` cells in {-1,+1}."""
    return _mat_dataset(path, "landmine_small", "X", "Y", "binary", "field")


def _load_spam(path: Path) -> MultiTaskDataset:
    """15 users; ``X`` cells are CSC (400, 152543) with rows = e-mails; labels {0,1} -> {-1,+1}."""
    mat = _loadmat(path)
    xs = _cells(mat, "X", path)
    ys = _targets(_cells(mat, "Y", path), path)
    mats = []
    for t, (x, y) in enumerate(zip(xs, ys, strict=True)):
        m = sp.csr_array(x, dtype=np.float64)
        # The stored orientation is rows = e-mails; accept a transposed file defensively.
        if m.shape[0] != y.shape[0] and m.shape[1] == y.shape[0]:
            m = sp.csr_array(m.T)
        if m.shape[0] != y.shape[0]:
            raise DataError(f"{path.name}: task {t} has {m.shape} features for {y.size} labels")
        m.sum_duplicates()
        m.sort_indices()
        mats.append(m)
    ys, coding = _to_pm1(ys, path)
    return MultiTaskDataset(
        name="spam",
        X=mats,
        y=ys,
        kind="binary",
        task_names=[f"user_{t}" for t in range(len(mats))],
        label_coding=coding,
    )


PARKINSONS_TARGETS = ("motor_UPDRS", "total_UPDRS")
_PARKINSONS_ID = "subject#"


def _load_parkinsons(path: Path, target: str = "motor_UPDRS") -> MultiTaskDataset:
    """One task per ``subject#`` (sorted); 19 features; target ``motor_UPDRS`` or ``total_UPDRS``."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot parse {path.name} in {path.parent}: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in (_PARKINSONS_ID, *PARKINSONS_TARGETS) if c not in frame.columns]
    if missing:
        raise DataError(f"{path.name} lacks column(s) {missing}")
    features = [c for c in frame.columns if c not in (_PARKINSONS_ID, *PARKINSONS_TARGETS)]
    try:
        values = frame[features].to_numpy(dtype=np.float64)
        target_values = frame[target].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path.name}: non-numeric values: {exc}") from exc
    ids = frame[_PARKINSONS_ID].to_numpy()
    ds = partition_by_id(values, target_values, ids, name="parkinsons", kind="regression")
    return dataclasses.replace(ds, feature_names=features, task_names=[f"subject_{t}" for t in ds.task_names])


def _load_omtl_synthetic(path: Path) -> StreamArrays:
    """Arrays ``xs`` (5, 10000, 9) and ``ys`` (5, 10000) in {-1,+1}."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            xs, ys = npz["xs"], npz["ys"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot parse {path.name} in {path.parent}: {exc}") from exc
    return StreamArrays(xs=xs, ys=ys, name="omtl_synthetic")


_LOADERS: dict[str, Callable[..., MultiTaskDataset | StreamArrays]] = {
    "school": _load_school,
    "landmine": _load_landmine,
    "landmine_small": _load_landmine_small,
    "spam": _load_spam,
    "parkinsons": _load_parkinsons,
    "omtl_synthetic": _load_omtl_synthetic,
}

_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "parkinsons": {"target": PARKINSONS_TARGETS},
}
"""Keyword options each loader accepts, with their allowed values."""


def load(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
    **options: Any,
) -> MultiTaskDataset | StreamArrays:
    """Load a registered data set.

    Parameters
    ----------
    name : str
        Key of :data:`DATASETS`.
    data_dir : str or path-like, optional
        Directory holding the file; see :func:`data_dir` for the default.
    verify : bool, default True
        Check the file's SHA-256 (cached per path, size and mtime).
    **options
        Loader-specific options. ``parkinsons`` accepts ``target`` in
        ``{"motor_UPDRS", "total_UPDRS"}`` (default ``"motor_UPDRS"``); other data sets accept none.

    Returns
    -------
    MultiTaskDataset or StreamArrays
        A :class:`StreamArrays` for ``omtl_synthetic`` (an online stream), otherwise a
        :class:`MultiTaskDataset`. Binary labels are in ``{-1, +1}``; see ``label_coding``.

    Raises
    ------
    DataError
        Unknown name or option, invalid option value, missing or altered file, malformed content.
    """
    _info(name)
    allowed = _OPTIONS.get(name, {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise DataError(f"unknown option(s) {', '.join(unknown)} for data set {name!r}; accepted: {accepted}")
    for key, value in options.items():
        if value not in allowed[key]:
            raise DataError(
                f"{key}={value!r} is not valid for data set {name!r}; choose one of {', '.join(allowed[key])}"
            )
    path = dataset_path(name, data_dir, verify=verify)
    return _LOADERS[name](path, **options)


def load_stream(
    name: str = "omtl_synthetic",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
) -> StreamArrays:
    """Load an online (``kind == "online"``) data set as :class:`StreamArrays`.

    Parameters
    ----------
    name : str, default "omtl_synthetic"
        Key of :data:`DATASETS` whose kind is ``"online"``.
    data_dir : str or path-like, optional
        Directory holding the file.
    verify : bool, default True
        Check the file's SHA-256.

    Returns
    -------
    StreamArrays
    """
    info = _info(name)
    if info.kind != "online":
        online = ", ".join(n for n, i in DATASETS.items() if i.kind == "online")
        raise DataError(f"data set {name!r} is not an online stream; online data sets: {online}")
    out = load(name, data_dir, verify=verify)
    if not isinstance(out, StreamArrays):  # pragma: no cover - guarded by the registry kind
        raise DataError(f"data set {name!r} did not load as a stream")
    return out


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------


def _take_rows(x: Any, idx: np.ndarray) -> Any:
    return x[idx] if _is_sparse(x) else x[idx, :]


def _subset(ds: MultiTaskDataset, indices: Sequence[np.ndarray]) -> MultiTaskDataset:
    return dataclasses.replace(
        ds,
        X=[_take_rows(x, i) for x, i in zip(ds.X, indices, strict=True)],
        y=[y[i] for y, i in zip(ds.y, indices, strict=True)],
        feature_names=None if ds.feature_names is None else list(ds.feature_names),
        task_names=list(ds.task_names),
    )


def train_test_split(
    ds: MultiTaskDataset, test_fraction: float = 0.25, seed: SeedLike = 0
) -> tuple[MultiTaskDataset, MultiTaskDataset]:
    """Split every task at random into a training and a test part.

    Parameters
    ----------
    ds : MultiTaskDataset
        Data to split.
    test_fraction : float, default 0.25
        Fraction of each task's samples put in the test part, in (0, 1). The count is rounded
        and clipped to ``[1, n_t - 1]``, so both parts get at least one sample.
    seed : int or numpy.random.Generator, default 0
        Randomness; the same int gives the same split.

    Returns
    -------
    (MultiTaskDataset, MultiTaskDataset)
        Training and test data; rows keep their original order within each part.

    Raises
    ------
    DataError
        ``test_fraction`` outside (0, 1), a negative seed, or a task with fewer than two samples.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed < 0:
        # numpy's own error would be a traceback
        raise DataError(f"the split seed must be an integer >= 0, got {seed}")
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for t, n in enumerate(ds.n_samples):
        if n < 2:
            raise DataError(f"task {t} has {n} sample(s); a split needs at least 2")
        n_test = int(np.clip(round(test_fraction * n), 1, n - 1))
        perm = rng.permutation(n)
        test_idx.append(np.sort(perm[:n_test]))
        train_idx.append(np.sort(perm[n_test:]))
    return _subset(ds, train_idx), _subset(ds, test_idx)


def _dense_stats(xs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales (std; 1 and mean 0 for constant columns)."""
    stacked = np.vstack(xs)
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0)
    constant = (np.ptp(stacked, axis=0) == 0) | (std == 0)
    mean = np.where(constant, 0.0, mean)
    std = np.where(constant, 1.0, std)
    return mean, std


def _sparse_scale(xs: Sequence[Any]) -> np.ndarray:
    """Column standard deviations of sparse matrices (1 for constant columns)."""
    n = sum(x.shape[0] for x in xs)
    total = sum(np.asarray(x.sum(axis=0)).ravel() for x in xs)
    total_sq = sum(np.asarray(x.multiply(x).sum(axis=0)).ravel() for x in xs)
    mean = total / n
    var = np.maximum(total_sq / n - mean**2, 0.0)
    std = np.sqrt(var)
    # Relative threshold: E[x^2] - E[x]^2 leaves rounding noise on constant columns.
    constant = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    return np.where(constant, 1.0, std)


def _apply_dense(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x - mean) / std


def _apply_sparse(x: Any, std: np.ndarray) -> Any:
    out = sp.csr_array(x, dtype=np.float64, copy=True)
    out.data /= std[out.indices]
    return out


def standardize(
    train: MultiTaskDataset,
    test: MultiTaskDataset | None = None,
    per_task: bool = False,
) -> tuple[MultiTaskDataset, MultiTaskDataset | None]:
    """Z-score features with statistics of the training data.

    Parameters
    ----------
    train : MultiTaskDataset
        Source of the means and standard deviations (population std, ``ddof=0``).
    test : MultiTaskDataset, optional
        Transformed with the training statistics; must have the same tasks and features.
    per_task : bool, default False
        Statistics per task (task ``t`` of ``test`` uses task ``t`` of ``train``) instead of
        pooled over all training tasks.

    Returns
    -------
    (MultiTaskDataset, MultiTaskDataset or None)
        New standardised training and test data (None when ``test`` is None).

    Notes
    -----
    Constant columns (zero spread in the training statistics, such as the bias column of
    ``school``) are left untouched: neither centred nor scaled. Sparse data are only scaled by the
    column standard deviation, never centred, so they stay sparse.
    """
    if test is not None:
        if test.n_features != train.n_features:
            raise DataError(f"test data have {test.n_features} features, training data {train.n_features}")
        if per_task and test.n_tasks != train.n_tasks:
            raise DataError(
                f"per-task standardisation needs the same tasks: train has {train.n_tasks}, "
                f"test {test.n_tasks}"
            )
        if test.is_sparse != train.is_sparse:
            raise DataError("train and test must both be sparse or both dense")

    groups = [[t] for t in range(train.n_tasks)] if per_task else [list(range(train.n_tasks))]
    new_train: list[Any] = list(train.X)
    new_test: list[Any] | None = None if test is None else list(test.X)
    for group in groups:
        xs = [train.X[t] for t in group]
        targets = group if per_task or test is None else list(range(test.n_tasks))
        if train.is_sparse:
            std = _sparse_scale(xs)
            for t in group:
                new_train[t] = _apply_sparse(train.X[t], std)
            if test is not None and new_test is not None:
                for t in targets:
                    new_test[t] = _apply_sparse(test.X[t], std)
        else:
            mean, std = _dense_stats(xs)
            for t in group:
                new_train[t] = _apply_dense(train.X[t], mean, std)
            if test is not None and new_test is not None:
                for t in targets:
                    new_test[t] = _apply_dense(test.X[t], mean, std)
    out_train = dataclasses.replace(train, X=new_train, y=list(train.y))
    out_test = None
    if test is not None and new_test is not None:
        out_test = dataclasses.replace(test, X=new_test, y=list(test.y))
    return out_train, out_test


def _as_xy(X: Any, y: Any) -> tuple[Any, np.ndarray]:
    if _is_sparse(X):
        X = sp.csr_array(X, dtype=np.float64)
    else:
        X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2:
        raise DataError(f"X must be 2-D, got shape {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise DataError(f"y must be 1-D of length {X.shape[0]}, got shape {y.shape}")
    return X, y


def _infer_kind(y: np.ndarray) -> Literal["regression", "binary"]:
    values = np.unique(y)
    return "binary" if values.size <= 2 and np.isin(values, (-1.0, 1.0)).all() else "regression"


def _from_groups(
    X: Any,
    y: np.ndarray,
    groups: Sequence[np.ndarray],
    name: str,
    kind: Literal["regression", "binary"] | None,
    task_names: list[str] | None = None,
) -> MultiTaskDataset:
    y = np.asarray(y, dtype=np.float64)
    return MultiTaskDataset(
        name=name,
        X=[_take_rows(X, g) for g in groups],
        y=[y[g] for g in groups],
        kind=kind if kind is not None else _infer_kind(y),
        task_names=task_names or [],
    )


def partition_by_id(
    X: Any,
    y: Any,
    ids: Any,
    *,
    name: str = "partitioned",
    kind: Literal["regression", "binary"] | None = None,
) -> MultiTaskDataset:
    """One task per distinct id.

    Parameters
    ----------
    X : (n, d) array_like or scipy sparse matrix
        Features (sparse input stays sparse).
    y : (n,) array_like
        Targets.
    ids : (n,) array_like
        Group id of each row; tasks are ordered by sorted id and named ``str(id)``.
    name : str, default "partitioned"
        Name of the result.
    kind : {"regression", "binary"}, optional
        Inferred when omitted: ``"binary"`` if all targets are in ``{-1, +1}``.

    Returns
    -------
    MultiTaskDataset
        Rows keep their original order within each task.
    """
    X, y = _as_xy(X, y)
    ids = np.asarray(ids)
    if ids.shape != y.shape:
        raise DataError(f"ids must have shape {y.shape}, got {ids.shape}")
    uniq, inverse = np.unique(ids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=uniq.size))[:-1]
    groups = np.split(order, bounds)
    return _from_groups(X, y, groups, name, kind, [str(u) for u in uniq.tolist()])


def partition_dirichlet(
    X: Any,
    y: Any,
    n_clients: int,
    alpha: float,
    seed: SeedLike,
    min_size: int = 1,
    *,
    max_tries: int = 1000,
    name: str = "dirichlet",
    kind: Literal["regression", "binary"] | None = None,
) -> MultiTaskDataset:
    """Label-skewed split of single-task data into clients.

    For every class (distinct value of ``y``) its shuffled indices are cut among the clients in
    proportions drawn from ``Dirichlet(alpha, ..., alpha)``. Draws are repeated until every client
    has at least ``min_size`` samples.

    Parameters
    ----------
    X : (n, d) array_like or scipy sparse matrix
        Features.
    y : (n,) array_like
        Class labels (each distinct value is a class).
    n_clients : int
        Number of clients (tasks) of the result.
    alpha : float
        Dirichlet concentration; small values give strong label skew.
    seed : int or numpy.random.Generator
        Randomness.
    min_size : int, default 1
        Minimum samples per client.
    max_tries : int, default 1000
        Redraws before giving up.
    name : str, default "dirichlet"
        Name of the result.
    kind : {"regression", "binary"}, optional
        Inferred when omitted.

    Returns
    -------
    MultiTaskDataset
        ``n_clients`` tasks that together hold every sample exactly once (in original order).

    Raises
    ------
    DataError
        Invalid parameters, or no draw met ``min_size`` within ``max_tries``.
    """
    X, y = _as_xy(X, y)
    n = y.shape[0]
    if n_clients < 1 or alpha <= 0 or min_size < 0:
        raise DataError(
            f"need n_clients >= 1, alpha > 0, min_size >= 0; got {n_clients}, {alpha}, {min_size}"
        )
    if n_clients * min_size > n:
        raise DataError(f"{n} samples cannot give {n_clients} clients {min_size} samples each")
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    for _ in range(max_tries):
        owner = np.empty(n, dtype=np.int64)
        for idx in classes:
            p = rng.dirichlet(np.full(n_clients, float(alpha)))
            cuts = (np.cumsum(p)[:-1] * idx.size).astype(np.int64)
            counts = np.diff(np.concatenate(([0], cuts, [idx.size])))
            owner[rng.permutation(idx)] = np.repeat(np.arange(n_clients), counts)
        sizes = np.bincount(owner, minlength=n_clients)
        if sizes.min() >= max(min_size, 1):
            order = np.argsort(owner, kind="stable")
            groups = np.split(order, np.cumsum(sizes)[:-1])
            names = [f"client_{k}" for k in range(n_clients)]
            return _from_groups(X, y, groups, name, kind, names)
    raise DataError(
        f"no Dirichlet(alpha={alpha}) draw gave all {n_clients} clients >= {max(min_size, 1)} "
        f"samples in {max_tries} tries; increase alpha or lower n_clients"
    )


def partition_size_skew(
    X: Any,
    y: Any,
    n_clients: int,
    sigma: float,
    seed: SeedLike,
    *,
    name: str = "size_skew",
    kind: Literal["regression", "binary"] | None = None,
) -> MultiTaskDataset:
    """Random split of single-task data into clients of log-normally distributed sizes.

    Client weights ``w_k ~ LogNormal(0, sigma)`` are normalised to proportions; each client gets
    one sample plus its share of the remaining ``n - n_clients`` samples (largest-remainder
    rounding), then the shuffled samples are dealt out accordingly.

    Parameters
    ----------
    X : (n, d) array_like or scipy sparse matrix
        Features.
    y : (n,) array_like
        Targets.
    n_clients : int
        Number of clients, at most ``n``.
    sigma : float
        Log-normal shape, ``>= 0``; 0 gives (nearly) equal sizes.
    seed : int or numpy.random.Generator
        Randomness.
    name : str, default "size_skew"
        Name of the result.
    kind : {"regression", "binary"}, optional
        Inferred when omitted.

    Returns
    -------
    MultiTaskDataset
        ``n_clients`` tasks, each non-empty, holding every sample exactly once.
    """
    X, y = _as_xy(X, y)
    n = y.shape[0]
    if not 1 <= n_clients <= n or sigma < 0:
        raise DataError(f"need 1 <= n_clients <= {n} and sigma >= 0; got {n_clients}, {sigma}")
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0.0, sigma, size=n_clients)
    share = w / w.sum() * (n - n_clients)
    sizes = np.floor(share).astype(np.int64)
    leftover = (n - n_clients) - int(sizes.sum())
    sizes[np.argsort(share - sizes)[::-1][:leftover]] += 1
    sizes += 1
    perm = rng.permutation(n)
    groups = [np.sort(g) for g in np.split(perm, np.cumsum(sizes)[:-1])]
    names = [f"client_{k}" for k in range(n_clients)]
    return _from_groups(X, y, groups, name, kind, names)
