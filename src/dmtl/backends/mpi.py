r"""The MPI backend: one contiguous shard of nodes per MPI rank (mpi4py), equal to the local backend.

Sharding
--------
With ``P`` ranks and ``n`` nodes, rank ``p`` owns the nodes ``bounds[p] .. bounds[p+1] - 1`` where the
shard sizes are those of :func:`numpy.array_split` (the first ``n mod P`` ranks hold one node more).
Every rank builds the same problem and graph from the run seed and keeps its block's rows; more ranks
than nodes is a :class:`~dmtl.errors.ConfigError`.

Data movement
-------------
``mix(X, W)``
    Halo exchange: each rank sends, to each other rank, the rows of its block that the other's rows of
    ``W`` reference (the *boundary* rows), in one message per pair of ranks and gossip round, by batched
    non-blocking point-to-point (``Isend``/``Irecv`` on contiguous float64 buffers), and then applies its
    rows of ``W`` to ``[own rows; halo rows]``. The send/receive plans are computed once per mixing matrix
    from its sparsity alone (every rank holds the whole ``W``) and cached. The local product keeps the
    order of the entries of each row of ``W``, so the result is bitwise the local backend's.
    Point-to-point is used rather than a distributed-graph communicator with ``Neighbor_alltoallv``
    because it needs no new communicator per mixing matrix (time-varying graphs would exhaust MPI's
    context ids) and because the watchdog then knows *which* neighbour's rows are late.
``neighbors(X, W)``
    the same halo exchange; the received rows are returned per entry of ``W``.
``gather`` / ``observe``
    ``Allgatherv`` (the server computation is replicated on every rank, rank 0 plays the server).
``broadcast`` / ``flood``
    ``Bcast`` from rank 0 / from the rank owning the source node. ``scatter`` needs only the offset of the
    shard's rows (``Exscan``).

Two ledgers
-----------
The node-level ledger of the base class (what the *algorithm* sends, a message between two nodes of the
same shard included) is reduced over ranks and is the same as the local backend's on any number of
ranks. :meth:`MPICommunicator.transport_totals` reports what actually crossed between ranks, per
primitive: messages and bytes of payload (collectives counted as one message per sending and receiving
rank pair, whatever algorithm the MPI library uses) and the longest time a rank spent in it.

Failure handling
----------------
Every exchange is a non-blocking request polled by a watchdog. A rank that waits longer than
``backend.timeout`` seconds, or that learns from the launcher that a process failed (MPICH's hydra sends
``SIGUSR1`` with ``-disable-auto-cleanup``), pings every rank on a control communicator; ranks that are
themselves waiting answer with the operation and round they are in. The lowest responsive rank then
prints one line ``dmtl: error: MPI rank R stopped responding ...`` naming the silent rank(s) and the
operation, and calls ``MPI_Abort``; under dmtl's launcher it also leaves the line in the job folder,
because hydra's abort can kill a proxy before it forwards the line. An exception on one rank is
announced to the others; if every rank failed alike (a configuration error) they all raise it,
otherwise the failing rank prints it and aborts.
The launcher (:func:`launch`) adds a second guard: it kills the whole process group when no rank has
shown progress for ``timeout + max(10, timeout / 2)`` seconds.

A waiting rank polls, yielding the core between polls, for 5 ms before it naps between polls (50 us when
there are more ranks than cores); ``DMTL_MPI_SPIN=SECONDS`` overrides it.

Fault injection (testing only): ``DMTL_FAULT_KILL=R:K`` makes rank ``R`` exit (``os._exit``) at the
start of round ``K``; ``DMTL_FAULT_STALL=R:K`` makes it sleep forever there.

References
----------
MPI Forum, "MPI: A Message-Passing Interface Standard, Version 4.0", 2021 (non-blocking collectives,
section 6.12). L. Dalcin and Y.-L. L. Fang, "mpi4py: Status Update After 12 Years of Development",
Computing in Science & Engineering 23(4), 2021.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from dmtl.errors import ConfigError, DmtlError
from dmtl.network.channel import Channel
from dmtl.network.comm import Communicator
from dmtl.network.ledger import PHASE_REDUCE, ClockModel
from dmtl.network.topology import MixingMatrix, Topology

if TYPE_CHECKING:
    from dmtl.runner import RunResult

__all__ = [
    "MPICommunicator",
    "MPIRunError",
    "TRANSPORT_OPS",
    "find_mpiexec",
    "inside_mpi_job",
    "launch",
    "launch_many",
    "shard_bounds",
]

INSTALL_HINT = (
    'pip install "dmtl[mpi]" (mpi4py and the mpich wheel), or mpi4py built against your cluster\'s MPI '
    "(README, section 'Running on MPI')"
)

#: Primitives the transport view reports separately ("ledger": reductions of the ledgers).
TRANSPORT_OPS = ("mix", "neighbors", "gather", "observe", "broadcast", "flood", "scatter", "ledger", "other")

_TAG_DATA = 11
_TAG_PING, _TAG_PONG, _TAG_ERROR = 21, 22, 23
_ABORT_CODE = 3
_ENV_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")

# Whether this process's main thread is inside an MPI wait; the heartbeat thread beats only outside.
_ACTIVITY = {"in_mpi": False}


class MPIRunError(DmtlError, RuntimeError):
    """An MPI run failed: a rank died, stalled or raised, or the launcher's guard fired."""


# -- helpers --------------------------------------------------------------------------------------
def shard_bounds(n_nodes: int, size: int) -> np.ndarray:
    """Shard boundaries ``(size + 1,)``: rank ``p`` owns nodes ``bounds[p] .. bounds[p+1] - 1``.

    Sizes follow :func:`numpy.array_split`: the first ``n_nodes mod size`` shards get one node more.

    Raises
    ------
    ConfigError
        when there are more ranks than nodes.
    """
    if size > n_nodes:
        raise ConfigError(
            f"{size} MPI ranks for {n_nodes} nodes: every rank needs at least one node; use "
            f"backend.procs <= {n_nodes} (mpiexec -n {n_nodes} or fewer) or more topology.nodes"
        )
    sizes = np.full(size, n_nodes // size, dtype=np.int64)
    sizes[: n_nodes % size] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def _import_mpi() -> Any:
    if importlib.util.find_spec("mpi4py") is None:
        raise ConfigError(f"backend.name=mpi needs mpi4py, which is not installed: {INSTALL_HINT}")
    from mpi4py import MPI

    return MPI


def inside_mpi_job() -> bool:
    """Whether this process was started by an MPI launcher (``mpiexec``, ``srun``) or is a rank of a
    multi-process MPI job. Does not import mpi4py (it would initialise MPI) unless it is already loaded."""
    if any(var in os.environ for var in _ENV_VARS):
        return True
    if os.environ.get("SLURM_STEP_NUM_TASKS", "1").strip() not in ("", "0", "1"):
        return True  # a task of a multi-task srun step
    mod = sys.modules.get("mpi4py.MPI")
    if mod is not None and mod.Is_initialized() and not mod.Is_finalized():
        return mod.COMM_WORLD.Get_size() > 1
    return False


def find_mpiexec(explicit: str | None = None) -> str:
    """The ``mpiexec`` to launch: ``explicit`` (``backend.mpiexec``), else the one next to the Python
    interpreter (the mpich wheel's), else ``mpiexec``/``mpirun`` on ``PATH``."""
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise ConfigError(f"backend.mpiexec={explicit!r} is not an executable; {INSTALL_HINT}")
        return found
    for name in ("mpiexec", "mpirun"):
        candidate = Path(sys.executable).parent / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    for name in ("mpiexec", "mpirun"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise ConfigError(f"backend.name=mpi needs an MPI launcher (mpiexec), none found: {INSTALL_HINT}")


@lru_cache(maxsize=8)
def _is_hydra(mpiexec: str) -> bool:
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "hydra" in (out.stdout + out.stderr).lower()


def _parse_fault(var: str) -> tuple[int, int] | None:
    text = os.environ.get(var)
    if not text:
        return None
    try:
        rank, rnd = (int(x) for x in text.split(":"))
    except ValueError:
        raise ConfigError(f"{var} must look like RANK:ROUND (e.g. 1:3), got {text!r}") from None
    return rank, rnd


@dataclass
class _HaloPlan:
    """What one rank sends and receives for one mixing matrix."""

    matrix: sparse.csr_array  # held so that id(matrix) stays unique while cached
    local: sparse.csr_array  # (n_local, n_local + n_halo): the block's rows of W on [own; halo]
    halo: np.ndarray  # global ids of the halo rows, sorted (grouped by owner)
    recv_ranks: np.ndarray
    recv_offsets: np.ndarray  # (len(recv_ranks) + 1,) row offsets into the halo
    send_ranks: np.ndarray
    send_offsets: np.ndarray  # (len(send_ranks) + 1,) offsets into send_index
    send_index: np.ndarray  # local row indices to send, grouped by destination

    def ext_index(self, sources: np.ndarray, start: int, n_local: int) -> np.ndarray:
        """Rows of ``[own; halo]`` holding the given global node ids."""
        own = (sources >= start) & (sources < start + n_local)
        return np.where(own, sources - start, n_local + np.searchsorted(self.halo, sources))


class _Instrumented:
    """The algorithm, with its rounds counted for the watchdog's messages and the fault hooks."""

    def __init__(self, algorithm: Any, comm: MPICommunicator) -> None:
        self._algorithm = algorithm
        self._comm = comm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._algorithm, name)

    def init(self, problem: Any, comm: Communicator, rng: Any) -> Any:
        self._comm.round = 0
        return self._algorithm.init(problem, comm, rng)

    def step(self, state: Any, comm: Communicator) -> Any:
        self._comm.round += 1
        self._comm._inject_fault()
        return self._algorithm.step(state, comm)


# -- the communicator -----------------------------------------------------------------------------
class MPICommunicator(Communicator):
    """Nodes sharded over the ranks of ``MPI.COMM_WORLD`` (or ``comm``).

    Parameters
    ----------
    n_nodes : int
        Number of nodes in the network.
    clock : ClockModel, optional
        Virtual clock parameters.
    topology, mixing : optional
        The communication graph and its default mixing weights.
    timeout : float
        Seconds a rank may wait for another in one exchange before the job is aborted (0: forever).
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.
    channel : Channel, optional
        A lossy channel for graph links (the run's ``faults:`` section).

    Raises
    ------
    ConfigError
        without mpi4py, or with more ranks than nodes.
    """

    backend = "mpi"

    def __init__(
        self,
        n_nodes: int,
        clock: ClockModel | None = None,
        topology: Topology | None = None,
        mixing: MixingMatrix | None = None,
        timeout: float = 60.0,
        comm: Any = None,
        channel: Channel | None = None,
    ) -> None:
        MPI = _import_mpi()
        self._MPI = MPI
        world = MPI.COMM_WORLD if comm is None else comm
        self._world = world
        self._size = world.Get_size()
        self._rank = world.Get_rank()
        bounds = shard_bounds(int(n_nodes), self._size)
        self.bounds = bounds
        super().__init__(
            n_nodes, int(bounds[self._rank]), int(bounds[self._rank + 1]), clock, topology, mixing, channel
        )
        self.timeout = float(timeout)
        self._grace = min(1.0, max(0.2, 0.2 * self.timeout)) if self.timeout > 0 else 1.0
        self._agree_grace = min(5.0, max(1.0, 0.25 * self.timeout)) if self.timeout > 0 else 5.0
        self._deadline = max(self.timeout - self._grace, 0.1) if self.timeout > 0 else None
        self.round = 0
        # busy-poll this long before napping: long when every rank has a core, short when oversubscribed
        self._spin = float(
            os.environ.get("DMTL_MPI_SPIN", 5e-3 if self._size <= (os.cpu_count() or 1) else 5e-5)
        )
        self._labels: list[str] = []
        self._plans: OrderedDict[int, _HaloPlan] = OrderedDict()
        self._transport = np.zeros((len(TRANSPORT_OPS), 4))  # calls, messages, bytes, seconds
        self._phase_cache: tuple[int, int, np.ndarray] = (
            id(self.ledger),
            0,
            np.zeros((0, len(PHASE_REDUCE))),
        )
        self._block_rows = False
        self._peer_signal = False
        self._remote_errors: dict[int, str] = {}
        self._remote_deadline: float | None = None
        self._pending: list[tuple[Any, Any]] = []
        self._waiting_since: float | None = None
        self._closed = False
        self._fault_kill = _parse_fault("DMTL_FAULT_KILL")
        self._fault_stall = _parse_fault("DMTL_FAULT_STALL")
        self._ctl = None
        self._labels.append("setup")
        try:
            self._comm = self._dup(world)
            self._ctl = self._dup(world)
        finally:
            self._labels.pop()
        self._status = MPI.Status()
        self._old_usr1: Any = None
        if self._size > 1 and threading.current_thread() is threading.main_thread():
            self._old_usr1 = signal.signal(signal.SIGUSR1, self._on_usr1)

    # -- identity ---------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self._rank

    @property
    def size(self) -> int:
        return self._size

    def owner_of(self, node: int) -> int:
        """Rank that owns ``node``."""
        node = int(node)
        if not 0 <= node < self.n_nodes:
            raise ValueError(f"node {node} is not in 0..{self.n_nodes - 1}")
        return int(np.searchsorted(self.bounds, node, side="right") - 1)

    def _owners(self, nodes: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.bounds, nodes, side="right") - 1

    # -- labelled public primitives (for the transport view and error messages) -------------------
    def _run(self, label: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._labels.append(label)
        try:
            return fn(*args, **kwargs)
        finally:
            self._labels.pop()

    def mix(self, X: np.ndarray, W: MixingMatrix, rounds: int = 1) -> np.ndarray:
        return self._run("mix", super().mix, X, W, rounds)

    def neighbors(self, X: np.ndarray, W: MixingMatrix) -> Any:
        return self._run("neighbors", super().neighbors, X, W)

    def flood(self, value: np.ndarray, source: int, topology: Topology) -> np.ndarray:
        return self._run("flood", super().flood, value, source, topology)

    def gather(self, X: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        # one row per node: every rank knows every shard's row count, no header exchange needed
        self._block_rows = counts is None
        try:
            return self._run("gather", super().gather, X, counts)
        finally:
            self._block_rows = False

    def broadcast(self, Y: Any) -> Any:
        return self._run("broadcast", super().broadcast, Y)

    def scatter(self, Y: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        return self._run("scatter", super().scatter, Y, counts)

    def server_step(self, fn: Any, *X: np.ndarray, out: str = "broadcast", counts: Any = None) -> Any:
        return self._run("server_step", super().server_step, fn, *X, out=out, counts=counts)

    def observe(self, X: np.ndarray) -> np.ndarray:
        return self._run("observe", super().observe, X)

    def ledger_totals(self) -> dict[str, float]:
        return self._run("ledger", super().ledger_totals)

    def node_ledger(self) -> dict[str, np.ndarray]:
        return self._run("ledger", super().node_ledger)

    def _op(self) -> str:
        return " > ".join(self._labels) if self._labels else "local computation"

    def _count(self, messages: float, nbytes: float, seconds: float) -> None:
        key = next((lab for lab in reversed(self._labels) if lab in TRANSPORT_OPS), "other")
        self._transport[TRANSPORT_OPS.index(key)] += (1.0, messages, nbytes, seconds)

    # -- halo exchange ----------------------------------------------------------------------------
    def _plan(self, W: MixingMatrix) -> _HaloPlan:
        key = id(W.matrix)
        plan = self._plans.get(key)
        if plan is not None and plan.matrix is W.matrix:
            self._plans.move_to_end(key)
            return plan
        M = sparse.csr_array(W.matrix)
        s, e, n = self.start, self.stop, self.n_nodes
        n_local = e - s
        lo, hi = M.indptr[s], M.indptr[e]
        cols = M.indices[lo:hi].astype(np.int64)
        own = (cols >= s) & (cols < e)
        halo = np.unique(cols[~own])
        newcols = np.where(own, cols - s, n_local + np.searchsorted(halo, cols))
        indptr = (M.indptr[s : e + 1] - lo).astype(np.int64)
        local = sparse.csr_array((M.data[lo:hi], newcols, indptr), shape=(n_local, n_local + len(halo)))
        recv_ranks, recv_counts = np.unique(self._owners(halo), return_counts=True)
        # sends: the rows of this block referenced by rows of other blocks, grouped by their owner
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(M.indptr))
        allcols = M.indices.astype(np.int64)
        mask = (allcols >= s) & (allcols < e) & ((rows < s) | (rows >= e))
        pairs = np.unique(self._owners(rows[mask]) * n + allcols[mask])
        send_rank_of = pairs // n
        send_ranks, send_counts = np.unique(send_rank_of, return_counts=True)
        plan = _HaloPlan(
            matrix=W.matrix,
            local=local,
            halo=halo,
            recv_ranks=recv_ranks.astype(np.int64),
            recv_offsets=np.concatenate([[0], np.cumsum(recv_counts)]).astype(np.int64),
            send_ranks=send_ranks.astype(np.int64),
            send_offsets=np.concatenate([[0], np.cumsum(send_counts)]).astype(np.int64),
            send_index=(pairs % n - s).astype(np.int64),
        )
        self._plans[key] = plan
        if len(self._plans) > 64:
            self._plans.popitem(last=False)
        return plan

    def _exchange(self, plan: _HaloPlan, ext: np.ndarray) -> None:
        """Fill the halo rows of ``ext = [own; halo]`` from their owners (one message per rank pair)."""
        MPI = self._MPI
        f = ext.shape[1]
        if f == 0 or (len(plan.recv_ranks) == 0 and len(plan.send_ranks) == 0):
            return
        t0 = time.perf_counter()
        n_local = self.n_local
        comm = self._comm
        reqs = []
        for k, src in enumerate(plan.recv_ranks):
            a, b = n_local + plan.recv_offsets[k], n_local + plan.recv_offsets[k + 1]
            reqs.append(comm.Irecv([ext[a:b], MPI.DOUBLE], int(src), _TAG_DATA))
        sendbuf = ext[plan.send_index]
        for k, dst in enumerate(plan.send_ranks):
            a, b = plan.send_offsets[k], plan.send_offsets[k + 1]
            reqs.append(comm.Isend([sendbuf[a:b], MPI.DOUBLE], int(dst), _TAG_DATA))
        peers = [int(r) for r in plan.recv_ranks] + [int(r) for r in plan.send_ranks]
        self._wait(reqs, peers)
        self._count(len(plan.send_ranks), sendbuf.nbytes, time.perf_counter() - t0)

    def _mix(self, flat: np.ndarray, W: MixingMatrix, rounds: int) -> np.ndarray:
        plan = self._plan(W)
        n_local = self.n_local
        if len(plan.halo) == 0 and len(plan.send_ranks) == 0:  # nothing crosses this shard's border
            out = flat
            for _ in range(rounds):
                out = plan.local @ out
            return np.asarray(out)
        ext = np.empty((n_local + len(plan.halo), flat.shape[1]))
        ext[:n_local] = flat
        out = flat
        for k in range(rounds):
            self._exchange(plan, ext)
            out = np.asarray(plan.local @ ext)
            if k + 1 < rounds:
                ext[:n_local] = out
        return out

    def _neighbor_rows(self, flat: np.ndarray, W: MixingMatrix, sources: np.ndarray) -> np.ndarray:
        plan = self._plan(W)
        n_local = self.n_local
        ext = np.empty((n_local + len(plan.halo), flat.shape[1]))
        ext[:n_local] = flat
        self._exchange(plan, ext)
        return ext[plan.ext_index(np.asarray(sources, dtype=np.int64), self.start, n_local)]

    # -- collectives ------------------------------------------------------------------------------
    def _mpi_type(self, dtype: np.dtype) -> Any:
        from mpi4py.util.dtlib import from_numpy_dtype

        try:
            return from_numpy_dtype(dtype)
        except (TypeError, ValueError, KeyError):
            raise TypeError(
                f"comm: cannot send arrays of dtype {dtype} over MPI; use a numeric dtype"
            ) from None

    def _allgather(self, X: np.ndarray) -> np.ndarray:
        MPI = self._MPI
        X = np.ascontiguousarray(X)
        if X.ndim == 0:
            raise ValueError("comm.gather/observe expects an array with a leading row axis, got a scalar")
        if self._size == 1:
            self._count(0, 0, 0.0)
            return X.copy()
        t0 = time.perf_counter()
        row = int(np.prod(X.shape[1:], dtype=np.int64))
        mine = np.array([X.shape[0], row], dtype=np.int64)
        if self._block_rows:
            table = np.stack([np.diff(self.bounds), np.full(self._size, row)], 1)
            mine = mine[:0]
        else:
            table = np.empty((self._size, 2), dtype=np.int64)
            self._wait([self._comm.Iallgather([mine, MPI.INT64_T], [table, MPI.INT64_T])])
        if np.any(table[:, 1] != row):
            raise ValueError(
                f"comm.gather/observe: rows of {row} values on rank {self._rank} but "
                f"{table[:, 1].tolist()} over the ranks; every shard must send rows of the same shape"
            )
        counts = table[:, 0] * row
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        out = np.empty((int(table[:, 0].sum()),) + X.shape[1:], dtype=X.dtype)
        t = self._mpi_type(X.dtype)
        self._wait([self._comm.Iallgatherv([X, t], [out, (counts, displs), t])])
        peers = self._size - 1
        self._count((1 + (mine.size > 0)) * peers, peers * (mine.nbytes + X.nbytes), time.perf_counter() - t0)
        return out

    def _bcast_from(self, value: np.ndarray, root: int) -> np.ndarray:
        buf = np.array(value, copy=True, order="C")
        if self._size == 1:
            self._count(0, 0, 0.0)
            return buf
        t0 = time.perf_counter()
        self._wait([self._comm.Ibcast([buf, self._mpi_type(buf.dtype)], int(root))])
        peers = self._size - 1 if self._rank == root else 0
        self._count(peers, peers * buf.nbytes, time.perf_counter() - t0)
        return buf

    def _global_offset(self, counts: np.ndarray) -> int:
        MPI = self._MPI
        if self._size == 1:
            return 0
        t0 = time.perf_counter()
        mine = np.array([int(np.sum(counts))], dtype=np.int64)
        out = np.zeros(1, dtype=np.int64)
        self._wait([self._comm.Iexscan([mine, MPI.INT64_T], [out, MPI.INT64_T], MPI.SUM)])
        later = self._size - 1 - self._rank
        self._count(later, later * 8, time.perf_counter() - t0)
        return 0 if self._rank == 0 else int(out[0])

    def _allreduce(self, arrays: Sequence[tuple[np.ndarray, str]]) -> list[np.ndarray]:
        """Element-wise ``sum``/``max`` of float64 arrays over ranks (all started, then waited on)."""
        MPI = self._MPI
        if self._size == 1:
            return [np.array(a, dtype=np.float64) for a, _ in arrays]
        t0 = time.perf_counter()
        outs, reqs, nbytes = [], [], 0
        for a, how in arrays:
            src = np.ascontiguousarray(a, dtype=np.float64)
            out = np.empty_like(src)
            op = MPI.SUM if how == "sum" else MPI.MAX
            reqs.append(self._comm.Iallreduce([src, MPI.DOUBLE], [out, MPI.DOUBLE], op))
            outs.append(out)
            nbytes += src.nbytes
        self._wait(reqs)
        peers = self._size - 1
        self._count(peers * len(arrays), peers * nbytes, time.perf_counter() - t0)
        return outs

    def _reduce_phases(self, table: np.ndarray) -> np.ndarray:
        """Reduce the phase table over ranks; phases are append-only, so only new rows are reduced."""
        key, done, reduced = self._phase_cache
        if key != id(self.ledger) or table.shape[0] < done or reduced.shape[1] != table.shape[1]:
            done, reduced = 0, np.zeros((0, table.shape[1]))
        new = table[done:]
        if new.shape[0] or self._size == 1:
            sums = [j for j, how in enumerate(PHASE_REDUCE) if how == "sum"]
            maxs = [j for j, how in enumerate(PHASE_REDUCE) if how == "max"]
            s_out, m_out = self._allreduce([(new[:, sums], "sum"), (new[:, maxs], "max")])
            part = np.empty_like(new)
            part[:, sums] = s_out
            part[:, maxs] = m_out
            reduced = np.concatenate([reduced, part])
            self._phase_cache = (id(self.ledger), table.shape[0], reduced)
        return reduced.copy()

    def _reduce_nodes(self, table: np.ndarray) -> np.ndarray:
        return self._allreduce([(table, "sum")])[0]

    def transport_totals(self) -> dict[str, Any]:
        """What crossed between ranks, per primitive (a collective call).

        Returns
        -------
        dict with ``ranks``, total ``messages`` and ``bytes`` of payload sent between ranks, and
        ``by_op[op]`` = ``calls`` (per rank), ``messages``, ``bytes`` (summed over ranks) and
        ``seconds_max`` (the longest any rank spent in that primitive, waiting included).
        """
        snap = self._transport.copy()
        self._labels.append("transport")
        try:
            sums, maxs = self._allreduce([(snap[:, 1:3], "sum"), (snap[:, [0, 3]], "max")])
        finally:
            self._labels.pop()
        by_op = {
            op: {
                "calls": float(maxs[k, 0]),
                "messages": float(sums[k, 0]),
                "bytes": float(sums[k, 1]),
                "seconds_max": float(maxs[k, 1]),
            }
            for k, op in enumerate(TRANSPORT_OPS)
            if maxs[k, 0] > 0
        }
        return {
            "ranks": self._size,
            "messages": float(sums[:, 0].sum()),
            "bytes": float(sums[:, 1].sum()),
            "by_op": by_op,
        }

    # -- watchdog ---------------------------------------------------------------------------------
    def _dup(self, world: Any) -> Any:
        if self._size == 1:
            return world.Dup()
        new, req = world.Idup()
        self._wait([req])
        return new

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self._peer_signal = True

    def _wait(self, reqs: list, peers: Sequence[int] | None = None) -> None:
        """Wait for ``reqs`` under the watchdog (polling, never blocking)."""
        MPI = self._MPI
        testall = MPI.Request.Testall
        try:
            if testall(reqs):
                return
        except MPI.Exception as exc:
            self._diagnose(f"MPI reported an error ({exc})", 0.0, reqs, peers)
        _ACTIVITY["in_mpi"] = True
        t0 = time.monotonic()
        self._waiting_since = t0
        next_check = t0 + 0.01
        nap = 0.0
        try:
            while True:
                try:
                    if testall(reqs):
                        return
                except MPI.Exception as exc:
                    self._diagnose(f"MPI reported an error ({exc})", time.monotonic() - t0, reqs, peers)
                now = time.monotonic()
                if now - t0 < 2e-5:  # busy-poll a moment (an unloaded machine answers in microseconds)
                    pass
                elif now - t0 < self._spin:  # then poll, yielding the core (the peer may need it)
                    os.sched_yield()
                else:  # then nap between polls
                    nap = min(max(nap * 2, 2e-5), 1e-3)
                    time.sleep(nap)
                if now >= next_check:
                    next_check = now + 0.01
                    self._check(now - t0, reqs, peers)
        finally:
            _ACTIVITY["in_mpi"] = False
            self._waiting_since = None

    def _check(self, waited: float, reqs: list, peers: Sequence[int] | None) -> None:
        if self._ctl is not None:
            self._service()
        if self._peer_signal and self._ctl is not None:
            self._diagnose("the MPI launcher reported a failed process", waited, reqs, peers)
        timed_out = self._deadline is not None and waited >= self._deadline
        if self._remote_errors:
            # a rank failed and announced it; it aborts the job after the agreement window
            now = time.monotonic()
            if self._remote_deadline is None:
                self._remote_deadline = now + self._agree_grace + 2 * self._grace
            if timed_out or now > self._remote_deadline:
                src = min(self._remote_errors)
                self._abort(f"MPI rank {src} failed: {self._remote_errors[src]}")
        if timed_out:
            cause = f"backend.timeout={self.timeout:g} s reached"
            if self._ctl is None:
                self._abort(
                    f"MPI rank {self._rank} waited {waited:.1f} s in {self._op()} for the other ranks "
                    f"({cause}); some rank did not start or stalled"
                )
            self._diagnose(cause, waited, reqs, peers)

    def _service(self) -> None:
        """Answer pings and collect error notices on the control communicator."""
        MPI, ctl, st = self._MPI, self._ctl, self._status
        while ctl.Iprobe(MPI.ANY_SOURCE, _TAG_PING, st):
            src = st.Get_source()
            buf = np.empty(1, dtype=np.int64)
            ctl.Recv([buf, MPI.INT64_T], src, _TAG_PING)
            since = self._waiting_since
            waited_ms = int(1000 * (time.monotonic() - since)) if since is not None else -1
            reply = np.array([buf[0], self._label_code(), self.round, waited_ms], dtype=np.int64)
            self._pending.append((ctl.Isend([reply, MPI.INT64_T], src, _TAG_PONG), reply))
        while ctl.Iprobe(MPI.ANY_SOURCE, _TAG_ERROR, st):
            src = st.Get_source()
            buf = bytearray(st.Get_count(MPI.BYTE))
            ctl.Recv([buf, MPI.BYTE], src, _TAG_ERROR)
            self._remote_errors[src] = buf.decode("utf-8", "replace")
        self._pending = [(r, b) for r, b in self._pending if not r.Test()]

    _LABELS = ("local computation", "setup", "server_step", "transport", *TRANSPORT_OPS)

    def _label_code(self) -> int:
        lab = self._labels[-1] if self._labels else "local computation"
        return self._LABELS.index(lab) if lab in self._LABELS else 0

    def _ping(self, window: float) -> dict[int, tuple[str, int, float]]:
        """Ping every other rank; return the responders' (operation, round, seconds waiting)."""
        MPI, ctl = self._MPI, self._ctl
        recvs: dict[int, tuple[Any, np.ndarray]] = {}
        seq = np.array([1], dtype=np.int64)
        for q in range(self._size):
            if q == self._rank:
                continue
            buf = np.empty(4, dtype=np.int64)
            try:
                recvs[q] = (ctl.Irecv([buf, MPI.INT64_T], q, _TAG_PONG), buf)
                self._pending.append((ctl.Isend([seq, MPI.INT64_T], q, _TAG_PING), seq))
            except MPI.Exception:
                recvs.pop(q, None)
        alive: dict[int, tuple[str, int, float]] = {}
        end = time.monotonic() + window
        while recvs and time.monotonic() < end:
            try:
                self._service()
            except MPI.Exception:
                pass
            for q in list(recvs):
                req, buf = recvs[q]
                try:
                    done = req.Test()
                except MPI.Exception:
                    del recvs[q]
                    continue
                if done:
                    del recvs[q]
                    code = int(buf[1])
                    label = self._LABELS[code] if 0 <= code < len(self._LABELS) else "?"
                    alive[q] = (label, int(buf[2]), buf[3] / 1000.0)
            time.sleep(1e-3)
        return alive

    def _diagnose(self, cause: str, waited: float, reqs: list, peers: Sequence[int] | None) -> None:
        """Find the ranks that stopped responding, report them once, abort the job (never returns)."""
        late: list[int] = []
        if peers is not None:
            for req, peer in zip(reqs, peers, strict=False):
                try:
                    if not req.Test():
                        late.append(peer)
                except self._MPI.Exception:
                    late.append(peer)
        alive = self._ping(self._grace)
        silent = [q for q in range(self._size) if q != self._rank and q not in alive]
        here = f"rank {self._rank} waited {waited:.1f} s in {self._op()} at round {self.round}"
        if late:
            here += f" for rank(s) {', '.join(map(str, sorted(set(late))))}"
        others = "; ".join(
            f"rank {q} in {lab} at round {rnd}" + (f" for {w:.1f} s" if w >= 0 else "")
            for q, (lab, rnd, w) in sorted(alive.items())
        )
        if silent:
            msg = (
                f"MPI rank(s) {', '.join(map(str, silent))} stopped responding (exited, crashed or "
                f"stalled): {here} ({cause})"
            )
        else:
            msg = (
                f"all MPI ranks are alive but did not meet in the same operation: {here} ({cause}); "
                "every rank must call the communicator's primitives in the same order"
            )
        if others:
            msg += f"; responsive: {others}"
        reporter = min([self._rank, *alive])
        if reporter != self._rank:
            # the reporter aborts the job; keep answering its pings meanwhile
            end = time.monotonic() + 2 * self._grace + 1.0
            while time.monotonic() < end:
                try:
                    self._service()
                except self._MPI.Exception:
                    break
                time.sleep(0.01)
        self._abort(msg)

    def _abort(self, message: str) -> None:
        _record_abort(self._rank, message)
        sys.stderr.write(f"dmtl: error: {message}; aborting the MPI job\n")
        sys.stderr.flush()
        try:
            self._world.Abort(_ABORT_CODE)
        finally:
            os._exit(_ABORT_CODE)  # MPICH's Abort may return before the launcher's kill arrives

    def on_failure(self, exc: BaseException) -> None:
        """Called by the runner when this rank raised ``exc`` during a run.

        Announces the failure to the other ranks. If every rank failed (the same configuration error
        everywhere), returns so that the exception propagates normally on all ranks; otherwise some rank
        is waiting for this one and the job is aborted with a message naming this rank.
        """
        if self._size == 1 or self._closed or self._ctl is None:
            return
        MPI, ctl = self._MPI, self._ctl
        text = f"{type(exc).__name__}: {exc}".strip()
        where = f"{self._op()} at round {self.round}"
        payload = bytearray(f"{text} (in {where})".encode())
        sends = []
        for q in range(self._size):
            if q != self._rank:
                sends.append(ctl.Isend([payload, MPI.BYTE], q, _TAG_ERROR))
        end = time.monotonic() + self._agree_grace
        while time.monotonic() < end and len(self._remote_errors) < self._size - 1:
            self._service()
            time.sleep(1e-3)
        if len(self._remote_errors) == self._size - 1:
            while not MPI.Request.Testall(sends) and time.monotonic() < end + self._grace:
                self._service()
                time.sleep(1e-3)
            return
        if not isinstance(exc, DmtlError):
            traceback.print_exception(exc, file=sys.stderr)
        self._abort(f"MPI rank {self._rank} failed in {where}: {text}")

    def instrument(self, algorithm: Any) -> Any:
        """Wrap ``algorithm`` so that rounds are counted (for messages and the fault hooks)."""
        return _Instrumented(algorithm, self)

    def _inject_fault(self) -> None:
        if self._fault_kill == (self._rank, self.round):
            sys.stderr.write(f"dmtl: fault injection (DMTL_FAULT_KILL): rank {self._rank} exits\n")
            sys.stderr.flush()
            os._exit(70)
        if self._fault_stall == (self._rank, self.round):
            sys.stderr.write(f"dmtl: fault injection (DMTL_FAULT_STALL): rank {self._rank} stalls\n")
            sys.stderr.flush()
            while True:
                time.sleep(3600)

    def close(self) -> None:
        """Free the communicators and restore the signal handler (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._old_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._old_usr1)
            self._old_usr1 = None
        for r, _ in self._pending:  # answers to pings: complete by now, or their peer is gone
            try:
                r.Test()
            except self._MPI.Exception:
                pass
        self._pending = []
        for c in (self._comm, self._ctl):
            try:
                c.Free()
            except self._MPI.Exception:
                pass


def _record_abort(rank: int, message: str) -> None:
    """Leave ``message`` in ``$DMTL_ABORT_DIR/abort_<rank>.txt`` for the launcher.

    MPI_Abort makes hydra kill every process at once, and a rank's last stderr line can be lost in the
    proxy's pipe before it is forwarded; a file written before the abort cannot be.
    """
    folder = os.environ.get("DMTL_ABORT_DIR")
    if not folder:
        return
    try:
        path = Path(folder) / f"abort_{rank}.txt"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(message, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # the stderr line is still there


def _recorded_aborts(folder: Path) -> list[str]:
    """Messages left by :func:`_record_abort`, lowest rank first."""
    found = []
    for path in folder.glob("abort_*.txt"):
        try:
            found.append((int(path.stem.split("_")[1]), path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return [msg for _, msg in sorted(found)]


# -- heartbeat (for the launcher's guard) ---------------------------------------------------------
def start_heartbeat(period: float = 1.0) -> threading.Thread | None:
    """Touch ``$DMTL_HEARTBEAT`` every ``period`` s while this process is not waiting inside MPI.

    The launcher kills the job when the file goes stale: a rank stuck in MPI (the watchdog's job first)
    stops beating, a rank computing keeps beating.
    """
    path = os.environ.get("DMTL_HEARTBEAT")
    if not path:
        return None

    def beat() -> None:
        while True:
            if not _ACTIVITY["in_mpi"]:
                try:
                    os.utime(path, None)
                except OSError:
                    pass
            time.sleep(period)

    thread = threading.Thread(target=beat, name="dmtl-heartbeat", daemon=True)
    thread.start()
    return thread


# -- launcher -------------------------------------------------------------------------------------
def launch(cfg: dict[str, Any], out: str | Path | None = None, progress: bool = False) -> RunResult:
    """Run a resolved configuration on ``backend.procs`` MPI processes started here with ``mpiexec``.

    Rank 0 writes the run directory ``out`` (if given); the returned result has ``state=None``.

    Raises
    ------
    ConfigError
        without mpi4py or mpiexec, or with more processes than nodes.
    MPIRunError
        when a rank fails, stalls or dies (the message names it), or the launcher's guard fires.
    """
    return launch_many([cfg], [out], progress=progress)[0]


def launch_many(
    cfgs: Sequence[dict[str, Any]],
    outs: Sequence[str | Path | None] | None = None,
    procs: int | None = None,
    progress: bool = False,
    wall_limit: float | None = None,
) -> list[RunResult]:
    """Run several resolved configurations one after another in ONE MPI job (one launch's start-up).

    ``procs`` defaults to the first configuration's ``backend.procs``; ``backend.blas_threads`` and
    ``backend.mpiexec`` are the first configuration's too. ``wall_limit`` (seconds, optional) bounds the
    whole job besides the idle guard. When a run fails, the job stops and the exception raised carries
    the results of the runs before it as ``exc.completed``.
    """
    from dmtl.runner import RunResult

    if not cfgs:
        return []
    outs = [None] * len(cfgs) if outs is None else list(outs)
    if len(outs) != len(cfgs):
        raise ValueError(f"launch_many: {len(cfgs)} configurations but {len(outs)} output directories")
    backend = cfgs[0]["backend"]
    procs = int(backend["procs"] if procs is None else procs)
    from dmtl.algorithms import make_algorithm

    for cfg in cfgs:  # fail fast, before starting any process, on what can be checked here
        shard_bounds(cfg["topology"]["nodes"], procs)
        make_algorithm(cfg["algorithm"]["name"], **{k: v for k, v in cfg["algorithm"].items() if k != "name"})
    if importlib.util.find_spec("mpi4py") is None:
        raise ConfigError(f"backend.name=mpi needs mpi4py, which is not installed: {INSTALL_HINT}")
    mpiexec = find_mpiexec(backend.get("mpiexec"))
    timeout = max(float(c["backend"]["timeout"]) for c in cfgs)
    idle_limit = timeout + max(10.0, 0.5 * timeout) if timeout > 0 else None
    tmp = Path(tempfile.mkdtemp(prefix="dmtl-mpi-"))
    try:
        job = tmp / "job.pkl"
        runs = [
            (cfg, None if o is None else str(Path(o).resolve())) for cfg, o in zip(cfgs, outs, strict=True)
        ]
        job.write_bytes(pickle.dumps({"runs": runs, "progress": bool(progress), "dir": str(tmp)}))
        heartbeat = tmp / "heartbeat"
        heartbeat.touch()
        cmd = [mpiexec]
        if _is_hydra(mpiexec):
            cmd.append("-disable-auto-cleanup")  # survivors get SIGUSR1 and name the failed rank
        cmd += ["-n", str(procs), sys.executable, "-m", "dmtl.backends.mpi_worker", str(job)]
        env = dict(os.environ)
        threads = str(int(backend["blas_threads"] or 1))  # default: one BLAS thread per rank
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
            env[var] = threads
        env["DMTL_HEARTBEAT"] = str(heartbeat)
        env["DMTL_ABORT_DIR"] = str(tmp)
        rc, errors, tail = _supervise(cmd, env, heartbeat, idle_limit, timeout, wall_limit)
        results = []
        for i, out in enumerate(outs):
            path = tmp / f"result_{i}.pkl"
            if not path.exists():
                break
            data = pickle.loads(path.read_bytes())
            results.append(
                RunResult(
                    history=data["history"],
                    summary=data["summary"],
                    config=data["config"],
                    state=None,
                    timing=data["timing"],
                    out=None if data["out"] is None else Path(out),
                )
            )
        if len(results) == len(cfgs) and rc == 0:
            return results
        err_file = tmp / "error.pkl"
        failure: BaseException | None = None
        if err_file.exists():
            exc = pickle.loads(err_file.read_bytes())
            if isinstance(exc, BaseException):
                failure = exc
        if failure is None:
            errors = errors or _recorded_aborts(tmp)
            if errors:
                failure = MPIRunError(errors[0])
        if failure is None:
            failure = MPIRunError(
                f"the MPI job ({procs} processes) exited with status {rc} without a result; last output: "
                f"{tail.strip()[-400:] or '(none)'}"
            )
        failure.completed = results  # type: ignore[attr-defined]  # the runs that finished before it
        raise failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _supervise(
    cmd: list[str],
    env: dict[str, str],
    heartbeat: Path,
    idle_limit: float | None,
    timeout: float,
    wall_limit: float | None = None,
) -> tuple[int, list[str], str]:
    """Run the MPI job in its own session, forward its stderr, enforce the idle guard, reap it."""
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    errors: list[str] = []
    tail: list[str] = []
    forward = threading.Thread(target=_forward, args=(proc.stderr, errors, tail), daemon=True)
    forward.start()
    started = time.time()
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                pass
            if wall_limit is not None and time.time() - started > wall_limit:
                _kill_group(proc)
                forward.join(timeout=2.0)
                raise MPIRunError(f"the MPI job did not finish within {wall_limit:g} s; killed it")
            if idle_limit is None:
                continue
            try:
                last = max(started, heartbeat.stat().st_mtime)
            except OSError:
                last = started
            if time.time() - last > idle_limit:
                _kill_group(proc)
                forward.join(timeout=2.0)
                raise MPIRunError(
                    f"no MPI rank made progress for {idle_limit:.0f} s (backend.timeout={timeout:g} s plus "
                    f"grace) and the watchdog did not stop the job; killed it ({' '.join(cmd[:3])} ...)"
                )
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        _kill_group(proc)  # reap anything the launcher left behind
    forward.join(timeout=5.0)
    return rc, errors, "".join(tail)


def _forward(stream: Any, errors: list[str], tail: list[str]) -> None:
    """Copy the job's stderr to ours, holding back ``dmtl: error:`` lines (they become the exception)."""
    marker = "dmtl: error: "
    pending = ""
    fd = stream.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk.decode("utf-8", "replace")
        *lines, pending = pending.split("\n")
        for line in lines:
            text = line.rsplit("\r", 1)[-1]
            if text.startswith(marker):
                msg = text[len(marker) :].removesuffix("; aborting the MPI job")
                if msg not in errors:
                    errors.append(msg)
                continue
            sys.stderr.write(line + "\n")
            tail.append(line + "\n")
            del tail[:-20]
        if "\r" in pending:
            head, _, pending = pending.rpartition("\r")
            sys.stderr.write(head + "\r")
        sys.stderr.flush()
    if pending:
        sys.stderr.write(pending)
        tail.append(pending)
    stream.close()


def _kill_group(proc: subprocess.Popen) -> None:
    """Terminate the job's whole process group (mpiexec, its proxies and ranks), then reap mpiexec."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # mpiexec is gone; make sure its children are too
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        break
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass
