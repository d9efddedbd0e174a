"""Line plots, seed-band plots and bar charts of run histories (matplotlib, Agg backend), written atomically as
PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

from dflbench.io import atomic_write_bytes


def line_plot(path: str | Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str,
              ylabel: str, title: str | None = None, hline: float | None = None) -> Path:
    """One line per `curves[label] = (xs, ys)`, an optional dotted horizontal reference at `hline`; returns `path`."""
    plt, fig, axes = _figure()
    ax = axes[0][0]
    for label, (xs, ys) in curves.items():
        ax.plot(list(xs), list(ys), label=label)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path, dpi=120)

def _figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6, 4), **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(nrows, ncols, figsize=size, squeeze=False, **kwargs)


def _save(plt, fig, path: str | Path, dpi: int = 100) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def band_plot(path: str | Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
              xlabel: str, ylabel: str, title: str | None = None, hline: float | None = None,
              logy: bool = False) -> Path:
    """One line per `curves[label] = (xs, mean, std)` with a shaded mean +- std band (over seeds)."""
    plt, fig, axes = _figure()
    ax = axes[0][0]
    for label, (xs, mean, std) in curves.items():
        xs, mean, std = list(xs), list(mean), list(std)
        (line,) = ax.plot(xs, mean, label=label)
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2, linewidth=0)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle=":", linewidth=1)
    if logy:
        ax.set_yscale("symlog", linthresh=1e-6)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def bar_panels(path: str | Path, labels: Sequence[str],
               panels: Mapping[str, tuple[Sequence[float | None], Sequence[float]]], title: str | None = None) -> Path:
    """Side-by-side bar charts sharing `labels`: `panels[ylabel] = (means, stds)`; a None mean leaves its bar
    out (e.g. a target never reached)."""
    plt, fig, axes = _figure(1, len(panels), (4 * len(panels), 0.25 * len(labels) + 2), sharey=True)
    for ax, (ylabel, (means, stds)) in zip(axes[0], panels.items()):
        ys = [float("nan") if m is None else m for m in means]
        ax.barh(range(len(labels)), ys, xerr=list(stds), capsize=2)
        ax.set_xlabel(ylabel)
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(len(labels)), list(labels))
    axes[0][0].invert_yaxis()
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def grouped_bars(path: str | Path, groups: Sequence[str], series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                 ylabel: str, title: str | None = None) -> Path:
    """Grouped vertical bars: one group per entry of `groups`, one bar per `series[label] = (means, stds)`."""
    plt, fig, axes = _figure(size=(max(6, 1.5 * len(groups)), 4))
    ax = axes[0][0]
    width = 0.8 / max(len(series), 1)
    for k, (label, (means, stds)) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, list(means), width, yerr=list(stds), capsize=2, label=label)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)
