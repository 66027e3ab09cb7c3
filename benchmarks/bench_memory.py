r"""Peak memory of a large gossip run next to the size of its state.

N = 1e5 nodes on a ring (Metropolis weights), d = 100 floats per node: the state ``X`` is
``N d 8 = 80 MB``. Each run is a fresh subprocess going through ``LocalCommunicator`` (topology, weights,
ledger and all), 20 rounds of:

* ``gossip``: ``X = comm.mix(X, W)`` (the target applies to this run);
* ``diffusion``: ``G = grad(X)``; ``X = comm.mix(X - eta * G, W)``, the pattern of
  ``DifAltGDmin.step`` (``grad`` a stand-in local gradient of X's shape);
* ``diffusion-inplace``: the same update computed in the gradient's buffer (``G *= -eta; G += X``) and
  the old state released before combining, as a memory-conscious step would do it.

Peak memory: the run's peak resident set (``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` elsewhere)
minus that of a baseline subprocess that only imports the same modules (numpy, scipy, dmtl), and,
independently, the ``tracemalloc`` peak of the run (numpy reports its buffers to tracemalloc; started
after the imports) in another subprocess. *Ratio* = peak / state bytes (target: <= 3).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from benchmarks.common import fmt_bytes, markdown_table

__all__ = ["run", "markdown"]

TARGET = 3.0
MODES = ("gossip", "diffusion", "diffusion-inplace")

_IMPORTS = """
import json, resource, sys, tracemalloc


def peak_rss():
    # VmHWM: the peak RSS of this process image. ru_maxrss is not used first: Linux carries the
    # parent's RSS at fork time over exec, so a small child of a big parent would report the parent's.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
import numpy as np
import scipy.sparse
from dmtl.backends.local import LocalCommunicator
from dmtl.network.topology import mixing_matrix, ring
"""

_RUN = """
N, d, rounds = (int(a) for a in sys.argv[1:4])
mode, trace = sys.argv[4], sys.argv[5] == "1"
if trace:
    tracemalloc.start()
top = ring(N)
W = mixing_matrix(top, "metropolis")
comm = LocalCommunicator(N, topology=top, mixing=W)
X = np.random.default_rng(0).standard_normal((N, d))
eta = 1e-3
for _ in range(rounds):
    if mode == "gossip":
        X = comm.mix(X, W)
    elif mode == "diffusion":  # the pattern of DifAltGDmin.step: U = comm.mix(U - eta * G, W)
        G = np.tanh(X)  # stand-in local gradient, one (N, d) array
        X = comm.mix(X - eta * G, W)
        del G
    else:  # "diffusion-inplace": the same update, adapting in the gradient's buffer
        G = np.tanh(X)
        G *= -eta
        G += X
        del X
        X = comm.mix(G, W)
        del G
peak = tracemalloc.get_traced_memory()[1] if trace else 0
print(json.dumps({"maxrss": peak_rss(),
                  "tracemalloc_peak": peak, "check": float(X[0, 0]),
                  "messages": comm.ledger_totals()["messages"]}))
"""

_BASELINE = """
print(json.dumps({"maxrss": peak_rss()}))
"""


def _subprocess(code: str, *args: object, timeout: float = 300.0) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory benchmark subprocess failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns ``{'n_nodes', 'd', 'rounds', 'state_bytes', 'baseline_maxrss', 'runs', ...}``."""
    n, d, rounds = (50_000, 20, 3) if quick else (100_000, 100, 20)
    state = float(n * d * 8)
    base = float(min(_subprocess(_IMPORTS + _BASELINE)["maxrss"] for _ in range(1 if quick else 3)))
    runs = {}
    for mode in MODES:
        if quick:  # one subprocess per mode: RSS then includes tracemalloc's own (small) overhead
            rss = traced = _subprocess(_IMPORTS + _RUN, n, d, rounds, mode, 1)
        else:
            rss = _subprocess(_IMPORTS + _RUN, n, d, rounds, mode, 0)
            traced = _subprocess(_IMPORTS + _RUN, n, d, rounds, mode, 1)
        expected = 2.0 * n * rounds  # a ring: two messages per node per round
        if rss["messages"] != expected or traced["messages"] != expected:
            raise AssertionError(f"memory run counted {rss['messages']} messages, expected {expected}")
        net = float(rss["maxrss"]) - base
        runs[mode] = {
            "maxrss_bytes": float(rss["maxrss"]),
            "net_bytes": net,
            "ratio": net / state,
            "tracemalloc_peak_bytes": float(traced["tracemalloc_peak"]),
            "tracemalloc_ratio": traced["tracemalloc_peak"] / state,
        }
    gossip = runs["gossip"]
    worst = max(gossip["ratio"], gossip["tracemalloc_ratio"])
    return {
        "n_nodes": n,
        "d": d,
        "rounds": rounds,
        "state_bytes": state,
        "baseline_maxrss_bytes": base,
        "runs": runs,
        "target": TARGET,
        "met": bool(worst <= TARGET),
    }


def markdown(results: dict[str, Any]) -> str:
    r = results
    rows = [
        [
            mode,
            fmt_bytes(v["maxrss_bytes"]),
            fmt_bytes(v["net_bytes"]),
            f"{v['ratio']:.2f}",
            fmt_bytes(v["tracemalloc_peak_bytes"]),
            f"{v['tracemalloc_ratio']:.2f}",
        ]
        for mode, v in r["runs"].items()
    ]
    g = r["runs"]["gossip"]
    return (
        "\n".join(
            [
                "## Peak memory of a gossip run (`memory`)",
                "",
                f"N = {r['n_nodes']:,} nodes on a ring (Metropolis), d = {r['d']}, {r['rounds']} rounds "
                f"through `LocalCommunicator.mix`, each run in a fresh subprocess. State X: N d 8 = "
                f"**{fmt_bytes(r['state_bytes'])}**. `gossip`: `X = comm.mix(X, W)`; `diffusion`: "
                "`G = grad(X)`, `X = comm.mix(X - eta * G, W)` (the pattern of `DifAltGDmin.step`: state, "
                "gradient, scaled gradient, adapted state and mixed state alive together); "
                "`diffusion-inplace`: the same update adapted in the gradient's buffer, old state released "
                "before the combine. Net peak = peak RSS (VmHWM) of the run - that of a subprocess that "
                f"only imports numpy, scipy and dmtl ({fmt_bytes(r['baseline_maxrss_bytes'])}); the "
                "tracemalloc peak (buffers allocated after the imports) comes from a separate run. "
                "Ratio = peak / state.",
                "",
                markdown_table(
                    ["run", "peak RSS", "net peak", "ratio", "tracemalloc peak", "ratio"],
                    rows,
                ),
                "",
                f"**Headline:** the gossip run peaks at {g['ratio']:.2f}x its state by RSS "
                f"({g['tracemalloc_ratio']:.2f}x by tracemalloc); target <= {r['target']:g}x: "
                f"{'met' if r['met'] else 'NOT met'}. "
                + "; ".join(
                    f"{m}: {v['ratio']:.2f}x ({v['tracemalloc_ratio']:.2f}x)"
                    for m, v in r["runs"].items()
                    if m != "gossip"
                )
                + ".",
            ]
        )
        + "\n"
    )
