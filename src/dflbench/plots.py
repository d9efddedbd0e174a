"""Line plots of run histories (matplotlib, Agg backend), written atomically as PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from dflbench.io import atomic_write_bytes

Curve = tuple[Sequence[float], Sequence[float]]


@dataclass
class Panel:
    """One axes: `curves[label] = (xs, ys)`, shaded `bands[label] = (xs, lows, highs)` drawn in the colour of the
    curve of the same label, line `styles[label]` (matplotlib linestyles), an optional horizontal reference, the
    y scale (`"log"`: values <= 0 are left out)."""

    ylabel: str
    curves: Mapping[str, Curve]
    title: str | None = None
    bands: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]] = field(default_factory=dict)
    styles: Mapping[str, str] = field(default_factory=dict)
    hline: float | None = None
    yscale: str = "linear"


def panels_plot(path: str | Path, panels: Sequence[Panel], xlabel: str, title: str | None = None) -> Path:
    """The panels side by side, sharing `xlabel`; None values in a curve or band are gaps; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        colors = {}
        for label, (xs, ys) in panel.curves.items():
            line, = ax.plot(list(xs), [float("nan") if y is None else y for y in ys], label=label,
                            linestyle=panel.styles.get(label, "-"))
            colors[label] = line.get_color()
        for label, (xs, lo, hi) in panel.bands.items():
            ax.fill_between(list(xs), [float("nan") if v is None else v for v in lo],
                            [float("nan") if v is None else v for v in hi], color=colors.get(label), alpha=0.2)
        if panel.hline is not None:
            ax.axhline(panel.hline, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel=xlabel, ylabel=panel.ylabel, yscale=panel.yscale)
        if panel.title:
            ax.set_title(panel.title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def line_plot(path: str | Path, curves: Mapping[str, Curve], xlabel: str, ylabel: str, title: str | None = None,
              hline: float | None = None) -> Path:
    """One line per `curves[label] = (xs, ys)`, an optional dotted horizontal reference at `hline`; returns `path`."""
    return panels_plot(path, [Panel(ylabel, curves, title=title, hline=hline)], xlabel)


def _save(plt, fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def bar_panels(path: str | Path, labels: Sequence[str],
               panels: Mapping[str, tuple[Sequence[float | None], Sequence[float]]], title: str | None = None) -> Path:
    """Horizontal bar charts side by side sharing `labels`: `panels[xlabel] = (means, stds)` (error bars); a None
    mean leaves its bar out (e.g. a target never reached); returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 0.25 * len(labels) + 2), squeeze=False,
                             sharey=True)
    for ax, (xlabel, (means, stds)) in zip(axes[0], panels.items()):
        ax.barh(range(len(labels)), [float("nan") if m is None else m for m in means], xerr=list(stds), capsize=2)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(len(labels)), list(labels))
    axes[0][0].invert_yaxis()
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def grouped_bars(path: str | Path, groups: Sequence[str], series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                 ylabel: str, title: str | None = None) -> Path:
    """Grouped vertical bars: a group per entry of `groups`, a bar per `series[label] = (means, stds)`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(groups)), 4))
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
