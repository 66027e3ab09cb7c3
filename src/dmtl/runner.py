"""Running an experiment: build the problem, network and backend from a configuration, iterate the
algorithm, record metrics, and write the run directory.

The run seed feeds :class:`dmtl.seeding.RunStreams`; the data, placement, graph, initialisation, node
sampling and channel each draw from their own stream, so a rerun with the same seed is bitwise
identical (``metrics.csv`` included) and changing one part never reshuffles another.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmtl import algorithms as _algorithms  # noqa: F401  (registers the algorithms)
from dmtl.algorithms.base import Algorithm, make_algorithm
from dmtl.config import load_config
from dmtl.data import build
from dmtl.errors import ConfigError
from dmtl.network.channel import Channel
from dmtl.network.comm import Communicator
from dmtl.network.ledger import ClockModel
from dmtl.network.topology import MixingMatrix, Topology, make_topology, mixing_matrix
from dmtl.problem import Problem
from dmtl.seeding import RunStreams

__all__ = [
    "RunResult",
    "build_problem",
    "build_network",
    "make_communicator",
    "prepare_out",
    "run",
    "execute",
]

LEDGER_COLUMNS = ("messages", "floats", "bytes", "comm_rounds", "virtual_time")


@dataclass
class RunResult:
    """What a run produced.

    Attributes
    ----------
    history : tidy DataFrame with columns round, metric, value and the cumulative ledger columns.
    summary : final metrics, ledger totals, timing, versions.
    config : the resolved configuration.
    state : the algorithm's final state (this process's block).
    timing : DataFrame of round and cumulative wall time (not reproducible, hence apart).
    """

    history: pd.DataFrame
    summary: dict[str, Any]
    config: dict[str, Any]
    state: Any = None
    timing: pd.DataFrame = field(default_factory=pd.DataFrame)
    out: Path | None = None

    def final(self, metric: str) -> float:
        rows = self.history[self.history["metric"] == metric]
        if rows.empty:
            raise KeyError(
                f"metric {metric!r} was not recorded; recorded: {sorted(set(self.history['metric']))}"
            )
        return float(rows["value"].iloc[-1])

    def curve(self, metric: str) -> pd.DataFrame:
        return self.history[self.history["metric"] == metric].reset_index(drop=True)


def build_problem(config: dict[str, Any], streams: RunStreams) -> Problem:
    """The problem of ``config['problem']`` placed on ``config['topology']['nodes']`` nodes."""
    nodes = config["topology"]["nodes"]
    problem = build(config["problem"], nodes, streams)
    if problem.n_nodes != nodes:
        # the communicator has topology.nodes nodes: blocks would leave out tasks or hold none
        raise ConfigError(
            f"problem.kind={config['problem']['kind']} placed its tasks on {problem.n_nodes} nodes but "
            f"topology.nodes={nodes}; set topology.nodes={problem.n_nodes} or change the problem's placement"
        )
    return problem


def build_network(config: dict[str, Any], streams: RunStreams) -> tuple[Topology, MixingMatrix]:
    """Topology and mixing weights of ``config['topology']``."""
    t = config["topology"]
    params = {k: t[k] for k in ("p", "radius", "rows", "cols", "periodic", "dim") if t.get(k) is not None}
    if t["kind"] in ("erdos_renyi", "random_geometric"):
        params["connected"] = t["connected"]
        params["seed"] = streams.generator("topology")
    top = make_topology(t["kind"], t["nodes"], **params)
    return top, mixing_matrix(top, t["weights"])


def make_communicator(
    config: dict[str, Any], topology: Topology | None, mixing: MixingMatrix | None
) -> Communicator:
    """The backend's communicator for this process."""
    clock = ClockModel(**config["clock"])
    n = config["topology"]["nodes"]
    name = config["backend"]["name"]
    seed = int(RunStreams(config["seed"]).seed_sequence("channel").generate_state(1, np.uint64)[0] >> 1)
    channel = Channel.from_config(config["faults"], seed)
    if name == "local":
        from dmtl.backends.local import LocalCommunicator

        return LocalCommunicator(n, clock, topology, mixing, channel=channel)
    if name == "mpi":
        from dmtl.backends.mpi import MPICommunicator

        return MPICommunicator(
            n, clock, topology, mixing, timeout=config["backend"]["timeout"], channel=channel
        )
    raise ConfigError(f"backend.name must be 'local' or 'mpi', got {name!r}")


def run(
    config: dict[str, Any] | str | Path | None = None,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    progress: bool | None = None,
) -> RunResult:
    """Run an experiment.

    Parameters
    ----------
    config : dict, path or built-in experiment name, optional
        The configuration (defaults when None).
    overrides : list of "section.key=value", optional
        Applied over ``config``.
    out : path, optional
        Run directory to write (config.yaml, metrics.csv, timing.csv, summary.json, plots).
    progress : bool, optional
        Show a progress line on stderr (default: ``output.progress``; ``auto`` = when stderr is a tty).

    Returns
    -------
    RunResult

    Notes
    -----
    With ``backend.name=mpi`` and ``backend.procs > 1`` outside an MPI job, this launches
    ``mpiexec`` and reads the results back (see :mod:`dmtl.backends.mpi`).
    """
    cfg = load_config(config, overrides)
    if cfg["backend"]["name"] == "mpi":
        from dmtl.backends import mpi as mpi_backend

        if not mpi_backend.inside_mpi_job():
            if out is not None:
                prepare_out(out)  # before starting any process
            return mpi_backend.launch(cfg, out, progress=_want_progress(cfg, progress))
        # in a user's MPI job every rank gets here but only rank 0 writes: execute() checks there
        return execute(cfg, out, progress)
    if out is not None:
        prepare_out(out)  # before the run, not after it
    return execute(cfg, out, progress)


def prepare_out(out: str | Path) -> Path:
    """Check that the run directory ``out`` can be written, before a run rather than after it.

    Creates nothing (``write_run`` does, at the end), so a run that then fails leaves no empty folder.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"the run directory {out} is an existing file, not a directory; choose another --out"
        )
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the folder write_run's mkdir would create ``out`` in
    if not existing.is_dir():
        raise ConfigError(
            f"cannot create the run directory {out}: {existing} is a file; choose another --out"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"the run directory {out} cannot be written ({existing}); choose another --out")
    return path


def execute(cfg: dict[str, Any], out: str | Path | None = None, progress: bool | None = None) -> RunResult:
    """Run a resolved configuration in this process (on every rank of an MPI job)."""
    streams = RunStreams(cfg["seed"])
    algorithm = make_algorithm(
        cfg["algorithm"]["name"], **{k: v for k, v in cfg["algorithm"].items() if k != "name"}
    )
    problem = build_problem(cfg, streams)
    topology, mixing = build_network(cfg, streams)
    comm = make_communicator(cfg, topology, mixing)
    if comm.channel is not None and algorithm.network == "server":
        raise ConfigError(
            f"the faults section applies to graph links (comm.mix, comm.neighbors), but {algorithm.name} "
            "talks only to the server, so it would change nothing; drop the faults settings or choose "
            "an algorithm that gossips (see `dmtl list`)"
        )
    threads = cfg["backend"]["blas_threads"]
    limits: Any = contextlib.nullcontext()
    if threads is not None and cfg["backend"]["name"] == "local":  # MPI ranks get it from the launcher
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=threads, user_api="blas")
    instrument = getattr(comm, "instrument", None)  # the MPI backend counts rounds (watchdog messages)
    if instrument is not None:
        algorithm = instrument(algorithm)
    try:
        if out is not None and comm.rank == 0:  # inside the try: an MPI job learns that rank 0 failed
            prepare_out(out)
        with limits:
            return _iterate(cfg, algorithm, problem, comm, streams, out, progress)
    except BaseException as exc:
        on_failure = getattr(comm, "on_failure", None)  # MPI: tell the other ranks, or abort the job
        if on_failure is not None:
            on_failure(exc)
        raise
    finally:
        close = getattr(comm, "close", None)
        if close is not None:
            close()


def _iterate(
    cfg: dict[str, Any],
    algorithm: Algorithm,
    problem: Problem,
    comm: Communicator,
    streams: RunStreams,
    out: str | Path | None,
    progress: bool | None,
) -> RunResult:
    rounds, every = cfg["rounds"], cfg["eval_every"]
    target_metric, target_below = cfg["target"]["metric"], cfg["target"]["below"]
    show = _want_progress(cfg, progress) and comm.rank == 0
    rows: list[tuple] = []
    timing: list[tuple[int, float]] = []
    wall = 0.0

    def record(it: int, state: Any) -> dict[str, float]:
        metrics = algorithm.evaluate(state, comm)
        totals = comm.ledger_totals()
        ledger = tuple(totals[c] for c in LEDGER_COLUMNS)
        for name in sorted(metrics):
            rows.append((it, name, metrics[name], *ledger))
        timing.append((it, wall))
        return metrics

    def reached(metrics: dict[str, float]) -> bool:
        if target_metric is None:
            return False
        if target_metric not in metrics:
            raise ConfigError(
                f"target.metric {target_metric!r} is not a metric of {algorithm.name}; "
                f"its metrics: {', '.join(sorted(metrics))}"
            )
        return bool(metrics[target_metric] < target_below)

    t0 = time.perf_counter()
    state = algorithm.init(problem, comm, streams)
    wall += time.perf_counter() - t0
    metrics = record(0, state)
    # checked at round 0 too: a misspelt metric fails at once (also with rounds=0), and a target met by
    # the initialisation needs no iteration
    stopped = "target" if reached(metrics) else "rounds"
    last = 0 if stopped == "target" else rounds
    it = 0
    for it in range(1, last + 1):
        t0 = time.perf_counter()
        state = algorithm.step(state, comm)
        wall += time.perf_counter() - t0
        if it % every == 0 or it == rounds:
            metrics = record(it, state)
            if show:
                _progress(it, rounds, metrics, target_metric)
            if reached(metrics):
                stopped = "target"
                break
    if show:
        sys.stderr.write("\n")
    history = pd.DataFrame(rows, columns=["round", "metric", "value", *LEDGER_COLUMNS])
    timing_df = pd.DataFrame(timing, columns=["round", "wall_time"])
    summary = _summary(cfg, algorithm, comm, metrics, it, stopped, wall)
    result = RunResult(history, summary, cfg, state, timing_df)
    if out is not None and comm.rank == 0:
        from dmtl.results import write_run

        result.out = write_run(result, out)
    return result


def _summary(cfg, algorithm, comm, metrics, it, stopped, wall) -> dict[str, Any]:
    import platform

    import scipy

    import dmtl

    totals = comm.ledger_totals()
    nodes = comm.node_ledger()
    per_node_bytes = nodes["sent"][:, 2] + nodes["uploaded"][:, 2]
    transport = comm.transport_totals()
    summary = {
        "name": cfg["name"],
        "algorithm": algorithm.name,
        "rounds": it,
        "stopped_by": stopped,
        "final_metrics": metrics,
        "ledger": {
            **totals,
            "max_node_bytes_sent": float(per_node_bytes.max(initial=0.0)),
            "bytes_uploaded": float(nodes["uploaded"][:, 2].sum()),
            "bytes_downloaded": float(nodes["downloaded"][:, 2].sum()),
            "bytes_over_links": float(nodes["sent"][:, 2].sum()),
        },
        "wall_time": wall,
        "virtual_time": totals["virtual_time"],
        "backend": {"name": comm.backend, "procs": comm.size},
        "versions": {
            "dmtl": dmtl.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "python": platform.python_version(),
        },
    }
    if transport is not None:
        summary["transport"] = transport  # what crossed between processes (MPI), next to the node view
    return summary


def _want_progress(cfg: dict[str, Any], progress: bool | None) -> bool:
    if progress is not None:
        return progress
    setting = cfg["output"]["progress"]
    if setting in ("on", True):
        return True
    if setting in ("off", False):
        return False
    return sys.stderr.isatty() and not os.environ.get("CI")


def _progress(it: int, rounds: int, metrics: dict[str, float], key: str | None) -> None:
    width = 30
    done = int(width * it / max(rounds, 1))
    shown = key if key in metrics else next(iter(sorted(metrics)), None)
    tail = f" {shown}={metrics[shown]:.3e}" if shown else ""
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {it}/{rounds}{tail}")
    sys.stderr.flush()
