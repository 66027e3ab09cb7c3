"""Curves of metrics against rounds, cumulative bytes and virtual time, several runs overlaid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["plot_run", "plot_curves", "plot_omega"]

_AXES = (("round", "iteration"), ("bytes", "cumulative MB sent"), ("virtual_time", "virtual time [s]"))
_SCALE = {"bytes": 1e-6}


def plot_curves(
    histories: Mapping[str, pd.DataFrame],
    metric: str,
    path: str | Path,
    x_axes: Sequence[str] = ("round", "bytes", "virtual_time"),
    logy: bool | None = None,
    title: str | None = None,
) -> Path:
    """One figure with a panel per x axis, one line per run, for ``metric``.

    Parameters
    ----------
    histories : mapping label -> tidy history (``RunResult.history``)
    metric : name of the metric to plot
    path : output file (PNG)
    x_axes : columns to plot against
    logy : log scale on y (default: when all values are positive)
    """
    labels = dict(_AXES)
    fig, axes = plt.subplots(1, len(x_axes), figsize=(4.2 * len(x_axes), 3.4), squeeze=False)
    values_all = []
    for label, hist in histories.items():
        rows = hist[hist["metric"] == metric]
        if rows.empty:
            continue
        values_all.append(rows["value"].to_numpy())
        for ax, x in zip(axes[0], x_axes, strict=True):
            ax.plot(rows[x].to_numpy() * _SCALE.get(x, 1.0), rows["value"].to_numpy(), label=label, lw=1.6)
    if logy is None:
        logy = bool(values_all) and all(np.all(v > 0) for v in values_all)
    for ax, x in zip(axes[0], x_axes, strict=True):
        ax.set_xlabel(labels.get(x, x))
        ax.set_ylabel(metric)
        if logy:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(histories: Mapping[str, pd.DataFrame], path: str | Path) -> Path:
    """All metrics of the runs, one row of panels per metric."""
    metrics = sorted(set().union(*(set(h["metric"]) for h in histories.values())))
    path = Path(path)
    fig, axes = plt.subplots(len(metrics), 3, figsize=(12.6, 3.0 * len(metrics)), squeeze=False)
    labels = dict(_AXES)
    for row, metric in zip(axes, metrics, strict=True):
        for ax, (x, xlabel) in zip(row, _AXES, strict=True):
            positive = True
            for label, hist in histories.items():
                rows = hist[hist["metric"] == metric]
                if rows.empty:
                    continue
                positive &= bool(np.all(rows["value"] > 0))
                ax.plot(rows[x] * _SCALE.get(x, 1.0), rows["value"], label=label, lw=1.5)
            if positive:
                ax.set_yscale("log")
            ax.set_xlabel(labels.get(x, xlabel))
            ax.set_ylabel(metric)
            ax.grid(True, which="both", alpha=0.3)
        row[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_omega(
    matrices: Mapping[str, np.ndarray],
    path: str | Path,
    title: str | None = None,
    task_labels: Sequence[str] | None = None,
) -> Path:
    """Heat-maps of task-relationship matrices side by side (e.g. learned Omegas and a true similarity).

    Parameters
    ----------
    matrices : mapping label -> (K, K) array
        One panel each, in order; every panel has its own colour scale, symmetric about 0 when the
        matrix has negative entries.
    path : output file (PNG)
    title : figure title
    task_labels : tick labels of the K tasks (default 0..K-1; hidden for K > 30)
    """
    items = [(label, np.asarray(m, dtype=float)) for label, m in matrices.items()]
    if not items:
        raise ValueError("plot_omega needs at least one matrix")
    n = len(items)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    for ax, (label, M) in zip(axes[0], items, strict=True):
        if M.ndim != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"plot_omega: {label!r} must be a square matrix, got shape {M.shape}")
        lo, hi = float(np.min(M)), float(np.max(M))
        if lo < 0:
            bound = max(abs(lo), abs(hi)) or 1.0
            im = ax.imshow(M, cmap="RdBu_r", vmin=-bound, vmax=bound)
        else:
            im = ax.imshow(M, cmap="viridis", vmin=0.0, vmax=hi if hi > 0 else 1.0)
        K = M.shape[0]
        if K <= 30:
            ticks = np.arange(K)
            labels = list(task_labels) if task_labels is not None else [str(k) for k in ticks]
            ax.set_xticks(ticks, labels, fontsize=7)
            ax.set_yticks(ticks, labels, fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(label, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
