"""Reproduction report of online multi-task relationship learning by ADMM (ALGORITHMS.md section 2).

Usage (from the repository root)::

    python experiments/omtl_report.py          # writes experiments/results/omtl_report.md, omtl_omega.png
    python experiments/omtl_report.py --quick  # fewer rounds and seeds, printed only

Sections
--------
1. C-ADMM on the reference synthetic stream (``omtl_synthetic.npz``, 5 tasks x 10,000 rounds) with the
   reference hyper-parameters: mean cumulative error rate at t = 100, 1000, 5000, 10000 and mistakes per
   task next to the reference code's; the options (exact (u, V) step, margin sub-gradient, logistic loss,
   clean eigendecomposition numerics); ADMM-Single per task.
2. D-ADMM (reference setting: rho 5, eta 70, lambda 0.01, L2-normalised features, 5000 rounds) with 5
   nodes on a ring and on the complete graph and with 100 nodes on a ring, on the same stream
   (normalised) and on a freshly generated one, next to C-ADMM; the learned Omegas next to a hindsight
   task similarity (cosine of per-task least-squares models fitted on the whole stream).
3. Landmine as a stream (29 tasks, every field's samples shuffled per seed, 445 rounds, standardised,
   bias feature): final cumulative error rate and F1 of every method over 5 seeds (mean and standard
   deviation). Every method runs with its defaults (the reference hyper-parameters); nothing is tuned.

Every run goes through :func:`dmtl.runner.run` (the same code as ``dmtl run``), so the communication
figures are the ledger's.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dmtl import runner
from dmtl.algorithms import make_algorithm
from dmtl.backends.local import LocalCommunicator
from dmtl.data import datasets
from dmtl.data.streams import hindsight_similarity, l2_normalize
from dmtl.plotting import plot_omega

OUT = Path(__file__).resolve().parent / "results"
REF_ERROR = {100: 0.256, 1000: 0.1612, 5000: 0.1369, 10000: 0.1406}
REF_MISTAKES = [1307, 1717, 1305, 1540, 1163]
DADMM_HP = ["algorithm.rho=5", "algorithm.eta=70"] + [f"algorithm.lambda{i}=0.01" for i in range(1, 5)]


def _run(overrides: list[str]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = runner.run(None, overrides, progress=False)
    return result, time.perf_counter() - t0


def _at(result: Any, metric: str, t: int) -> float:
    curve = result.curve(metric)
    rows = curve[curve["round"] == t]
    return float(rows["value"].iloc[0]) if len(rows) else float("nan")


def _omega(result: Any) -> np.ndarray:
    cfg = result.config
    alg = make_algorithm(
        cfg["algorithm"]["name"], **{k: v for k, v in cfg["algorithm"].items() if k != "name"}
    )
    return alg.omega(result.state, LocalCommunicator(cfg["topology"]["nodes"]))


def _fmt_matrix(M: np.ndarray) -> str:
    head = "| | " + " | ".join(f"task {k}" for k in range(M.shape[0])) + " |"
    sep = "|---" * (M.shape[0] + 1) + "|"
    rows = [f"| task {i} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for i, row in enumerate(M)]
    return "\n".join([head, sep, *rows])


def _offdiag_corr(A: np.ndarray, B: np.ndarray) -> float:
    iu = np.triu_indices(A.shape[0], 1)
    return float(np.corrcoef(A[iu], B[iu])[0, 1])


def section_cadmm(quick: bool) -> tuple[list[str], dict[str, np.ndarray]]:
    T = 2000 if quick else 10000
    checkpoints = [t for t in REF_ERROR if t <= T]
    base = ["problem.kind=omtl_synthetic", "topology.nodes=5", f"rounds={T}", "eval_every=100"]
    variants = {
        "C-ADMM (reference rules)": ["algorithm.name=c-admm"],
        "C-ADMM, exact (u, V) step": ["algorithm.name=c-admm", "algorithm.variant=exact"],
        "C-ADMM, margin sub-gradient": ["algorithm.name=c-admm", "algorithm.subgradient=margin"],
        "C-ADMM, logistic loss": ["algorithm.name=c-admm", "algorithm.loss=logistic"],
        "C-ADMM, numerics=eigh": ["algorithm.name=c-admm", "algorithm.numerics=eigh"],
        "ADMM-Single": ["algorithm.name=admm-single"],
    }
    results = {}
    lines = [
        "## 1. C-ADMM on the reference synthetic stream",
        "",
        f"`omtl_synthetic.npz`, 5 tasks x {T:,} rounds, task k's t-th example `xs[k, t]`, one task per node; "
        "reference hyper-parameters rho 0.5, eta 240, lambda1..4 = 0.1, 20, 0.1, 0.1 (ADMM-Single: its own, "
        "eta 20, lambda 0.5, 20, 0.5, 0.5, L2-normalised inputs). Mean over tasks of the cumulative error "
        "rate at round t:",
        "",
        "| method | " + " | ".join(f"t = {t}" for t in checkpoints) + " | mistakes per task | time |",
        "|---" * (len(checkpoints) + 3) + "|",
        "| reference code | "
        + " | ".join(f"{REF_ERROR[t]:.4f}" for t in checkpoints)
        + f" | {', '.join(map(str, REF_MISTAKES))} | ~2-3 min |",
    ]
    for label, ov in variants.items():
        result, secs = _run(base + ov)
        results[label] = result
        table = result.state.stats.table
        mistakes = (table[:, 1] + table[:, 2]).astype(int).tolist()
        errs = " | ".join(f"{_at(result, 'error_rate', t):.4f}" for t in checkpoints)
        lines.append(f"| {label} | {errs} | {', '.join(map(str, mistakes))} | {secs:.2f} s |")
    ref = results["C-ADMM (reference rules)"]
    if T == 10000:
        table = ref.state.stats.table
        mistakes = table[:, 1] + table[:, 2]
        ok_err = all(abs(_at(ref, "error_rate", t) - v) <= 0.002 for t, v in REF_ERROR.items())
        ok_mis = bool(np.all(np.abs(mistakes - REF_MISTAKES) <= 0.01 * np.array(REF_MISTAKES)))
        lines += [
            "",
            f"Acceptance: every error rate within 0.002 of the reference: **{ok_err}**; mistakes per task "
            f"within 1%: **{ok_mis}** (they are equal: the vectorised rules reproduce all 50,000 "
            "predictions of the reference code; `tests/test_admm_mtrl.py` checks this against a "
            "transliteration of it).",
        ]
    eigh_gap = abs(results["C-ADMM, numerics=eigh"].final("error_rate") - ref.final("error_rate"))
    single = results["ADMM-Single"]
    per_task = [single.final(f"error_rate_task{k}") for k in range(5)]
    led = ref.summary["ledger"]
    lines += [
        "",
        "ADMM-Single, final cumulative error rate per task: "
        + ", ".join(f"{r:.4f}" for r in per_task)
        + " (the reference code lands near 0.20 to 0.23).",
        "",
        f"Communication of C-ADMM: {led['floats'] / T:.0f} floats per round (every task uploads (w_k, z_k) "
        f"and downloads (u, v_k): 4 d = 36 floats), {led['bytes'] / 1e6:.2f} MB in total.",
        "",
        "Notes: the exact (u, V) step solves the ADMM sub-problem with the MTRL penalty "
        "(lambda4/2) tr(V Omega^-1 V^T) included (see the module docstring of `dmtl.algorithms.admm_mtrl`); "
        "the hyper-parameters are the reference's, chosen for the reference rules. `numerics=eigh` computes "
        "Omega and pinv(Omega) with a clean eigendecomposition also in the first rounds, where V V^T is "
        "singular and the reference's pinv holds rounding noise of size ~1e9 on which its predictions "
        "depend: the trajectory then departs from the reference's in the first rounds and the final error "
        f"rate differs by {eigh_gap:.4f}.",
    ]
    omegas = {"C-ADMM": _omega(ref)}
    return lines, omegas


def section_dadmm(quick: bool) -> tuple[list[str], dict[str, np.ndarray]]:
    T = 1000 if quick else 5000
    configs = {
        "D-ADMM, 5 nodes, ring": ["topology.kind=ring", "topology.nodes=5"],
        "D-ADMM, 5 nodes, complete": ["topology.kind=complete", "topology.nodes=5"],
        "D-ADMM, 100 nodes, ring": ["topology.kind=ring", "topology.nodes=100"],
        "D-ADMM, 100 nodes, ring, Metropolis": [
            "topology.kind=ring",
            "topology.nodes=100",
            "algorithm.mixing=metropolis",
        ],
        "D-ADMM, 5 nodes, ring, reference Omega order": [
            "topology.kind=ring",
            "topology.nodes=5",
            "algorithm.omega_from=own",
        ],
    }
    streams = {
        "`omtl_synthetic.npz`, L2-normalised": ["problem.kind=omtl_synthetic", "problem.normalize=true"],
        "fresh Fourier stream (seed 0), L2-normalised": [
            "problem.kind=fourier_stream",
            "problem.tasks=5",
            "problem.rounds=10000",
        ],
    }
    lines = [
        "## 2. D-ADMM",
        "",
        f"Reference D-ADMM setting: rho 5, eta 70, lambda1..4 = 0.01, {T:,} rounds; every round every node "
        "mixes (W, Z, V) with its neighbours (reference weights: the average of the neighbours' states, own "
        "state excluded), draws a random task and learns from its next example (node i uses the examples "
        "i, i + N, ... of every task). Error rates are cumulative over all the nodes' predictions "
        "(N per round). C-ADMM rows: one task per node, all 5 tasks every round.",
        "",
    ]
    omegas: dict[str, np.ndarray] = {}
    for stream_label, sov in streams.items():
        lines += [
            f"### {stream_label}",
            "",
            "| method | error at 1000 | error at end | worst node | consensus error | Omega spread | "
            "floats/message | MB sent | time |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        rows_c = {
            "C-ADMM (reference hyper-parameters)": ["algorithm.name=c-admm", "topology.nodes=5"],
            "C-ADMM (D-ADMM's hyper-parameters)": ["algorithm.name=c-admm", "topology.nodes=5", *DADMM_HP],
        }
        for label, ov in rows_c.items():
            result, secs = _run(sov + ov + [f"rounds={T}", "eval_every=1000"])
            lines.append(
                f"| {label} | {_at(result, 'error_rate', 1000):.4f} | {result.final('error_rate'):.4f} | "
                f"- | - | - | {2 * 9} up, {2 * 9} down | {result.summary['ledger']['bytes'] / 1e6:.2f} | "
                f"{secs:.1f} s |"
            )
            if label.startswith("C-ADMM (reference") and stream_label.startswith("`omtl"):
                omegas["C-ADMM, normalised stream"] = _omega(result)
        for label, ov in configs.items():
            try:
                result, secs = _run(sov + ["algorithm.name=d-admm", *ov, f"rounds={T}", "eval_every=1000"])
            except (np.linalg.LinAlgError, FloatingPointError, ValueError) as exc:
                lines.append(f"| {label} | diverged: {type(exc).__name__} | | | | | | | |")
                continue
            K, d = 5, 9
            lines.append(
                f"| {label} | {_at(result, 'error_rate', 1000):.4f} | {result.final('error_rate'):.4f} | "
                f"{result.final('error_rate_node_max'):.4f} | {result.final('consensus_error'):.3f} | "
                f"{result.final('omega_spread'):.3f} | {3 * d * K} | "
                f"{result.summary['ledger']['bytes'] / 1e6:.1f} | {secs:.1f} s |"
            )
            if (
                stream_label.startswith("`omtl")
                and "Metropolis" not in label
                and "reference Omega" not in label
            ):
                omegas[label] = _omega(result)
        lines.append("")
    lines += [
        "*Consensus error*: root-mean-square distance of the nodes' W to their average, relative to the "
        "average's norm. *Omega spread*: largest Frobenius distance of a node's Omega to the nodes' average. "
        "*Reference Omega order* (`omega_from=own`): a node's pinv(Omega) comes from its own V before the "
        "mix (the reference code's order); our default recomputes Omega from the mixed V before using it. "
        "With the reference order, 100 nodes on a ring diverge (P from a near-singular own Omega "
        "multiplies a different, mixed V).",
        "",
    ]
    return lines, omegas


def section_omega(omegas: dict[str, np.ndarray], quick: bool) -> list[str]:
    s = datasets.load_stream()
    T = 2000 if quick else 10000
    sim = hindsight_similarity(l2_normalize(s.xs[:, :T]), s.ys[:, :T])
    lines = [
        "### Learned task covariance Omega (omtl_synthetic)",
        "",
        "Hindsight similarity (cosine of the tasks' least-squares linear models on the whole stream):",
        "",
        _fmt_matrix(sim),
        "",
    ]
    for label, om in omegas.items():
        lines += [
            f"{label} (correlation of its off-diagonal entries with the hindsight similarity's: "
            f"{_offdiag_corr(om, sim):+.2f}):",
            "",
            _fmt_matrix(om),
            "",
        ]
    if not quick:
        OUT.mkdir(parents=True, exist_ok=True)
        plot_omega(
            {"hindsight similarity": sim, **omegas},
            OUT / "omtl_omega.png",
            title="omtl_synthetic: learned Omega vs hindsight task similarity",
        )
        lines += ["Heat-maps: `omtl_omega.png`.", ""]
    return lines


def section_landmine(quick: bool) -> list[str]:
    seeds = range(2) if quick else range(5)
    base = ["problem.kind=dataset_stream", "problem.dataset=landmine", "rounds=445", "eval_every=445"]
    methods = {
        "C-ADMM (reference rules)": ["algorithm.name=c-admm", "topology.nodes=29"],
        "C-ADMM (exact (u, V) step)": [
            "algorithm.name=c-admm",
            "algorithm.variant=exact",
            "topology.nodes=29",
        ],
        "D-ADMM, 29 nodes, ring": ["algorithm.name=d-admm", "topology.kind=ring", "topology.nodes=29"],
        "D-ADMM, 29 nodes, complete": [
            "algorithm.name=d-admm",
            "topology.kind=complete",
            "topology.nodes=29",
        ],
        "ADMM-Single": ["algorithm.name=admm-single", "topology.nodes=29"],
        "OMTL gradient, fixed interaction (b = K)": ["algorithm.name=omtl-gradient", "topology.nodes=29"],
        "OMTL gradient, learned interaction": [
            "algorithm.name=omtl-gradient",
            "algorithm.interaction=learned",
            "topology.nodes=29",
        ],
        "pooled online model (perceptron)": ["algorithm.name=pooled-online", "topology.nodes=29"],
    }
    lines = [
        "## 3. Landmine as a stream",
        "",
        f"29 fields = tasks, every field's samples shuffled (seed s = {', '.join(map(str, seeds))}), "
        "truncated to the smallest field (445 rounds), features standardised with a bias feature appended; "
        "every method with its default (reference) hyper-parameters, nothing tuned. Final cumulative error "
        "rate (mean over tasks) and F1 of the positive class (mines; mean over tasks), mean +- standard "
        "deviation over the seeds. About 6.1% of the samples are mines: predicting 'no mine' always errs "
        "on 6.1% and has F1 = 0, so the error rate alone favours timid models; F1 tells them apart.",
        "",
        "| method | error rate | F1 | precision | recall | MB sent | time/run |",
        "|---|---|---|---|---|---|---|",
    ]
    pos = []
    for label, ov in methods.items():
        err, f1, prec, rec, mb, secs = [], [], [], [], [], []
        for seed in seeds:
            result, s = _run(base + ov + [f"seed={seed}"])
            err.append(result.final("error_rate"))
            f1.append(result.final("f1"))
            prec.append(result.final("precision"))
            rec.append(result.final("recall"))
            mb.append(result.summary["ledger"]["bytes"] / 1e6)
            secs.append(s)
            if not pos:
                pos.append(_positive_fraction(result))
        lines.append(
            f"| {label} | {np.mean(err):.4f} +- {np.std(err):.4f} | {np.mean(f1):.3f} +- {np.std(f1):.3f} | "
            f"{np.mean(prec):.3f} | {np.mean(rec):.3f} | {np.mean(mb):.1f} | {np.mean(secs):.2f} s |"
        )
    lines.append(f"| always 'no mine' | {pos[0]:.4f} | 0 | 0 | 0 | 0 | - |")
    lines.append("")
    return lines


def _positive_fraction(result: Any) -> float:
    """Fraction of label +1 among the predictions counted (confusion columns TN, FN, FP, TP)."""
    counts = result.state.stats.table.reshape(-1, 4).sum(axis=0)
    return float((counts[1] + counts[3]) / counts.sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and seeds; print only")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    lines = [
        "# Online multi-task relationship learning by ADMM: reproduction report",
        "",
        "Generated by `python experiments/omtl_report.py` "
        f"({time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start: "
        "wall times are indicative only, the machine is shared). Algorithms: `dmtl.algorithms.admm_mtrl`; "
        "streams: `dmtl.data.streams`.",
        "",
    ]
    cadmm_lines, omegas = section_cadmm(args.quick)
    lines += cadmm_lines + [""]
    dadmm_lines, d_omegas = section_dadmm(args.quick)
    lines += dadmm_lines
    lines += section_omega({**omegas, **d_omegas}, args.quick)
    lines += section_landmine(args.quick)
    lines.append(f"Total time: {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    if args.quick:
        print(text)
    else:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "omtl_report.md").write_text(text)
        print(f"wrote {OUT / 'omtl_report.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
