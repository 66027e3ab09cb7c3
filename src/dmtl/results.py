"""Run directories: what a run writes and how to read it back.

A run directory holds

``config.yaml``   the resolved configuration (rerunning it reproduces the run);
``metrics.csv``   tidy history: round, metric, value, cumulative messages, floats, bytes,
                  communication rounds and virtual time; bitwise identical across reruns;
``timing.csv``    round and cumulative wall time (kept apart because it is never reproducible);
``summary.json``  final metrics, ledger totals, wall and virtual time, package versions;
``*.png``         plots of every metric against rounds, bytes and virtual time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from dmtl.config import load_yaml
from dmtl.errors import DmtlError

if TYPE_CHECKING:
    from dmtl.runner import RunResult

__all__ = ["OutputError", "write_run", "read_run"]


class OutputError(DmtlError, OSError):
    """The run directory could not be written.

    An ``OSError`` for callers that catch those, and a ``DmtlError`` so that the command line prints one
    line instead of a traceback.
    """


def write_run(result: RunResult, out: str | Path) -> Path:
    """Write ``result`` into the directory ``out`` (created if needed); return its path."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(result.config, sort_keys=False))
        result.history.to_csv(out / "metrics.csv", index=False, float_format="%.17g")
        result.timing.to_csv(out / "timing.csv", index=False)
        (out / "summary.json").write_text(json.dumps(result.summary, indent=2, default=float) + "\n")
        if result.config.get("output", {}).get("plots", True) and not result.history.empty:
            from dmtl.plotting import plot_run

            plot_run({result.config["name"]: result.history}, out / "curves.png")
    except OSError as exc:
        where = exc.filename or out
        raise OutputError(f"cannot write the run directory {out} ({where}): {exc.strerror or exc}") from exc
    return out


def read_run(path: str | Path) -> tuple[pd.DataFrame, dict, dict]:
    """Read a run directory: (history, summary, config)."""
    path = Path(path)
    if not (path / "metrics.csv").exists():
        raise FileNotFoundError(f"{path} is not a run directory (no metrics.csv)")
    history = pd.read_csv(path / "metrics.csv")
    summary = json.loads((path / "summary.json").read_text())
    config = load_yaml((path / "config.yaml").read_text())
    return history, summary, config
