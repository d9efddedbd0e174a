"""The AEDFL figures for every registered method (21): distinct (colour, line style) pairs, no empty panel, the
diagnostics drawn where evaluations without a selection leave gaps, a note where no method reached the target."""

import math

import matplotlib
import pytest
from matplotlib.lines import Line2D

from dflbench import plots
from dflbench.methods.aedfl.diagnostics import BUCKETS
from dflbench.methods.registry import METHODS, list_methods
from dflbench.recipes.aedfl import write_results
from dflbench.recipes.reproduce import load_recipe

matplotlib.use("Agg")


def _diagnostics(times: list[float]) -> dict:
    """A run's module diagnostics with a selection only at every third evaluation (a short eval_interval)."""
    every = [None if k % 3 else 0.5 + 0.01 * k for k in range(len(times))]
    return {"time": times, "selection_probability": [[v, v] for v in every],
            "lambda": [[1.0 - 0.01 * k, 0.9] for k in range(len(times))],
            "pruning_rate": [[0.01 * k, 0.0] for k in range(len(times))],
            "selection_by_bucket": {b: list(every) for b in BUCKETS}}


def _run(name: str, i: int, reached: str) -> dict:
    times = [0.1 * k for k in range(21)]
    history = [{"time": t, "accuracy": 0.1 + 0.02 * i * t, "consensus": 1.0 / (1 + i + t)} for t in times]
    hit = reached == "all" or (reached == "some" and i % 2)              # "some": every second method
    run = {"method": name, "accuracy": history[-1]["accuracy"], "time_to_target": 1.0 + i if hit else None,
           "mflops": 0.2 + 0.001 * i, "bytes_sent": 1e6 * (i + 1), "virtual_time": times[-1], "wall_time": 1.0,
           "final_consensus": history[-1]["consensus"], "options": {}, "history": history}
    if METHODS.get(name).metadata["kind"] == "aedfl":
        run["diagnostics"] = _diagnostics(times)
    return run


def _results(seed: int, reached: str) -> dict:
    cfg = {"model": "lenet5", "dataset": "fashion-mnist", "devices": 8, "target_acc": 0.9, "eval_samples": 100,
           "seed": seed}
    return {"config": cfg, "data": {"test_samples": 100},
            "runs": [_run(n, i, reached) for i, n in enumerate(list_methods())]}


def _check_lines(ax) -> None:
    """The labelled lines of one axes: each draws a value, no two share (colour, line style)."""
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert lines, f"empty panel {ax.get_title()!r}"
    for ln in lines:                    # visible: two consecutive values make a segment, or a lone one a marker
        finite = [math.isfinite(y) for y in ln.get_ydata()]
        assert any(a and b for a, b in zip(finite, finite[1:])) or (any(finite) and ln.get_marker() not in
                                                                   (None, "None", "")), ln.get_label()
    pairs = [(matplotlib.colors.to_hex(ln.get_color()), str(ln.get_linestyle())) for ln in lines]
    assert len(set(pairs)) == len(pairs), pairs


def test_curve_styles_are_distinct_and_grouped_by_family():
    names = list_methods()
    look = plots.curve_styles(names + ["aedfl fresh", "aedfl stale", "P2P-FT"], {"aedfl stale": "--"})
    assert len(set(look.values())) == len(look) == len(names) + 3
    assert len({look[n][0] for n in names}) == len(names) == 21       # a colour per method
    for n in names:                                                   # the family is the registry's kind
        assert look[n][1] == plots.FAMILY_STYLES[METHODS.get(n).metadata["kind"]]
    # a method keeps its colour whichever others share the figure
    assert plots.curve_styles(["fedavg"])["fedavg"] == look["fedavg"]


@pytest.mark.parametrize("reached", ["none", "some", "all"])
def test_aedfl_figures_for_21_methods(saved_figures, tmp_path, reached):
    from dflbench.recipes.report import summarize_aedfl

    seeds = [_results(s, reached) for s in (0, 1)]
    write_results(seeds[0], tmp_path / "run")
    summarize_aedfl(load_recipe("aedfl-emnist-lenet5"), seeds, tmp_path)
    names = {name for name, _ in saved_figures}
    assert {"accuracy_vs_time.png", "diagnostics.png", "consensus_vs_time.png", "costs.png"} <= names
    for name, fig in saved_figures:
        if name == "costs.png":
            time_ax = fig.axes[0]
            notes = [t.get_text() for t in time_ax.texts]
            if reached == "none":
                assert notes == ["no method reached the target"] and not time_ax.patches
            else:                                                      # a bar, or "not reached" where none
                bars = [p for p in time_ax.patches if math.isfinite(p.get_width())]
                assert len(bars) == (21 if reached == "all" else 10) and len(notes) == 21 - len(bars)
                assert set(notes) <= {" not reached"}
            assert all(len(ax.patches) == 21 for ax in fig.axes[1:])
            continue
        for ax in fig.axes:
            _check_lines(ax)
        legend = fig.legends[0]
        drawn = {ln.get_label() for ax in fig.axes for ln in ax.get_lines() if not ln.get_label().startswith("_")}
        assert {t.get_text() for t in legend.get_texts()} == drawn
        legend_box = legend.get_window_extent(fig.canvas.get_renderer())
        for ax in fig.axes:                                            # the legend is outside every axes
            assert not legend_box.overlaps(ax.get_window_extent())
    diagnostics = dict(saved_figures)["diagnostics.png"]
    selection = next(ax for ax in diagnostics.axes if "cached-model kind" in ax.get_title())
    assert {ln.get_label() for ln in selection.get_lines()} >= {f"aedfl {b}" for b in BUCKETS}


def test_a_figure_without_data_says_so(saved_figures, tmp_path):
    plots.panels_plot(tmp_path / "empty.png", [plots.Panel("y", {"a": ([0, 1], [None, None])})], "x")
    (_, fig), = saved_figures
    assert [t.get_text() for t in fig.axes[0].texts] == ["no data to draw"] and not fig.legends
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_percent_axis_shows_fractions_as_percent(saved_figures, tmp_path):
    plots.line_plot(tmp_path / "p.png", {"x": ([0, 1], [0.25, 0.5])}, "epoch", "accuracy (%)", percent=True)
    (_, fig), = saved_figures
    ax = fig.axes[0]
    assert float(ax.yaxis.get_major_formatter()(0.5, 0)) == 50
    assert list(Line2D.get_ydata(ax.get_lines()[0])) == [0.25, 0.5]
