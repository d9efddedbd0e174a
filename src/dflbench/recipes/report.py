"""The reproduction report: every seed's results.json (`out/seed-S/`) summarised as mean +- sample std over seeds,
beside the paper's numbers, in `out/report.md`, its PNGs and `out/results.json`.

AEDFL (Table 1): per method the final accuracy, virtual time to the target (mean over the seeds that reached it,
"k/N" how many did), MFLOPs, MB sent; curves of accuracy and consensus distance against virtual time (each seed
interpolated onto one grid, held at its last value after it ends, then mean +- std); the module diagnostics a run
carries (`dflbench.methods.aedfl.diagnostics`: `selection_probability`, `lambda`, `pruning_rate` per device at each
evaluation, averaged over devices, and `selection_by_bucket`) in one picture with a panel per series.
P2P-FT (Table I): per algorithm the per-node and mean accuracy, accuracy and consensus distance against epoch,
per-node accuracy bars, and seed 0's Fig. 2 attention grid when it was drawn. The "claims" section checks the
papers' headline statements on our numbers: AEDFL has the best accuracy and the shortest time to target
(Sec. 6.2); P2P-FT beats Local-FT on every node and comes within 5 points of centralized (Sec. IV-C), and beats
DGD and GT-DGD on the mean (Sec. II argues both fall short here; the paper gives no numbers for them). The
consensus distance is drawn on a log scale.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dflbench.engines.evaluation import convergence
from dflbench.io import atomic_write_json, atomic_write_text
from dflbench.mixing import get_algorithm
from dflbench.plots import Panel, bar_panels, grouped_bars, panels_plot

from .config import experiment
from .reproduce import Recipe

GRID = 200                        # points of the common time grid the AEDFL seed curves are interpolated onto
CENTRAL_GAP = 0.05                # P2P-FT "similar to centralized": within this accuracy of it (our reading)
# Sec. II's case against the baselines (the paper runs neither): what our numbers should show if it holds
BASELINE_CLAIMS = {"dgd": "Sec. II: inexact convergence under heterogeneous data",
                   "gtdgd": "Sec. II: designed for weight-balanced graphs, ours is not"}


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(values, scale: float = 1.0, digits: int = 4) -> str:
    m, s = mean_std(np.asarray(values, dtype=float) * scale)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def band_on_grid(curves: list[tuple[list[float], list[float]]]) -> tuple[list, list, list]:
    """Seed curves (xs, ys) on one grid from 0 to the longest x, each held at its last value after it ends."""
    end = max(max(xs) for xs, _ in curves if xs)
    grid = np.linspace(0.0, end, GRID)
    ys = np.stack([np.interp(grid, xs, vals) for xs, vals in curves])
    std = ys.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(grid))
    return grid.tolist(), ys.mean(axis=0).tolist(), std.tolist()


def band_panel(ylabel: str, curves: dict[str, tuple[list, list, list]], hline: float | None = None,
               title: str | None = None, yscale: str = "linear",
               limits: tuple[float, float] = (-math.inf, math.inf)) -> Panel:
    """A `Panel` of mean curves with mean +- std bands from `band_on_grid` results, the bands clipped to `limits`
    (a probability's band stays in [0, 1])."""
    lo, hi = limits
    return Panel(ylabel, {k: (x, m) for k, (x, m, _) in curves.items()}, title=title, hline=hline, yscale=yscale,
                 bands={k: (x, [max(a - b, lo) for a, b in zip(m, s)], [min(a + b, hi) for a, b in zip(m, s)])
                        for k, (x, m, s) in curves.items()})


def device_mean(values: list) -> float:
    """The mean over devices of one evaluation's per-device values (None: no value; nan when none has one)."""
    vals = np.array([np.nan if v is None else v for v in values], dtype=float)
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


def _finite(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """The (x, y) pairs of a curve whose y is a number (an evaluation where no device recorded a value is nan)."""
    keep = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    return [x for x, _ in keep], [y for _, y in keep]


def _by_run(seeds: list[dict], key: str) -> dict[str, list[dict]]:
    """{method or algorithm: [that run in each seed]} in the first seed's order."""
    out: dict[str, list[dict]] = {}
    for res in seeds:
        for run in res["runs"]:
            out.setdefault(run[key], []).append(run)
    return out


def _figure(out: Path, name: str, draw: Callable[[Path], Path], figures: dict) -> None:
    """Draw one PNG; a failure is reported and recorded, never losing the report."""
    try:
        figures[name] = draw(out / f"{name}.png").name
    except Exception as exc:  # noqa: BLE001 - a picture must never lose the report
        traceback.print_exc(file=sys.stderr)
        figures[name] = {"error": f"{type(exc).__name__}: {exc}"}


def accuracy_at(history: list[dict], t: float, key: str = "accuracy") -> float:
    """The history's `key` at the last evaluation at or before virtual time `t` (histories start with one at 0)."""
    return [h[key] for h in history if h["time"] <= t][-1]


def equal_time_accuracy(seeds: list[dict], key: str = "accuracy") -> tuple[list[float], dict[str, list[float]]]:
    """Per seed, t* = the earliest virtual time at which one of its methods ended, and each method's `key` at t*
    (`accuracy_at`): methods compared at equal virtual time (under a per-device update cap the synchronous ones run
    4-6x longer, since a FedAvg round waits for its slowest device; under one time budget t* is the budget)."""
    ends = [min(r["history"][-1]["time"] for r in seed["runs"]) for seed in seeds]
    at: dict[str, list[float]] = {}
    for seed, end in zip(seeds, ends):
        for r in seed["runs"]:
            at.setdefault(r["method"], []).append(accuracy_at(r["history"], end, key))
    return ends, at


def _consensus_key(run: dict) -> str:
    """The consensus column of a run, or the device mean for results recorded before the protocol had one."""
    return "consensus_accuracy" if "consensus_accuracy" in run["history"][0] else "accuracy"


def _plateau(run: dict, key: str) -> dict:
    return convergence(run["history"], key)


def summarize_aedfl(recipe: Recipe, seeds: list[dict], out: Path) -> tuple[dict, list[str]]:
    cfg = seeds[0]["config"]
    runs = _by_run(seeds, "method")
    ends, at_end = equal_time_accuracy(seeds, "consensus_accuracy" if all(
        _consensus_key(r) == "consensus_accuracy" for s in seeds for r in s["runs"]) else "accuracy")
    rows, figures = {}, {}
    lines = [f"Target accuracy {cfg['target_acc']}; paper columns: {recipe.paper_source or 'none'}. The paper states "
             "no evaluation protocol; ours is docs/EVALUATION.md: both accuracy columns, one virtual-time budget for "
             "every method.", ""]
    head = ("| method | Acc devices | Acc consensus | Conv. acc | flat | Acc at t* | Time to target (s) | reached "
            "| MFP | MB sent | consensus dist. | wall (min) | paper Acc | paper Time | paper MFP |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name, rs in runs.items():
        key = _consensus_key(rs[0])
        ckey = "consensus_time_to_target" if key == "consensus_accuracy" else "time_to_target"
        times = [r[ckey] for r in rs if r.get(ckey) is not None]
        plateaus = [_plateau(r, key) for r in rs]
        conv = [p["accuracy"] for p in plateaus if p["accuracy"] is not None]
        flat = sum(bool(p["converged"]) for p in plateaus)
        walls = [r["wall_time"] / 60 for r in rs if r.get("wall_time") is not None]
        rows[name] = {"accuracy": mean_std([r["accuracy"] for r in rs]),
                      "consensus_accuracy": mean_std([r["history"][-1][key] for r in rs]),
                      "convergence_accuracy": mean_std(conv) if conv else None, "converged": f"{flat}/{len(rs)}",
                      "accuracy_at_common_time": mean_std(at_end[name]),
                      "time_to_target": mean_std(times) if times else None, "reached": f"{len(times)}/{len(rs)}",
                      "mflops": mean_std([r["mflops"] for r in rs]),
                      "mb_sent": mean_std([r["bytes_sent"] / 1e6 for r in rs]),
                      "final_consensus": mean_std([r["final_consensus"] for r in rs]),
                      "wall_minutes": mean_std(walls) if walls else None, "seeds": len(rs)}
        p = recipe.paper.get(name, {})
        lines.append(f"| {name} | {fmt([r['accuracy'] for r in rs])} | {fmt([r['history'][-1][key] for r in rs])} | "
                     f"{fmt(conv) if conv else '-'} | {flat}/{len(rs)} | {fmt(at_end[name])} | "
                     f"{fmt(times, digits=1) if times else '/'} | "
                     f"{len(times)}/{len(rs)} | {fmt([r['mflops'] for r in rs], digits=3)} | "
                     f"{fmt([r['bytes_sent'] / 1e6 for r in rs], digits=1)} | "
                     f"{fmt([r['final_consensus'] for r in rs], digits=3)} | "
                     f"{fmt(walls, digits=1) if len(walls) == len(rs) else '-'} | {p.get('acc', '-')} | "
                     f"{p.get('time', '/' if p else '-')} | {p.get('mfp', '-')} |")
    lines += ["", "Columns (docs/EVALUATION.md): *Acc devices*, the mean of the device models' test accuracies at the "
              "end; *Acc consensus*, the consensus model's (the average of the device models, per entry over the "
              "devices that keep it; a server method's global model in both); *Conv. acc*, the consensus column's "
              "plateau (the mean of its last 20% of evaluations), compared with the paper's Acc (\"convergence "
              "accuracy\"); *flat*, the seeds whose last 20% of evaluations gained less than 1 point; *Acc at t\\**, "
              "the consensus column at t*, the earliest virtual time at which a method of the seed ended "
              f"({', '.join(f'{t:.1f}' for t in ends)} s); *Time to target*, virtual seconds until the consensus "
              "column first reached the target (mean over the seeds that did, `reached`; `/`: none did); *MFP*, "
              "MFLOPs per sample of the final structure; *consensus dist.*, the mean distance between two devices' "
              "models over the entries both keep; *wall (min)*, the run's wall-clock minutes on the machine that ran "
              "it, as loaded as it was then (`-`: a seed did not record it)."]
    lines += [""] + per_seed_lines(seeds, list(runs))
    title = f"{cfg['model']} on {cfg['dataset']}, {cfg['devices']} devices"

    def curves(key):
        return {n: band_on_grid([([h["time"] for h in r["history"]],
                                  [h[key if key in h else "accuracy"] for h in r["history"]]) for r in rs])
                for n, rs in runs.items()}

    _figure(out, "accuracy_vs_time", lambda p: panels_plot(
        p, [band_panel("accuracy of the consensus model", curves("consensus_accuracy"), cfg["target_acc"],
                       title="consensus model (server methods: the global model)"),
            band_panel("mean accuracy of the device models", curves("accuracy"), cfg["target_acc"],
                       title="device models, mean")], "virtual time (s)", title), figures)
    _figure(out, "consensus_vs_time", lambda p: panels_plot(p, [band_panel("consensus distance",
                                                                           curves("consensus"))],
                                                            "virtual time (s)", title), figures)
    names = list(runs)

    def costs(p):
        def col(key, scale=1.0):
            stats = [rows[n][key] for n in names]
            return [None if s is None else s[0] * scale for s in stats], [0 if s is None else s[1] * scale
                                                                          for s in stats]
        return bar_panels(p, names, {f"time to {cfg['target_acc']} (virtual s)": col("time_to_target"),
                                     "MFLOPs": col("mflops"), "MB sent": col("mb_sent")}, title)

    _figure(out, "costs", costs, figures)
    if cfg.get("corrupt"):
        lines += [""] + harmful_lines(runs, cfg["corrupt"], cfg.get("corrupt_mode", "noise"), cfg["devices"])
    panels = seed_diagnostics_panels(runs)
    if panels:
        _figure(out, "diagnostics", lambda p: panels_plot(p, panels, "virtual time (s)", f"AEDFL modules: {title}"),
                figures)
    return {"rows": rows, "common_time": ends, "figures": figures, "claims": _aedfl_claims(rows, ends)}, lines


def per_seed_lines(seeds: list[dict], names: list[str]) -> list[str]:
    """Each method's run in each seed (one column per seed): the consensus column's plateau (`rising`: not flat by
    the convergence rule), the time to the target, the wall minutes and the commit the run ran (its `code`, else
    its results file's; `+`: with uncommitted changes), so an outlier seed and the code behind every number are
    visible."""
    head = "| method | " + " | ".join(f"seed {s['config'].get('seed', i)}" for i, s in enumerate(seeds)) + " |"
    lines = ["Per seed: the consensus plateau (*rising*: not flat by the rule), time to the target in virtual s, wall "
             "minutes, commit (+: with uncommitted changes).", "", head, "|" + "---|" * (head.count("|") - 1)]
    for name in names:
        cells = []
        for res in seeds:
            run = next((r for r in res["runs"] if r["method"] == name), None)
            if run is None:
                cells.append("-")
                continue
            key = _consensus_key(run)
            plateau = _plateau(run, key)
            ttt = run.get("consensus_time_to_target" if key == "consensus_accuracy" else "time_to_target")
            code = run.get("code") or res.get("code") or {}
            cells.append(", ".join([
                "-" if plateau["accuracy"] is None else
                f"{plateau['accuracy']:.4f}{'' if plateau['converged'] else ' rising'}",
                "never" if ttt is None else f"{ttt:.0f} s",
                "-" if run.get("wall_time") is None else f"{run['wall_time'] / 60:.0f} min",
                "-" if code.get("commit") is None else code["commit"][:7] + ("+" if code.get("dirty") else "")]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


DIAGNOSTICS = {"selection_probability": "selection probability", "lambda": "lambda_ij (eq. 4.6-4.8)",
               "pruning_rate": "pruning rate p_i (eq. 5.16)", "mflops": "MFLOPs per sample of the pruned structure"}
LIMITS = {"selection_probability": (0.0, 1.0), "lambda": (0.0, math.inf), "pruning_rate": (0.0, 1.0),
          "mflops": (0.0, math.inf)}


def seed_diagnostics_panels(runs: dict[str, list[dict]]) -> list[Panel]:
    """A panel per module series over virtual time: each seed's per-device values averaged over devices, then
    mean +- std over seeds; `selection_by_bucket` as one curve per method and slot kind."""
    panels = []
    for key, ylabel in DIAGNOSTICS.items():
        curves = {}
        for name, rs in runs.items():
            seeds = [_finite(d["time"], [device_mean(v) for v in d[key]]) for r in rs
                     if (d := r.get("diagnostics")) and d.get(key) and d["time"]]
            seeds = [s for s in seeds if s[0]]                   # evaluations with no value dropped, not interpolated
            if seeds:
                curves[name] = band_on_grid(seeds)
        if curves:
            panels.append(band_panel(ylabel, curves, title=ylabel, limits=LIMITS[key]))
    buckets = {}
    for name, rs in runs.items():
        for r in rs[:1]:                                    # the first seed: one curve per slot kind
            d = r.get("diagnostics") or {}
            for kind, ys in d.get("selection_by_bucket", {}).items():
                buckets[f"{name} {kind}"] = (d["time"], ys)
    if buckets:
        panels.append(Panel("selection probability", buckets, title="selection by cached-model kind (first seed)"))
    return panels


def sender_means(diagnostics: dict, key: str, senders: set[int]) -> float | None:
    """The mean of `diagnostics[key]` (a per-sender list at each evaluation) over the second half of the
    evaluations and the devices in `senders` (None entries skipped); None when there is no value."""
    series = diagnostics.get(key) or []
    vals = [v for row in series[len(series) // 2:] for j, v in enumerate(row)
            if j in senders and v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def harmful_lines(runs: dict[str, list[dict]], corrupt: list[int], mode: str, devices: int) -> list[str]:
    """The harmful-neighbour table: per method the honest devices' accuracy (the mean of the device models that are
    not corrupt; a server method's global model, which is what every device uses), and, where a method selects or
    weighs neighbours, the mean selection probability and lambda of the corrupt senders and of the honest ones over
    the second half of the run (`methods.aedfl.diagnostics`)."""
    bad = set(corrupt)
    good = set(range(devices)) - bad
    head = ("| method | Acc honest devices | Acc devices | Acc consensus | P(select) corrupt senders | "
            "P(select) honest senders | lambda corrupt | lambda honest |")
    lines = [f"## Harmful neighbours: devices {', '.join(map(str, corrupt))} of {devices}, mode `{mode}`", "",
             head, "|" + "---|" * (head.count("|") - 1)]

    def col(values):
        vals = [v for v in values if v is not None]
        return fmt(vals) if vals else "-"

    for name, rs in runs.items():
        honest = [r.get("honest_accuracy", r["accuracy"]) for r in rs]
        diag = [r.get("diagnostics") or {} for r in rs]
        lines.append(f"| {name} | {fmt(honest)} | {fmt([r['accuracy'] for r in rs])} | "
                     f"{fmt([r['history'][-1][_consensus_key(r)] for r in rs])} | "
                     + " | ".join(col([sender_means(d, key, who) for d in diag])
                                  for key, who in (("selection_probability", bad), ("selection_probability", good),
                                                   ("lambda", bad), ("lambda", good))) + " |")
    lines += ["", f"Mode `{mode}`: " + ("the corrupt devices send Gaussian noise of their model's scale wherever a "
                                        "model leaves them, and train honestly" if mode == "noise" else
                                        "the corrupt devices train on flipped labels (y -> C - 1 - y)")
              + ". *Acc honest devices*: the mean test accuracy of the other devices' models (a server method: its "
              "global model); selection and lambda: means over the second half of the evaluations and over the "
              "senders of each group (`-`: the method does not select or weigh)."]
    return lines


def verdict(ours: tuple[float, float], theirs: tuple[float, float], seeds: int, higher_is_better: bool = True) -> str:
    """'holds' / 'does not hold' when the difference of the means exceeds the seeds' spread (the sum of the two
    sample standard deviations), 'tie within the seeds' spread' otherwise; one seed: 'not tested: one seed'."""
    if seeds < 2:
        return "not tested: one seed"
    diff = (ours[0] - theirs[0]) * (1 if higher_is_better else -1)
    if abs(diff) <= ours[1] + theirs[1]:
        return "tie within the seeds' spread"
    return "holds" if diff > 0 else "does not hold"


def _aedfl_claims(rows: dict, ends: list[float]) -> list[str]:
    """Sec. 6.2's three claims for AEDFL (highest accuracy, fastest to the target, smallest computation), each
    against the best other method, stated only beyond the seeds' spread (`verdict`)."""
    if "aedfl" not in rows or len(rows) < 2:
        return []
    ours, seeds = rows["aedfl"], rows["aedfl"]["seeds"]
    others = {n: r for n, r in rows.items() if n != "aedfl"}
    claims = []
    for key, what in (("convergence_accuracy", "the highest convergence accuracy (consensus column)"),
                      ("accuracy_at_common_time", "the highest accuracy at equal virtual time (t*, "
                                                  f"{float(np.mean(ends)):.1f} s on average)")):
        have = {n: r[key] for n, r in others.items() if r[key] is not None}
        if ours[key] is None or not have:
            claims.append(f"AEDFL has {what} (Sec. 6.2): not testable, too few evaluations")
            continue
        best = max(have, key=lambda n: have[n][0])
        claims.append(f"AEDFL has {what} (Sec. 6.2): {verdict(ours[key], have[best], seeds)} (best other: {best} "
                      f"{have[best][0]:.4f} ± {have[best][1]:.4f}; aedfl {ours[key][0]:.4f} ± {ours[key][1]:.4f})")
    times = {n: r["time_to_target"] for n, r in others.items() if r["time_to_target"] is not None}
    reached = int(ours["reached"].split("/")[0])
    claim = "AEDFL reaches the target first (Sec. 6.2): "
    if not times and not reached:
        claims.append(claim + "not testable (no method reached the target)")
    elif not reached:
        claims.append(claim + f"does not hold (aedfl never reached it; {', '.join(times)} did)")
    elif reached < seeds:
        claims.append(claim + f"not testable (aedfl reached it in {ours['reached']} seeds)")
    elif not times:
        claims.append(claim + "holds (no other method reached it)")
    else:
        fastest = min(times, key=lambda n: times[n][0])
        claims.append(claim + f"{verdict(ours['time_to_target'], times[fastest], seeds, higher_is_better=False)} "
                      f"(fastest other: {fastest} {times[fastest][0]:.1f} s; aedfl {ours['time_to_target'][0]:.1f} s)")
    cheapest = min(others, key=lambda n: others[n]["mflops"][0])
    claims.append(f"AEDFL has the smallest computation cost (Sec. 6.2): "
                  f"{verdict(ours['mflops'], others[cheapest]['mflops'], seeds, higher_is_better=False)} (cheapest "
                  f"other: {cheapest} {others[cheapest]['mflops'][0]:.3f} MFLOPs; aedfl {ours['mflops'][0]:.3f})")
    return claims


def summarize_p2pft(recipe: Recipe, seeds: list[dict], out: Path) -> tuple[dict, list[str]]:
    cfg = seeds[0]["config"]
    runs = _by_run(seeds, "algorithm")
    n = len(next(iter(runs.values()))[0]["node_accuracy"])
    rows, figures = {}, {}
    head = "| algorithm | " + " | ".join(f"node {i + 1}" for i in range(n)) + " | mean | MB sent |"
    lines = ["Accuracy in %; paper rows: " + (recipe.paper_source or "none") + ".", ""]
    if seeds[0]["backbone"]["kind"] == "random":
        lines += [f"**Warning:** {seeds[0]['backbone']['warning']}", ""]
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name, rs in runs.items():
        nodes = np.array([r["node_accuracy"] for r in rs])
        rows[name] = {"node_accuracy": [mean_std(nodes[:, i]) for i in range(n)],
                      "mean_accuracy": mean_std([r["mean_accuracy"] for r in rs]),
                      "mb_sent": mean_std([r["bytes_sent"] / 1e6 for r in rs]), "seeds": len(rs)}
        lines.append(f"| {name} | " + " | ".join(fmt(nodes[:, i], 100, 2) for i in range(n))
                     + f" | {fmt([r['mean_accuracy'] for r in rs], 100, 2)} | "
                     f"{fmt([r['bytes_sent'] / 1e6 for r in rs], digits=1)} |")
    for name, p in recipe.paper.items():
        lines.append(f"| paper {name} | " + " | ".join(f"{v:.2f}" for v in p["nodes"])
                     + f" | {np.mean(p['nodes']):.2f} | - |")
    title = f"{cfg['model']} on {seeds[0]['data']['name']}, {n} nodes, split {cfg['split']}"

    def curves(key):
        return {name: band_on_grid([([h["epoch"] for h in r["history"]], [h[key] for h in r["history"]])
                                    for r in rs]) for name, rs in runs.items()
                if all(key in h for r in rs for h in r["history"])}

    _figure(out, "accuracy_vs_epoch", lambda p: panels_plot(p, [band_panel("mean test accuracy over nodes",
                                                                           curves("mean_accuracy"))], "epoch",
                                                            title), figures)
    decentralized = {k: v for k, v in curves("consensus").items() if not _single(runs[k])}
    # log scale: Local-FT drifts apart by orders of magnitude more than the mixing algorithms
    _figure(out, "consensus_vs_epoch", lambda p: panels_plot(p, [band_panel("consensus distance (log scale)",
                                                                            decentralized, yscale="log")],
                                                             "epoch", title), figures)
    _figure(out, "node_accuracy", lambda p: grouped_bars(
        p, [f"node {i + 1}" for i in range(n)],
        {name: ([100 * m for m, _ in r["node_accuracy"]], [100 * s for _, s in r["node_accuracy"]])
         for name, r in rows.items()}, "test accuracy (%)", title), figures)
    attention = seeds[0].get("attention", {})
    if "path" in attention:
        path = Path(attention["path"])                                    # out/seed-S/attention.png
        figures["attention"] = f"{path.parent.name}/{path.name}"
    return {"rows": rows, "figures": figures, "claims": _p2pft_claims(rows)}, lines


def summarize_pretrain(recipe: Recipe, seeds: list[dict], out: Path) -> tuple[dict, list[str]]:
    """Pretraining (`recipes/pretrain.py`): the backbone's final test accuracy and train loss over the seeds, and
    its test accuracy against epoch."""
    cfg, runs = seeds[0]["config"], [s["runs"][0] for s in seeds]
    last = [r["history"][-1] for r in runs]
    acc, loss = [h["test_accuracy"] for h in last], [h["train_loss"] for h in last]
    rows = {"pretrain": {"test_accuracy": mean_std(acc), "train_loss": mean_std(loss), "seeds": len(runs)}}
    paper = recipe.paper.get("pretrain", {}).get("test_accuracy", "-")
    lines = [f"Test accuracy in % after {cfg['epochs']} epochs; paper column: {recipe.paper_source or 'none'}.", "",
             "| run | test accuracy | train loss | wall time (s) | paper |", "|---|---|---|---|---|",
             f"| pretrain | {fmt(acc, 100, 2)} | {fmt(loss)} | {fmt([h['wall_time_s'] for h in last], digits=1)} | "
             f"{paper} |"]
    title = f"{cfg['model']} on {seeds[0]['data']['name']}"
    figures: dict = {}
    curve = {"pretrain": band_on_grid([([h["epoch"] for h in r["history"]], [h["test_accuracy"] for h in r["history"]])
                                       for r in runs])}
    _figure(out, "accuracy_vs_epoch", lambda p: panels_plot(p, [band_panel("test accuracy", curve)], "epoch", title),
            figures)
    return {"rows": rows, "figures": figures, "claims": []}, lines


def _single(rs: list[dict]) -> bool:
    return rs[0]["single_model"]


def _p2pft_claims(rows: dict) -> list[str]:
    """Sec. IV-C's claims and Sec. II's case against DGD / GT-DGD, each stated beyond the seeds' spread (`verdict`).
    """
    claims = []
    if "local" in rows and "pushpull" in rows:
        ours, local = rows["pushpull"], rows["local"]
        per_node = {verdict(p, q, ours["seeds"]) for p, q in zip(ours["node_accuracy"], local["node_accuracy"])}
        said = next(v for v in ("not tested: one seed", "does not hold", "tie within the seeds' spread", "holds")
                    if v in per_node)                                 # every node must hold for the claim to hold
        claims.append(f"P2P-FT beats Local-FT on every node (Sec. IV-C): {said} (mean "
                      f"{100 * ours['mean_accuracy'][0]:.2f}% vs {100 * local['mean_accuracy'][0]:.2f}%)")
    if "central" in rows and "pushpull" in rows:
        gap = rows["central"]["mean_accuracy"][0] - rows["pushpull"]["mean_accuracy"][0]
        claims.append(f"P2P-FT is similar to centralized (Sec. IV-C; read as within {100 * CENTRAL_GAP:.0f} points): "
                      f"{'holds' if gap <= CENTRAL_GAP else 'does not hold'} (gap {100 * gap:.2f} points)")
    for name, why in BASELINE_CLAIMS.items():
        if name in rows and "pushpull" in rows:
            ours, theirs = rows["pushpull"]["mean_accuracy"], rows[name]["mean_accuracy"]
            claims.append(f"P2P-FT beats {get_algorithm(name).label} on the mean ({why}): "
                          f"{verdict(ours, theirs, rows['pushpull']['seeds'])} "
                          f"({100 * ours[0]:.2f}% vs {100 * theirs[0]:.2f}%)")
    return claims


def overrides(recipe: Recipe, scale: str | None, cfg: dict) -> list[str]:
    """`KEY = VALUE (scale: VALUE)` for each field of the run's config (seed 0's results.json) that differs from the
    recipe at `scale`, i.e. what `--set` (or `--stand-in`) changed, so a scale note ("10 epochs") is never read as
    the run's setting; the seed and the runtime's own entries (absent from the recipe) are left out."""
    base = json.loads(json.dumps(asdict(recipe.resolve(scale)), default=str))
    out = []
    for key, value in base.items():
        if key == "seed" or key not in cfg:
            continue
        ours = dict(value) if key == "model_kwargs" and isinstance(cfg[key], dict) else value
        if cfg[key] != ours:
            out.append(f"{key} = {cfg[key]} (scale: {ours})")
    return out


def write_report(recipe: Recipe, scale: str | None, notes: list[str], folders: list[Path], out: str | Path,
                 methods: Sequence[str] | None = None) -> Path:
    """`out/report.md`, the PNGs and `out/results.json` from the seed folders; returns the report's path. `methods`
    (AEDFL): report these of the seeds' runs, in this order (a seed folder may hold more)."""
    out = Path(out)
    kind = experiment(recipe.experiment, "recipe")
    seeds = [kind.upgrade_results(json.loads((f / "results.json").read_text())) for f in folders]
    if methods is not None:
        for seed in seeds:
            by_name = {r[kind.run_key]: r for r in seed["runs"]}
            seed["runs"] = [by_name[m] for m in methods]
            seed["config"][kind.parts] = list(methods)
    # the experiment's summary (`Experiment.report` names it): its rows, figures, claims and the lines above the table
    summary, table = getattr(sys.modules[__name__], kind.report)(recipe, seeds, out)
    cfg = seeds[0]["config"]
    lines = [f"# {recipe.title}", "",
             f"Recipe `{recipe.name}`, scale `{scale or 'file'}`, {len(seeds)} seed(s) "
             f"({', '.join(f.name for f in folders)}); mean ± std over seeds.", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    changed = overrides(recipe, scale, cfg)
    lines += [f"Changed from scale `{scale or 'file'}` (by `--set` or `--stand-in`): " + "; ".join(changed) + ".", ""] \
        if changed else []
    lines += table + [""]
    if summary["claims"]:
        lines += ["## Claims", ""] + [f"- {c}" for c in summary["claims"]] + [""]
    lines += ["## Figures", ""]
    for name, fig in summary["figures"].items():
        lines.append(f"![{name}]({fig})" if isinstance(fig, str) else f"- {name}: failed ({fig['error']})")
    lines += ["", "## Config", "", "```json", json.dumps(cfg, indent=1, default=str), "```", ""]
    atomic_write_json(out / "results.json", {"recipe": recipe.name, "title": recipe.title, "scale": scale,
                                             "notes": notes, "seeds": [f.name for f in folders],
                                             "paper": {"source": recipe.paper_source, "results": recipe.paper},
                                             **summary, "per_seed": seeds})
    return atomic_write_text(out / "report.md", "\n".join(lines))
