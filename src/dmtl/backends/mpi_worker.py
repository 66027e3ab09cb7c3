"""The program every rank runs when dmtl launches an MPI job itself (:func:`dmtl.backends.mpi.launch`).

``python -m dmtl.backends.mpi_worker JOB.pkl``: ``JOB.pkl`` holds the resolved configurations to run one
after another (``runs``: list of ``(config, out_dir)``), whether to show progress, and the folder where
rank 0 writes ``result_<i>.pkl`` (history, summary, config, timing, out) for the launcher to read, or
``error.pkl`` (the exception) when every rank failed alike. Not meant to be started by hand: under your
own ``mpiexec`` run ``python -m dmtl run ... backend.name=mpi`` instead.
"""

from __future__ import annotations

import pickle
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write(
            "usage: python -m dmtl.backends.mpi_worker JOB.pkl (started by dmtl's MPI launcher)\n"
        )
        return 2
    job = pickle.loads(Path(argv[0]).read_bytes())
    folder = Path(job["dir"])

    from mpi4py import MPI

    from dmtl.backends import mpi as mpi_backend
    from dmtl.runner import execute

    rank = MPI.COMM_WORLD.Get_rank()
    # hydra (-disable-auto-cleanup) signals SIGUSR1 when a process exits with an error; during a run the
    # communicator turns it into a diagnosis, outside a run it must not kill rank 0 before it reports
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    mpi_backend.start_heartbeat()
    for i, (cfg, out) in enumerate(job["runs"]):
        try:
            result = execute(cfg, out, progress=bool(job["progress"]) and rank == 0)
        except Exception as exc:  # every rank failed alike (otherwise the job was aborted)
            if rank == 0:
                try:
                    data = pickle.dumps(exc)
                except Exception:
                    data = pickle.dumps(mpi_backend.MPIRunError(f"{type(exc).__name__}: {exc}"))
                (folder / "error.pkl").write_bytes(data)
            return 2
        if rank == 0:
            payload = {
                "history": result.history,
                "summary": result.summary,
                "config": result.config,
                "timing": result.timing,
                "out": None if result.out is None else str(result.out),
            }
            tmp = folder / f"result_{i}.pkl.tmp"
            tmp.write_bytes(pickle.dumps(payload))
            tmp.replace(folder / f"result_{i}.pkl")
    mpi_backend._ACTIVITY["in_mpi"] = True  # MPI_Finalize at exit: no heartbeat from here on
    return 0


if __name__ == "__main__":
    sys.exit(main())
