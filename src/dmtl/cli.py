"""The ``dmtl`` command.

``dmtl run CONFIG_OR_NAME [section.key=value ...] --out DIR``
    run an experiment from a YAML file, a run directory or a built-in experiment name, with dotted
    overrides;
``dmtl list``
    algorithms, topologies, mixing weights, data sets and built-in experiments;
``dmtl demo``
    compare AltGDmin, Dec-AltGDmin and Dif-AltGDmin on a ring: a table and a plot;
``dmtl plot RUN_DIR ... [--metric M] --out FILE``
    overlay saved runs against rounds, bytes and virtual time;
``dmtl bench [NAME ...]``
    the performance benchmarks (``benchmarks/``).

Errors in the input print one line (``dmtl: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dmtl.errors import DmtlError

__all__ = ["main"]


def _launch_rank() -> int:
    """This process's rank when a user's ``mpiexec``/``srun`` started it (0 otherwise).

    Read from the launcher's environment so that mpi4py is not imported for a local run.
    """
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from dmtl.runner import run

    result = run(args.config, args.overrides, out=args.out, progress=None if not args.quiet else False)
    if _launch_rank() == 0:  # under a user's mpiexec every rank returns the same result
        _print_summary(result.summary, result.out)
    return 0


def _print_summary(summary: dict, out: Path | None) -> None:
    led = summary["ledger"]
    print(f"{summary['algorithm']}: {summary['rounds']} iterations (stopped by {summary['stopped_by']})")
    for key, value in sorted(summary["final_metrics"].items()):
        print(f"  {key:>12} = {value:.6g}")
    print(
        f"  messages {led['messages']:.0f}"
        + (f" ({led['lost']:.0f} lost)" if led.get("lost") else "")
        + f", bytes {led['bytes']:.4g}, communication rounds "
        f"{led['comm_rounds']:.0f}, virtual time {led['virtual_time']:.4g} s, "
        f"wall {summary['wall_time']:.3g} s"
    )
    if out is not None:
        print(f"  written to {out}")


def _cmd_list(args: argparse.Namespace) -> int:
    from dmtl.algorithms import ALGORITHMS
    from dmtl.config import builtin_experiments
    from dmtl.data.datasets import DATASETS
    from dmtl.network.channel import COMPRESSIONS
    from dmtl.network.topology import MIXING_KINDS, TOPOLOGIES

    print("algorithms:")
    for name, cls in sorted(ALGORITHMS.items()):
        print(f"  {name:<16} [{cls.network}] {cls.summary}")
    from dmtl.data import PROBLEMS

    print("problem kinds (problem.kind=...):")
    for name, kind in sorted(PROBLEMS.items()):
        print(f"  {name:<16} {kind.summary}")
    print("topologies:\n  " + ", ".join(sorted(TOPOLOGIES)))
    print("mixing weights:\n  " + ", ".join(MIXING_KINDS))
    print(
        "lossy graph links (faults.*):\n  drop_prob in [0, 1); compression "
        + ", ".join(COMPRESSIONS)
        + " (bits for quantize, topk fraction for topk)"
    )
    print("data sets (read from DMTL_DATA or ../shared/data):")
    for name, info in DATASETS.items():
        print(f"  {name:<16} {info.filename:<26} {info.description}")
    print("built-in experiments:\n  " + ", ".join(sorted(builtin_experiments())))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from dmtl.demo import demo

    demo(out=Path(args.out), rounds=args.rounds)
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from dmtl.plotting import plot_curves, plot_run
    from dmtl.results import read_run

    histories = {}
    for path in args.runs:
        try:
            history, summary, _ = read_run(path)
        except FileNotFoundError as exc:
            raise DmtlError(str(exc)) from None
        label = Path(path).name if Path(path).name not in histories else str(path)
        histories[label] = history
    out = Path(args.out)
    if args.metric is not None:
        known = set().union(*(set(h["metric"]) for h in histories.values()))
        if args.metric not in known:
            raise DmtlError(
                f"metric {args.metric!r} is in none of the runs; their metrics: {', '.join(sorted(known))}"
            )
    try:
        if args.metric is None:
            plot_run(histories, out)
        else:
            plot_curves(histories, args.metric, out)
    except OSError as exc:  # a missing folder or an unwritable file is an input error, not a crash
        raise DmtlError(f"cannot write the plot {out}: {exc.strerror or exc}; check --out") from None
    print(f"plot: {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import dmtl

    # a source checkout (editable install): the suite lives next to src/, at the repository root
    root = Path(dmtl.__file__).resolve().parents[2]
    if (root / "benchmarks" / "__main__.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from benchmarks.__main__ import main as bench_main
    except ImportError:
        print(
            "dmtl: error: the benchmarks live in the source repository's benchmarks/ folder; run "
            "`dmtl bench` from the repository root (or `python -m benchmarks`)",
            file=sys.stderr,
        )
        return 2
    return bench_main(args.names + (["--quick"] if args.quick else []), prog="dmtl bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmtl", description="Distributed multi-task learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run an experiment (YAML file or built-in name) with overrides")
    p.add_argument(
        "config", help="a YAML file, a run directory (its config.yaml) or a built-in experiment (`dmtl list`)"
    )
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. topology.kind=ring")
    p.add_argument("--out", "-o", default=None, help="run directory to write")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("list", help="algorithms, topologies, weights, data sets, experiments")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("demo", help="compare the AltGDmin variants on a ring; table and plot")
    p.add_argument("--out", "-o", default="dmtl-demo", help="folder for the plot and run data")
    p.add_argument("--rounds", type=int, default=200)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("plot", help="overlay saved runs: a metric against rounds, bytes and virtual time")
    p.add_argument("runs", nargs="+", help="run directories (written by `dmtl run --out`)")
    p.add_argument("--metric", "-m", default=None, help="one metric (default: every metric, one row each)")
    p.add_argument("--out", "-o", default="runs.png", help="output PNG file")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("bench", help="performance benchmarks (writes benchmarks/RESULTS.md)")
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DmtlError as exc:
        if _launch_rank() == 0:  # an error every rank raises alike is printed once
            print(f"dmtl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
