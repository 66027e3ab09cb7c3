"""MPI backend benchmarks: per-round overhead against the local backend, and the speed-up of 2 ranks.

(a) Dif-AltGDmin on a ring of N in {10, 100, 1000} nodes (d = 100, r = 2, one task per node, 20 samples
    per task): wall time per iteration of the local backend and of the MPI backend on 1 and 2 ranks, the
    time per iteration spent in the halo exchange (the slowest rank, waiting included), and, measured in
    the same MPI job, the machine's point-to-point latency for the message the exchange sends (two
    boundary rows of d r floats): ping-pong one-way time and a simultaneous two-way exchange
    (Isend + Irecv + Waitall, the exchange's floor).
(b) AltGDmin with d = K = 600, n = 200, r = 4 on 10 nodes: wall time per iteration with 1 and 2 ranks.

Every figure runs under one BLAS thread per process (the local baseline too: it runs inside the 1-rank
job) so that the comparison is between processes, not thread pools. The machine may be shared, so
iteration times are those of the fastest of four blocks of iterations, micro-benchmarks the best of three
blocks.
``run(quick)`` returns the figures; ``markdown(results)`` renders a RESULTS.md section. Run alone:
``python benchmarks/bench_mpi.py [--quick]``.
"""

from __future__ import annotations

import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NAME = "mpi"
BLOCKS = 4  # iterations are timed in this many blocks (between evaluations); the fastest block counts
HEAVY_REPEATS = 3  # launches of each process count for the speed-up (alternating 1 and 2 ranks)


def _ring_cfg(n: int, rounds: int, backend: str, procs: int = 1) -> dict[str, Any]:
    from dmtl.config import load_config

    return load_config(
        None,
        [
            "problem.kind=lowrank",
            "problem.d=100",
            f"problem.tasks={n}",
            "problem.rank=2",
            "problem.samples=20",
            f"topology.nodes={n}",
            "topology.kind=ring",
            "algorithm.name=dif-altgdmin",
            "algorithm.init_method=centralized",
            f"rounds={rounds}",
            f"eval_every={max(rounds // BLOCKS, 1)}",
            f"backend.name={backend}",
            f"backend.procs={procs}",
            "output.plots=false",
        ],
    )


def _heavy_cfg(rounds: int, backend: str, procs: int = 1) -> dict[str, Any]:
    from dmtl.config import load_config

    return load_config(
        None,
        [
            "problem.kind=lowrank",
            "problem.d=600",
            "problem.tasks=600",
            "problem.rank=4",
            "problem.samples=200",
            "topology.nodes=10",
            "algorithm.name=altgdmin",
            f"rounds={rounds}",
            f"eval_every={max(rounds // BLOCKS, 1)}",
            f"backend.name={backend}",
            f"backend.procs={procs}",
            "output.plots=false",
        ],
    )


# -- inside the MPI job ---------------------------------------------------------------------------
def _pingpong(comm: Any, floats: int, reps: int) -> dict[str, float]:
    """Ranks 0 and 1 of a 2-rank job: one-way time of a ping-pong and time of a simultaneous two-way
    exchange (Isend + Irecv + Waitall) of ``floats`` float64 values, best of three blocks (seconds)."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    other = 1 - rank
    a, b = np.ones(floats), np.empty(floats)
    res = {}
    for phase in ("pingpong", "exchange"):
        best = np.inf
        for _ in range(3):
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(reps):
                if phase == "exchange":
                    MPI.Request.Waitall(
                        [comm.Irecv([b, MPI.DOUBLE], other, 8), comm.Isend([a, MPI.DOUBLE], other, 8)]
                    )
                elif rank == 0:
                    comm.Send([a, MPI.DOUBLE], other, 7)
                    comm.Recv([b, MPI.DOUBLE], other, 7)
                else:
                    comm.Recv([b, MPI.DOUBLE], other, 7)
                    comm.Send([a, MPI.DOUBLE], other, 7)
            dt = (time.perf_counter() - t0) / reps
            best = min(best, dt / 2 if phase == "pingpong" else dt)
        res[phase] = best
    return res


def _time_mix(comm: Any, n: int, reps: int, d: int = 100, r: int = 2) -> dict[str, float]:
    """Seconds per ``comm.mix`` call (one gossip round of d r floats per node on a ring of n nodes) with
    no computation in between: the backend's own cost of a round. Local backend on 1-rank jobs only."""
    from mpi4py import MPI

    from dmtl.backends.local import LocalCommunicator
    from dmtl.backends.mpi import MPICommunicator
    from dmtl.network.topology import mixing_matrix, ring

    top = ring(n)
    W = mixing_matrix(top, "metropolis")
    comms = {"mpi": MPICommunicator(n, None, top, W)}
    if comm.Get_size() == 1:
        comms["local"] = LocalCommunicator(n, None, top, W)
    res = {}
    reps = max(reps * 10 // n, 50) if n > 10 else reps
    for name, c in comms.items():
        X = np.ones((c.n_local, d, r))
        for _ in range(20):
            c.mix(X, W)
        best = np.inf
        for _ in range(3):  # best of three blocks: the machine is shared
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(reps):
                X = c.mix(X, W)
            best = min(best, (time.perf_counter() - t0) / reps)
        dt = np.array([best])
        worst = np.empty(1)
        comm.Allreduce([dt, MPI.DOUBLE], [worst, MPI.DOUBLE], MPI.MAX)
        res[name] = float(worst[0])
    comms["mpi"].close()
    return res


def _worker(job_path: str) -> int:
    from mpi4py import MPI

    from dmtl.runner import execute

    job = pickle.loads(Path(job_path).read_bytes())
    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    out: dict[str, Any] = {"runs": {}, "latency": {}, "mix": {}}
    for key, cfg in job["runs"]:
        if cfg["backend"]["name"] == "local" and size > 1:
            continue
        res = execute(cfg, None, progress=False)
        wall = res.timing["wall_time"].to_numpy()
        rounds = int(res.timing["round"].iloc[-1])
        # per-iteration time of the fastest block of iterations (evaluation excluded): the machine is shared
        its = np.diff(res.timing["round"].to_numpy())
        per_round = float(np.min(np.diff(wall) / its)) if len(wall) > 1 else float("nan")
        transport = res.summary.get("transport", {}).get("by_op", {})
        mix = transport.get("mix", {})
        out["runs"][key] = {
            "per_round": per_round,
            "mix_seconds_per_round": mix.get("seconds_max", 0.0) / max(rounds, 1),
            "mix_bytes_per_round": mix.get("bytes", 0.0) / max(rounds, 1),
            "init": float(wall[0]),
        }
    for n in job["mix_sizes"]:
        out["mix"][n] = _time_mix(comm, n, job["reps"])
    if size == 2:
        for floats in job["latency_floats"]:
            lat = _pingpong(comm, floats, job["reps"])
            out["latency"][floats] = lat
    if rank == 0:
        Path(job["result"]).write_bytes(pickle.dumps(out))
    return 0


def _launch(
    procs: int, runs: list[tuple[str, dict]], latency_floats: list[int], mix_sizes: list[int], reps: int
) -> dict:
    from dmtl.backends import mpi as mpi_backend

    tmp = Path(tempfile.mkdtemp(prefix="dmtl-bench-mpi-"))
    job = tmp / "job.pkl"
    result = tmp / "result.pkl"
    job.write_bytes(
        pickle.dumps(
            {
                "runs": runs,
                "latency_floats": latency_floats,
                "mix_sizes": mix_sizes,
                "reps": reps,
                "result": str(result),
            }
        )
    )
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    cmd = [
        mpi_backend.find_mpiexec(),
        "-n",
        str(procs),
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        str(job),
    ]
    heartbeat = tmp / "heartbeat"
    heartbeat.touch()
    rc, errors, tail = mpi_backend._supervise(cmd, env, heartbeat, None, 0.0, wall_limit=1800.0)
    if rc != 0 or not result.exists():
        raise RuntimeError(
            f"benchmark MPI job ({procs} ranks) failed with status {rc}: {errors or tail[-400:]}"
        )
    data = pickle.loads(result.read_bytes())
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return data


# -- public -------------------------------------------------------------------------------------
def run(quick: bool = False) -> dict[str, Any]:
    """Measure (a) per-round overhead vs local with the p2p latency floor and (b) the 2-rank speed-up."""
    load_before = os.getloadavg()[0]
    sizes = [10, 100, 1000]
    ring_rounds = 20 if quick else 200
    heavy_rounds = 4 if quick else 16
    reps = 200 if quick else 2000
    d, r = 100, 2
    runs_local = [(f"ring{n}-local", _ring_cfg(n, ring_rounds, "local")) for n in sizes]
    runs: dict[str, Any] = {}
    latency: dict[int, Any] = {}
    mix: dict[tuple[int, int], dict[str, float]] = {}
    for procs in (1, 2):
        job_runs = [(f"ring{n}-mpi{procs}", _ring_cfg(n, ring_rounds, "mpi", procs)) for n in sizes]
        if procs == 1:
            job_runs = runs_local + job_runs
        # the exchange on a ring split in two: each rank sends its two boundary rows in one message
        data = _launch(procs, job_runs, [2 * d * r] if procs == 2 else [], sizes, reps)
        mix.update({(n, procs): v for n, v in data["mix"].items()})
        runs.update(data["runs"])
        latency.update(data["latency"])
    # (b) 1 and 2 ranks in alternating launches, so that both see the same load; best per-round time kept
    for _ in range(1 if quick else HEAVY_REPEATS):
        for procs in (2,) if quick else (1, 2):
            job_runs = [(f"heavy-mpi{procs}", _heavy_cfg(heavy_rounds, "mpi", procs))]
            if procs == 1:
                job_runs.append(("heavy-local", _heavy_cfg(heavy_rounds, "local")))
            for key, val in _launch(procs, job_runs, [], [], reps)["runs"].items():
                if key not in runs or val["per_round"] < runs[key]["per_round"]:
                    runs[key] = val
    overhead = []
    lat = latency.get(2 * d * r, {})
    for n in sizes:
        loc = runs[f"ring{n}-local"]["per_round"]
        row = {
            "nodes": n,
            "local": loc,
            "mix_local": mix[(n, 1)]["local"],
            "mix_mpi1": mix[(n, 1)]["mpi"],
            "mix_mpi2": mix[(n, 2)]["mpi"],
        }
        for procs in (1, 2):
            m = runs[f"ring{n}-mpi{procs}"]
            row[f"mpi{procs}"] = m["per_round"]
            row[f"overhead{procs}"] = m["per_round"] - loc
            row[f"halo{procs}"] = m["mix_seconds_per_round"]
            row[f"halo_bytes{procs}"] = m["mix_bytes_per_round"]
        overhead.append(row)
    speedup: dict[str, Any] = {"rounds": heavy_rounds}
    if "heavy-mpi1" in runs:
        t1, t2 = runs["heavy-mpi1"]["per_round"], runs["heavy-mpi2"]["per_round"]
        speedup.update(
            local=runs["heavy-local"]["per_round"],
            mpi1=t1,
            mpi2=t2,
            speedup=t1 / t2,
            init1=runs["heavy-mpi1"]["init"],
            init2=runs["heavy-mpi2"]["init"],
        )
    else:
        speedup.update(mpi2=runs["heavy-mpi2"]["per_round"])
    return {
        "quick": quick,
        "message_floats": 2 * d * r,
        "pingpong_oneway": lat.get("pingpong"),
        "exchange": lat.get("exchange"),
        "ring_rounds": ring_rounds,
        "overhead": overhead,
        "speedup": speedup,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        },
    }


def markdown(results: dict[str, Any]) -> str:
    """A RESULTS.md section for :func:`run`'s figures."""
    us = 1e6
    f = results["message_floats"]
    floor = results["exchange"]
    mach = results["machine"]
    lines = [
        "## MPI backend (`benchmarks/bench_mpi.py`)",
        "",
        f"Loopback, {mach['cpus']} cores (1-min load average {mach['load_before']:.1f} before, "
        f"{mach['load_after']:.1f} after: other work shares the machine), one BLAS "
        "thread per process, MPICH via mpi4py. "
        "Dif-AltGDmin on a ring (d = 100, r = 2, one task of 20 samples per node). Point-to-point floor for "
        f"the message a 2-rank ring exchanges per round ({f} floats = {8 * f} bytes: two boundary rows), "
        f"measured in the same job: ping-pong one-way **{_fmt(results['pingpong_oneway'], us)} us**, "
        f"simultaneous two-way exchange (Isend + Irecv + Waitall) **{_fmt(floor, us)} us**.",
        "",
        "Cost of one gossip round, `comm.mix(X, W)` called back to back (no computation in between; "
        "slowest rank):",
        "",
        "| nodes | local [us] | MPI 1 rank [us] | MPI 2 ranks [us] | 2 ranks minus local [us] | "
        "2 ranks minus (local / 2 + floor) [us] |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["overhead"]:
        # the ideal 2-rank round: each rank mixes half the nodes, plus one exchange at the floor
        excess = None if floor is None else row["mix_mpi2"] - (row["mix_local"] / 2 + floor)
        lines.append(
            f"| {row['nodes']} | {_fmt(row['mix_local'], us)} | {_fmt(row['mix_mpi1'], us)} | "
            f"{_fmt(row['mix_mpi2'], us)} | {_fmt(row['mix_mpi2'] - row['mix_local'], us)} | "
            f"{_fmt(excess, us)} |"
        )
    lines += [
        "",
        f"Whole Dif-AltGDmin iteration ({results['ring_rounds']} iterations timed in {BLOCKS} blocks, the "
        "fastest block's mean; evaluation excluded), and the mean time per iteration the slowest rank spent "
        "in the halo exchange (waiting for the other rank included):",
        "",
        "| nodes | local [us] | MPI 1 rank [us] | MPI 2 ranks [us] | 1 rank minus local [us] | "
        "2 ranks minus local [us] | halo exchange, 2 ranks [us] | halo bytes per round, 2 ranks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["overhead"]:
        lines.append(
            f"| {row['nodes']} | {_fmt(row['local'], us)} | {_fmt(row['mpi1'], us)} | "
            f"{_fmt(row['mpi2'], us)} | {_fmt(row['overhead1'], us)} | {_fmt(row['overhead2'], us)} | "
            f"{_fmt(row['halo2'], us)} | {row['halo_bytes2']:,.0f} |"
        )
    s = results["speedup"]
    lines += [""]
    if "mpi1" in s:
        lines += [
            f"AltGDmin, d = K = 600, n = 200, r = 4, 10 nodes, {s['rounds']} iterations in {BLOCKS} blocks "
            f"(fastest block's mean, best of {HEAVY_REPEATS} launches alternating 1 and 2 ranks): "
            f"local {s['local'] * 1e3:.1f} ms, 1 rank {s['mpi1'] * 1e3:.1f} ms, 2 ranks "
            f"{s['mpi2'] * 1e3:.1f} ms per iteration: **speed-up {s['speedup']:.2f}x** of 2 ranks over 1 "
            "(every process, the local run included, with one BLAS thread; the local backend's default "
            "uses all cores' BLAS threads instead).",
        ]
    else:
        lines += [f"AltGDmin (quick: 2 ranks only): {s['mpi2'] * 1e3:.1f} ms per iteration."]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, scale: float) -> str:
    return (
        "n/a"
        if value is None
        else f"{value * scale:.0f}"
        if abs(value * scale) >= 100
        else f"{value * scale:.1f}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2]))
    figures = run(quick="--quick" in sys.argv)
    print(markdown(figures))
