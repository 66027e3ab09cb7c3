"""``dmtl demo``: the three AltGDmin variants on one ring, side by side.

Noiseless low-rank tasks (d = K = 200, r = 2, n = 40) on 10 nodes in a ring; centralised AltGDmin
through a server, Dec-AltGDmin with 10 consensus rounds per iteration and Dif-AltGDmin with one
combine round. Prints the final subspace distance and the communication each spent, and plots the
subspace distance against iterations, bytes and virtual time.
"""

from __future__ import annotations

from pathlib import Path

from dmtl.config import builtin_experiments
from dmtl.plotting import plot_curves
from dmtl.runner import RunResult, run

__all__ = ["demo"]

VARIANTS = (
    ("AltGDmin (server)", "altgdmin"),
    ("Dec-AltGDmin (T_con=10)", "dec-altgdmin"),
    ("Dif-AltGDmin", "dif-altgdmin"),
)


def demo(out: str | Path = "dmtl-demo", rounds: int = 200, echo: bool = True) -> dict[str, RunResult]:
    """Run the comparison; write ``demo.png`` and one run directory per variant under ``out``."""
    out = Path(out)
    # the built-in file itself: a name would let a "lowrank" file or folder in the working directory win
    experiment = builtin_experiments()["lowrank"]
    results: dict[str, RunResult] = {}
    for label, name in VARIANTS:
        results[label] = run(
            experiment,
            [
                f"algorithm.name={name}",
                f"rounds={rounds}",
                "eval_every=5",
                f"name={name}",
                "output.plots=false",
            ],
            out=out / name,
            progress=False,
        )
    plot = plot_curves(
        {label: r.history for label, r in results.items()},
        "sd_f_max",
        out / "demo.png",
        title="max subspace distance over nodes (ring, L=10, d=K=200, r=2)",
    )
    if echo:
        header = (
            f"{'variant':<26}{'SD_F max':>10}{'rel. error':>12}{'messages':>10}{'MB':>9}"
            f"{'comm rds':>9}{'virt. s':>9}{'wall s':>8}"
        )
        print(header)
        print("-" * len(header))
        for label, r in results.items():
            m, led = r.summary["final_metrics"], r.summary["ledger"]
            print(
                f"{label:<26}{m['sd_f_max']:>10.2e}{m['rel_error']:>12.2e}{led['messages']:>10.0f}"
                f"{led['bytes'] / 1e6:>9.2f}{led['comm_rounds']:>9.0f}{led['virtual_time']:>9.3f}"
                f"{r.summary['wall_time']:>8.2f}"
            )
        print(f"plot: {plot}")
    return results
