"""Line plots of run histories (matplotlib, Agg backend), written atomically as PNG."""

from __future__ import annotations

import io
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from dflbench.io import atomic_write_bytes

Curve = tuple[Sequence[float], Sequence[float]]
LineStyle = str | tuple

# 21 colours: matplotlib's tab10, then 11 more far from them and from each other. A method's colour is its place in
# the method registry's order (families are contiguous there), so it is the same in every figure.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#000000", "#800000", "#808000", "#000080", "#008080", "#9acd32", "#daa520", "#ff1493",
           "#4b0082", "#a0522d", "#00ff7f")
# a method family (the registry's `kind`) is a line style; curves that are not methods start from "-"
FAMILY_STYLES = {"aedfl": "-", "decentralized": "-.", "server": "--", "pruning": ":"}
LINE_STYLES: tuple[LineStyle, ...] = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)),
                                      (0, (8, 3, 2, 3)))


@dataclass
class Panel:
    """One axes: `curves[label] = (xs, ys)`, shaded `bands[label] = (xs, lows, highs)` drawn in the colour of the
    curve of the same label, line `styles[label]` (matplotlib linestyles; default: `curve_styles`), an optional
    horizontal reference, the y scale (`"log"`: values <= 0 are left out), `percent`: y values are fractions whose
    ticks read as percentages (put "(%)" in `ylabel`)."""

    ylabel: str
    curves: Mapping[str, Curve]
    title: str | None = None
    bands: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]] = field(default_factory=dict)
    styles: Mapping[str, LineStyle] = field(default_factory=dict)
    hline: float | None = None
    yscale: str = "linear"
    percent: bool = False


def method_kinds() -> dict[str, str]:
    """{method: its family} (`kind` metadata) in the method registry's order."""
    from dflbench.methods.registry import METHODS, list_methods

    return {name: METHODS.get(name).metadata["kind"] for name in list_methods()}


def curve_styles(labels: Sequence[str], styles: Mapping[str, LineStyle] | None = None) -> dict[str, tuple]:
    """{label: (colour, line style)}, no pair twice. A registered method's name takes its colour (`PALETTE`, by
    registry order) and its family's line style (`FAMILY_STYLES`); any other label ("aedfl fresh", "P2P-FT") takes
    the next palette colour no method of `labels` has, and "-". `styles[label]` replaces the line style; where a
    pair is taken the next line style (then the next colour) is used."""
    styles = styles or {}
    kinds = method_kinds()
    order = {name: i for i, name in enumerate(kinds)}
    used = {order[label] for label in labels if label in order}
    spare = [i for i in range(len(PALETTE)) if i not in used] or list(range(len(PALETTE)))
    taken: set[tuple] = set()
    out, others = {}, 0
    for label in labels:
        if label in order:
            colour, style = order[label], FAMILY_STYLES.get(kinds[label], "-")
        else:
            colour, style = spare[others % len(spare)], "-"
            others += 1
        style = styles.get(label, style)
        first = LINE_STYLES.index(style) if style in LINE_STYLES else 0
        candidates = [(PALETTE[(colour + c) % len(PALETTE)], style if s == 0 else
                       LINE_STYLES[(first + s) % len(LINE_STYLES)])
                      for c in range(len(PALETTE)) for s in range(len(LINE_STYLES))]
        out[label] = next(pair for pair in candidates if pair not in taken)
        taken.add(out[label])
    return out


def _values(ys: Sequence[float | None]) -> list[float]:
    return [float("nan") if y is None else float(y) for y in ys]


def _points(xs: Sequence[float], ys: Sequence[float | None]) -> tuple[list[float], list[float]]:
    """The (x, y) points of a curve whose y is a number (None and nan are left out, the line joins the others)."""
    pts = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None and not math.isnan(y)]
    return [x for x, _ in pts], [y for _, y in pts]


def panels_plot(path: str | Path, panels: Sequence[Panel], xlabel: str, title: str | None = None) -> Path:
    """The panels that hold data side by side, sharing `xlabel` and one legend outside the axes (a colour and
    line style per label, `curve_styles`); a curve's None values are left out (its line joins the values either
    side, a single value is a marker). A figure without data says so in its middle. Returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    drawn = [p for p in panels if any(_points(xs, ys)[0] for xs, ys in p.curves.values())]
    labels = list(dict.fromkeys(label for p in drawn for label, (xs, ys) in p.curves.items() if _points(xs, ys)[0]))
    fixed = {label: style for p in drawn for label, style in p.styles.items()}
    look = curve_styles(labels, fixed)
    fig, axes = plt.subplots(1, max(len(drawn), 1), figsize=(6 * max(len(drawn), 1), 4), squeeze=False)
    handles = {}
    for ax, panel in zip(axes[0], drawn):
        for label, (xs, ys) in panel.curves.items():
            px, py = _points(xs, ys)
            if not px:
                continue
            colour, style = look[label]
            line, = ax.plot(px, py, label=label, color=colour, linestyle=style, marker="o" if len(px) == 1 else None)
            handles.setdefault(label, line)
        for label, (xs, lo, hi) in panel.bands.items():
            ax.fill_between(list(xs), _values(lo), _values(hi), color=look.get(label, ("grey",))[0], alpha=0.2)
        if panel.hline is not None:
            ax.axhline(panel.hline, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel=xlabel, ylabel=panel.ylabel, yscale=panel.yscale)
        if panel.percent:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, symbol=""))
        if panel.title:
            ax.set_title(panel.title, fontsize=10)
        ax.grid(alpha=0.3)
    if not drawn:
        axes[0][0].set_axis_off()
        axes[0][0].text(0.5, 0.5, "no data to draw", ha="center", va="center", transform=axes[0][0].transAxes)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.0, 0.95),
                   fontsize=8, ncol=1 + (len(handles) - 1) // 24, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(plt, fig, path)


def line_plot(path: str | Path, curves: Mapping[str, Curve], xlabel: str, ylabel: str, title: str | None = None,
              hline: float | None = None, percent: bool = False) -> Path:
    """One line per `curves[label] = (xs, ys)`, an optional dotted horizontal reference at `hline`, y as
    percentages with `percent` (`Panel`); returns `path`."""
    return panels_plot(path, [Panel(ylabel, curves, title=title, hline=hline, percent=percent)], xlabel)


def _save(plt, fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def bar_panels(path: str | Path, labels: Sequence[str],
               panels: Mapping[str, tuple[Sequence[float | None], Sequence[float]]], title: str | None = None,
               missing: str = "not reached", empty: str = "no method reached the target") -> Path:
    """Horizontal bar charts side by side sharing `labels`: `panels[xlabel] = (means, stds)` (error bars). A None
    mean (e.g. a target never reached) is no bar but the text `missing` (the tables' "/"); a panel of None only
    has no axis, only its xlabel and the note `empty`. Returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 0.25 * len(labels) + 2), squeeze=False,
                             sharey=True)
    for ax, (xlabel, (means, stds)) in zip(axes[0], panels.items()):
        ax.set_xlabel(xlabel)
        if all(m is None for m in means):
            ax.tick_params(axis="x", bottom=False, labelbottom=False)
            for side in ("top", "right", "bottom"):
                ax.spines[side].set_visible(False)
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, wrap=True)
            continue
        ax.barh(range(len(labels)), [float("nan") if m is None else m for m in means], xerr=list(stds), capsize=2)
        for i, m in enumerate(means):
            if m is None:
                ax.text(0, i, f" {missing}", va="center", color="grey")
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


def figure_or_error(out: Path, what: str, draw: Callable[[], dict]) -> dict:
    """Draw a figure after the results are on disk; a failure is one warning line on stderr and recorded as
    {"error": ...} in results.json instead of ending the run."""
    try:
        return draw()
    except Exception as exc:  # noqa: BLE001 - any failure of a picture must leave the results
        print(f"warning: the {what} figure failed ({type(exc).__name__}: {exc}); the results in {out} are complete",
              file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}
