"""Smoke test of the benchmark suite (``benchmarks/``) in quick mode: it runs and reports sane numbers.

Timings are reported, never asserted: the machine is shared.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dmtl.algorithms.altgdmin import _fit
from dmtl.data.synthetic import lowrank_regression
from dmtl.linalg import batched_lstsq
from dmtl.problem import TaskBlock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.__main__ import main, render, run_suite  # noqa: E402
from benchmarks.common import numeric_leaves  # noqa: E402


@pytest.fixture(scope="module")
def suite() -> dict:
    return run_suite(["mixing", "altgdmin", "memory"], quick=True, log=lambda msg: None)


def test_quick_suite_has_expected_keys(suite: dict) -> None:
    res = suite["results"]
    assert set(res) == {"mixing", "altgdmin", "memory"}
    assert not suite["skipped"]
    mixing = res["mixing"]
    assert set(mixing) == {"bandwidth", "cases", "naive", "headline"}
    assert len(mixing["cases"]) == 8  # 2 sizes x 2 graphs x 2 widths
    for case in mixing["cases"]:
        assert {"seconds", "rounds_per_s", "messages_per_s", "floor_fraction", "compulsory_fraction"} <= set(
            case
        )
        assert "speedup_vs_previous" not in case and "threads" not in case
        # the multi-round figures at the middle width of the larger sizes only
        assert ("multi_round" in case) == (case["d"] == 100 and case["n_nodes"] == 2000)
        # a ring round sends two messages per node
        if case["topology"] == "ring":
            assert case["messages_per_round"] == 2 * case["n_nodes"]
    assert {r["topology"] for r in mixing["naive"]} == {"ring", "erdos_renyi"}
    assert set(mixing["headline"]["floor_fraction"]) == {"ring", "erdos_renyi"}
    alt = res["altgdmin"]
    assert set(alt["variants"]) == {"altgdmin", "dec-altgdmin", "dif-altgdmin"}
    assert {"floor_seconds", "naive", "met", "target"} <= set(alt)
    assert alt["naive"]["max_abs_difference"] < 1e-8
    assert alt["fit"]["max_rel_difference"] <= 1e-12 and "threads" not in alt["fit"]
    mem = res["memory"]
    assert set(mem["runs"]) == {"gossip", "diffusion", "diffusion-inplace"}
    assert mem["state_bytes"] == mem["n_nodes"] * mem["d"] * 8


def test_quick_suite_numbers_are_positive_and_finite(suite: dict) -> None:
    for name, res in suite["results"].items():
        leaves = numeric_leaves(res)
        assert len(leaves) > 5, name
        bad = [(path, v) for path, v in leaves if not (math.isfinite(v) and v > 0)]
        assert not bad, (name, bad)


def test_report_renders_every_section(suite: dict) -> None:
    text = render(suite, "python -m benchmarks --quick")
    for title in ("## Mixing throughput", "## One AltGDmin iteration", "## Peak memory", "## Machine"):
        assert title in text
    assert "python -m benchmarks --quick" in text
    assert "nan" not in text.lower().replace("nanosecond", "")


def test_mpi_benchmark_is_skipped_with_a_note_without_mpi4py(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else real(name, *a)
    )
    out = run_suite(["mpi"], quick=True, log=lambda msg: None)
    assert out["results"] == {}
    assert "mpi4py" in out["skipped"]["mpi"]
    assert "## `mpi`: skipped" in render(out, "python -m benchmarks mpi --quick")


def test_a_failed_correctness_check_fails_the_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong result is never reported as "skipped", in an optional benchmark either; an optional
    benchmark that cannot run for another reason is skipped with a note."""
    import benchmarks.bench_fedem as bench_fedem
    import benchmarks.bench_mpi as bench_mpi

    def wrong(quick: bool) -> dict:
        raise AssertionError("naive FedEM round differs from step by 0.3")

    monkeypatch.setattr(bench_fedem, "run", wrong)
    with pytest.raises(AssertionError, match="differs from step"):
        run_suite(["fedem"], quick=True, log=lambda msg: None)
    monkeypatch.setattr(bench_mpi, "run", wrong)
    with pytest.raises(AssertionError, match="differs from step"):
        run_suite(["mpi"], quick=True, log=lambda msg: None)

    def cannot(quick: bool) -> dict:
        raise RuntimeError("no mpiexec here")

    monkeypatch.setattr(bench_mpi, "run", cannot)
    out = run_suite(["mpi"], quick=True, log=lambda msg: None)
    assert "no mpiexec here" in out["skipped"]["mpi"]


def test_unknown_benchmark_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nosuch", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown benchmark(s) nosuch" in err and "mixing" in err and len(err.splitlines()) == 1


def test_dmtl_bench_finds_the_suite_from_another_directory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dmtl", "bench", "nosuch"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown benchmark(s) nosuch" in proc.stderr  # reached the suite, not an ImportError


def _unblocked_fit_reference(data: TaskBlock, U: np.ndarray, shared: bool) -> tuple[np.ndarray, np.ndarray]:
    """The AltGDmin local step written plainly over all tasks at once (no blocks, dense node sums)."""

    Ut = np.broadcast_to(U[0], (len(data.tasks),) + U.shape[1:]) if shared else U[data.node]
    A = np.matmul(data.X, Ut)  # A_t = X_t U, (k, n, r)
    B = batched_lstsq(A, data.y)  # b_t, (k, r)
    resid = np.einsum("knr,kr->kn", A, B) - data.y  # r_t = A_t b_t - y_t
    g = np.einsum("knd,kn->kd", data.X, resid)  # X_t^T r_t
    G = np.zeros((data.n_local,) + U.shape[1:])
    np.add.at(G, data.node, g[:, :, None] * B[:, None, :])  # G_i = sum over node i's tasks of g_t b_t^T
    return B, G


@pytest.mark.parametrize(
    ("d", "tasks", "samples", "rank", "nodes", "several_blocks", "sparse_sums"),
    [
        (20, 30, 15, 2, 4, False, False),  # one block, dense node sums
        (100, 300, 50, 2, 7, True, False),  # 3 blocks of <= 104 tasks, dense node sums
        (100, 300, 50, 5, 7, True, True),  # 3 blocks, k d r = 150000 >= 2**17: sparse node sums
    ],
)
@pytest.mark.parametrize("shared", [True, False])
def test_blocked_altgdmin_fit_equals_unblocked_reference(
    d: int,
    tasks: int,
    samples: int,
    rank: int,
    nodes: int,
    several_blocks: bool,
    sparse_sums: bool,
    shared: bool,
) -> None:
    """The cache-blocked ``_fit`` (timed in ``bench_altgdmin``) computes the plain iteration's numbers."""
    problem = lowrank_regression(
        d, tasks, rank, samples, noise=0.1, nodes=nodes, rng=np.random.default_rng(0)
    )
    data = problem.block(0, nodes)
    # the branches this case is meant to reach (block of ~4 MB of X; sparse sums from k d r >= 2**17)
    block = max(1, (4 << 20) // (samples * d * 8))
    assert (tasks > 2 * block) == several_blocks
    assert (tasks * d * rank >= 1 << 17) == sparse_sums
    U = np.linalg.qr(np.random.default_rng(1).standard_normal((nodes, d, rank)))[0]  # a basis per node
    B, G, flops = _fit(data, U, shared)
    B_ref, G_ref = _unblocked_fit_reference(data, U, shared)
    assert B.shape == (tasks, rank) and G.shape == (nodes, d, rank) and flops.shape == (nodes,)
    for got, ref in ((B, B_ref), (G, G_ref)):
        assert np.max(np.abs(got - ref)) <= 1e-13 * np.max(np.abs(ref))
    assert np.max(np.abs(G_ref)) > 1.0  # noisy tasks and a random basis: a gradient far from zero
    n_t = data.n_samples
    per_task = n_t * (4.0 * d * rank + 2.0 * d + 4.0 * rank * rank)
    assert np.allclose(flops, data.sum_to_nodes(per_task) + 2.0 * d * rank * rank, rtol=1e-15)
