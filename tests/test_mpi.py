"""The MPI backend: equal to the local backend on 1, 2 and 3 processes, and failures that never hang.

Each MPI launch costs about a second of interpreter start-up per rank, so the equivalence cases run as
one job per process count (:func:`dmtl.backends.mpi.launch_many`); every launch is under a time limit.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmtl.algorithms import ALGORITHMS
from dmtl.backends import mpi as mpi_backend
from dmtl.config import load_config
from dmtl.errors import ConfigError
from dmtl.runner import execute, run

HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
try:
    MPIEXEC = mpi_backend.find_mpiexec()
except ConfigError:
    MPIEXEC = None
needs_mpi = pytest.mark.skipif(
    not HAVE_MPI4PY or MPIEXEC is None,
    reason='MPI tests need mpi4py and mpiexec: pip install "dmtl[mpi]"',
)

LAUNCH_LIMIT = 150.0  # seconds: hard limit of every MPI launch in this file
SMALL = [
    "problem.kind=lowrank",
    "problem.d=30",
    "problem.tasks=30",
    "problem.rank=2",
    "problem.samples=20",
    "topology.nodes=6",
    "rounds=15",
    "eval_every=5",
]
PROCS = (1, 2, 3)
LEDGER = ("messages", "floats", "bytes", "comm_rounds")


def algorithm_overrides(name: str) -> list[str]:
    """An algorithm's small test settings (its ``test_overrides``, else the small low-rank problem)."""
    own = list(getattr(ALGORITHMS[name], "test_overrides", None) or [])
    base = [] if any(o.startswith("problem.kind=") for o in own) else SMALL
    return [*base, *own, f"algorithm.name={name}"]


# extra cases: uneven shards, one node per rank, and a run whose transport traffic is known exactly
EXTRA = {
    "dif-7nodes": [*SMALL, "topology.nodes=7", "algorithm.name=dif-altgdmin"],
    "altgdmin-7nodes": [*SMALL, "topology.nodes=7", "algorithm.name=altgdmin"],
    "dec-3nodes": [*SMALL, "topology.nodes=3", "algorithm.name=dec-altgdmin"],
    "dif-central-init": [*SMALL, "algorithm.name=dif-altgdmin", "algorithm.init_method=centralized"],
    # a lossy channel: the same drops and rounding draws on every shard
    "dif-faults": [
        *SMALL,
        "topology.nodes=7",
        "algorithm.name=dif-altgdmin",
        "faults.drop_prob=0.25",
        "faults.compression=quantize",
        "faults.bits=5",
    ],
    "dadmm-faults": [*algorithm_overrides("d-admm"), "faults.drop_prob=0.3", "faults.compression=topk"],
    "dem-faults": [*algorithm_overrides("d-em"), "faults.drop_prob=0.2"],
}
CASES = {**{name: algorithm_overrides(name) for name in sorted(ALGORITHMS)}, **EXTRA}


MAX_ROUNDS = 40  # an algorithm's own test settings are capped at this many rounds (launch time)


def _config(case: str, backend: list[str]) -> dict:
    cfg = load_config(None, [*CASES[case], *backend])
    if cfg["rounds"] > MAX_ROUNDS:
        cfg["rounds"], cfg["eval_every"] = MAX_ROUNDS, min(cfg["eval_every"], MAX_ROUNDS // 4)
    return cfg


@pytest.fixture(scope="module")
def local_results() -> dict[str, object]:
    return {case: execute(_config(case, []), progress=False) for case in CASES}


@pytest.fixture(scope="module")
def mpi_results() -> dict[tuple[str, int], object]:
    """All cases, one MPI job per process count; a case that fails is recorded (as its exception) and
    the job is restarted with the cases after it."""
    out: dict[tuple[str, int], object] = {}
    for procs in PROCS:
        cases = [c for c in CASES if _config(c, [])["topology"]["nodes"] >= procs]
        while cases:
            cfgs = [_config(c, ["backend.name=mpi", f"backend.procs={procs}"]) for c in cases]
            try:
                results = mpi_backend.launch_many(cfgs, procs=procs, wall_limit=LAUNCH_LIMIT)
            except Exception as exc:
                results = [*getattr(exc, "completed", []), exc]
            out.update({(c, procs): r for c, r in zip(cases, results, strict=False)})
            cases = cases[len(results) :]
    return out


def _assert_same(local, mpi) -> None:
    a, b = local.history, mpi.history
    assert list(a["round"]) == list(b["round"]) and list(a["metric"]) == list(b["metric"])
    va, vb = a["value"].to_numpy(), b["value"].to_numpy()
    np.testing.assert_allclose(vb, va, rtol=1e-9, atol=0)
    for col in LEDGER:
        np.testing.assert_array_equal(b[col].to_numpy(), a[col].to_numpy(), err_msg=col)
    np.testing.assert_allclose(b["virtual_time"], a["virtual_time"], rtol=1e-9, atol=0)
    la, lb = local.summary["ledger"], mpi.summary["ledger"]
    for key in la:
        assert lb[key] == pytest.approx(la[key], rel=1e-9, abs=0), key


@needs_mpi
@pytest.mark.parametrize("procs", PROCS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_mpi_equals_local(case: str, procs: int, local_results, mpi_results) -> None:
    if (case, procs) not in mpi_results:
        pytest.skip(f"{case} has fewer nodes than {procs} processes")
    mpi = mpi_results[(case, procs)]
    if isinstance(mpi, Exception):
        pytest.fail(f"{case} on {procs} MPI processes failed: {type(mpi).__name__}: {mpi}")
    _assert_same(local_results[case], mpi)
    assert mpi.summary["backend"] == {"name": "mpi", "procs": procs}
    assert mpi.state is None
    transport = mpi.summary["transport"]
    assert transport["ranks"] == procs
    if procs == 1:
        assert transport["messages"] == 0 and transport["bytes"] == 0
    else:
        assert transport["messages"] > 0
    assert "transport" not in local_results[case].summary


@needs_mpi
def test_transport_view_counts_what_crossed_ranks(mpi_results) -> None:
    """Ring of 6 nodes on 2 ranks: per gossip round the algorithm sends 12 node messages, but only one
    message (two boundary rows of d r floats) goes each way between the ranks."""
    res = mpi_results[("dif-central-init", 2)]
    d, r, rounds = 30, 2, 15
    mix = res.summary["transport"]["by_op"]["mix"]
    assert mix["calls"] == rounds
    assert mix["messages"] == 2 * rounds
    assert mix["bytes"] == rounds * 2 * 2 * d * r * 8
    assert res.summary["ledger"]["bytes_over_links"] == rounds * 12 * d * r * 8
    # 3 ranks: the middle shard talks to both others
    mix3 = mpi_results[("dif-central-init", 3)].summary["transport"]["by_op"]["mix"]
    assert mix3["messages"] == rounds * 6 and mix3["bytes"] == rounds * 6 * d * r * 8


def test_shard_bounds_follow_array_split() -> None:
    for n, size in [(7, 3), (3, 3), (10, 4), (1000, 2)]:
        expect = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n), size)])
        np.testing.assert_array_equal(mpi_backend.shard_bounds(n, size), expect)
    with pytest.raises(ConfigError, match="4 MPI ranks for 3 nodes"):
        mpi_backend.shard_bounds(3, 4)


def test_more_processes_than_nodes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"4 MPI ranks for 3 nodes.*backend\.procs <= 3"):
        run(None, [*SMALL, "topology.nodes=3", "backend.name=mpi", "backend.procs=4"])


def test_missing_mpi_says_how_to_install(monkeypatch) -> None:
    with pytest.raises(ConfigError, match=re.escape('pip install "dmtl[mpi]"')):
        run(None, [*SMALL, "backend.name=mpi", "backend.mpiexec=/nonexistent/mpiexec"])
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=re.escape('pip install "dmtl[mpi]"')):
        run(None, [*SMALL, "backend.name=mpi", "backend.procs=2"])


def test_inside_mpi_job_detection(monkeypatch) -> None:
    for var in (*mpi_backend._ENV_VARS, "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(var, raising=False)
    if "mpi4py.MPI" not in sys.modules:
        assert not mpi_backend.inside_mpi_job()
    monkeypatch.setenv("PMI_RANK", "0")
    assert mpi_backend.inside_mpi_job()


# -- launches under a plain mpiexec ------------------------------------------------------------------
def _run_group(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session; on timeout kill the whole group (no process left behind)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@needs_mpi
def test_plain_mpiexec_gives_the_local_result(tmp_path: Path) -> None:
    overrides = [*SMALL, "algorithm.name=dif-altgdmin"]
    out = tmp_path / "run"
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "dmtl", "run", "lowrank", *overrides]
    res = _run_group(
        [*cmd, "backend.name=mpi", "output.plots=false", "--quiet", "--out", str(out)], LAUNCH_LIMIT
    )
    assert res.returncode == 0, res.stderr
    local = run("lowrank", overrides, progress=False)
    history = pd.read_csv(out / "metrics.csv")
    np.testing.assert_allclose(history["value"], local.history["value"], rtol=1e-9, atol=0)
    for col in LEDGER:
        np.testing.assert_array_equal(history[col], local.history[col])
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == {"name": "mpi", "procs": 2}
    assert summary["transport"]["by_op"]["mix"]["messages"] > 0


# -- failures ----------------------------------------------------------------------------------------
def _leftovers(marker: str) -> list[int]:
    import psutil

    pids = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("DMTL_TEST_MARKER") == marker:
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return pids


def _assert_reaped(marker: str) -> None:
    end = time.monotonic() + 5.0
    while _leftovers(marker) and time.monotonic() < end:
        time.sleep(0.1)
    assert _leftovers(marker) == []


@needs_mpi
@pytest.mark.parametrize(
    ("fault", "procs", "timeout"),
    [("DMTL_FAULT_KILL=1:3", 2, 30.0), ("DMTL_FAULT_STALL=2:3", 3, 3.0)],
    ids=["kill", "stall"],
)
def test_dead_or_stalled_rank_stops_the_run(monkeypatch, fault: str, procs: int, timeout: float) -> None:
    """Rank R exits (or sleeps forever) at the start of round 3: the job stops with an error naming R
    and the operation the others were waiting in, within backend.timeout, and no process survives."""
    pytest.importorskip("psutil")
    var, value = fault.split("=")
    bad_rank = int(value.split(":")[0])
    marker = uuid.uuid4().hex
    monkeypatch.setenv(var, value)
    monkeypatch.setenv("DMTL_TEST_MARKER", marker)
    cfg = load_config(
        None,
        [
            *SMALL,
            "algorithm.name=dif-altgdmin",
            "backend.name=mpi",
            f"backend.procs={procs}",
            f"backend.timeout={timeout}",
        ],
    )
    t0 = time.monotonic()
    with pytest.raises(mpi_backend.MPIRunError) as info:
        mpi_backend.launch_many([cfg], wall_limit=LAUNCH_LIMIT)
    elapsed = time.monotonic() - t0
    msg = str(info.value)
    assert re.search(rf"MPI rank\(s\) {bad_rank} stopped responding", msg), msg
    assert "in mix at round 3" in msg, msg
    waited = float(re.search(r"waited ([0-9.]+) s", msg).group(1))
    assert waited <= timeout
    # start-up of the ranks (a few seconds on a busy 2-core machine) + at most the timeout
    assert elapsed < timeout + 25.0
    if var == "DMTL_FAULT_KILL":
        assert elapsed < timeout  # a dead process is reported by the launcher at once
    _assert_reaped(marker)


@needs_mpi
def test_dead_rank_is_named_even_when_its_reporters_stderr_is_lost(monkeypatch) -> None:
    """MPI_Abort makes hydra kill every process at once and the reporter's stderr line can be lost in
    the proxy's pipe (seen in CI under load); the file each aborting rank leaves still names the rank."""
    real_forward = mpi_backend._forward

    def lossy_forward(stream, errors, tail):  # drop every held-back error line
        real_forward(stream, [], tail)

    monkeypatch.setattr(mpi_backend, "_forward", lossy_forward)
    monkeypatch.setenv("DMTL_FAULT_KILL", "1:3")
    cfg = load_config(None, [*SMALL, "algorithm.name=dif-altgdmin", "backend.name=mpi", "backend.procs=2"])
    with pytest.raises(mpi_backend.MPIRunError, match=r"MPI rank\(s\) 1 stopped responding.*in mix"):
        mpi_backend.launch_many([cfg], wall_limit=LAUNCH_LIMIT)


def test_launcher_guard_kills_a_silent_job(tmp_path: Path) -> None:
    """The second guard: a job that shows no progress at all is killed with its process group."""
    pytest.importorskip("psutil")
    marker = uuid.uuid4().hex
    env = {**os.environ, "DMTL_TEST_MARKER": marker}
    beat = tmp_path / "beat"
    beat.touch()
    code = "import time; time.sleep(60)"
    cmd = [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}])"]
    t0 = time.monotonic()
    with pytest.raises(mpi_backend.MPIRunError, match="no MPI rank made progress"):
        mpi_backend._supervise(cmd, env, beat, idle_limit=1.0, timeout=0.5)
    assert time.monotonic() - t0 < 10
    _assert_reaped(marker)


def test_shutil_which_mpiexec_is_used_when_none_next_to_python(monkeypatch, tmp_path: Path) -> None:
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert mpi_backend.find_mpiexec() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="mpiexec"):
        mpi_backend.find_mpiexec()
