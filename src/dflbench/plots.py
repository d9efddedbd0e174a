"""Line plots of run histories (matplotlib, Agg backend), written atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

from dflbench.io import atomic_write_bytes


def line_plot(path: str | Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str,
              ylabel: str, title: str | None = None, hline: float | None = None) -> Path:
    """One line per `curves[label] = (xs, ys)`, an optional dotted horizontal reference at `hline`; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in curves.items():
        ax.plot(list(xs), list(ys), label=label)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
