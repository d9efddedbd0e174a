"""`dflbench aedfl ...`: AEDFL, its ablations and the Table 1 baselines on the asynchronous simulator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dflbench.errors import RunAborted, UserError, for_option
from dflbench.io import keep_earlier_runs, non_finite
from dflbench.methods.registry import METHODS, list_methods, parse_method_option
from dflbench.recipes.aedfl import (
    CHECKPOINTS,
    AEDFLRunConfig,
    config_differences,
    diagnostics_panels,
    evaluated_samples,
    finished_runs,
    read_results,
    run_aedfl_into,
    write_results,
)
from dflbench.recipes.config import with_config_file

from .errors import FIGURE_FAILED, Terminated, _continue_command, on_interrupt, user_errors
from .options import NONE, field_option, given
from .output import guard_finished, prepare_out
from .progress import LogLines


def results_table(results: dict) -> Table:
    """Table 1 layout on the evaluation protocol (docs/EVALUATION.md): both accuracy columns at the end, the
    consensus column's convergence accuracy and whether it flattened, virtual seconds until the consensus column
    reached the target ('/' if never), MFP, the personalized accuracy where a method has one, MB sent; short
    headings (it fits 80 columns; each method's wall time is printed as it finishes) and a caption that says what
    each one is."""
    cfg = results["config"]
    table = Table(title=f"{cfg['model']} on {cfg['dataset']}, {cfg['devices']} devices, "
                        f"alpha {cfg['alpha']}, target {cfg['target_acc']}, accuracy on "
                        f"{evaluated_samples(results)} of {results['data']['test_samples']} test samples",
                  caption="devices: the device models' mean accuracy; consens.: their average model's (a server "
                          "method's global model in both); plateau: the consensus column's last 20% of evaluations; "
                          "flat: they gained under 1 point; to tgt: virtual s until the consensus column reached "
                          "the target (/: never); MFP: MFLOPs per sample; pers.: accuracy on each device's own "
                          "labels; MB sent (each method's wall time is on its own line above)",
                  box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    pers = any(r.get("personalized_accuracy") is not None for r in results["runs"])
    heads = ("method", "devices", "consens.", "plateau", "flat", "to tgt", "MFP") + (("pers.",) if pers else ()) \
        + ("MB",)
    for col in heads:
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)

    def num(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    for r in results["runs"]:
        t = r.get("consensus_time_to_target", r["time_to_target"])
        plateau = (r.get("convergence") or {}).get("consensus_accuracy") or {}
        flat = {True: "yes", False: "no"}.get(plateau.get("converged"), "-")
        row = [r["method"], num(r["accuracy"]), num(r.get("consensus_accuracy")), num(plateau.get("accuracy")), flat,
               "/" if t is None else f"{t:.1f}", f"{r['mflops']:.3f}"]
        row += [num(r.get("personalized_accuracy"))] if pers else []
        table.add_row(*row, f"{r['bytes_sent'] / 1e6:.1f}")
    return table


def methods_table() -> Table:
    """Every registered method: name; kind, runtimes and paper (wrapped); its options with their defaults, one a
    line, never cut."""
    table = Table(title="dflbench aedfl --list-methods (set an option: --method-opt METHOD.OPTION=VALUE)")
    table.add_column("method", no_wrap=True)
    table.add_column("kind; runtimes; paper", overflow="fold", min_width=16)
    table.add_column("options", no_wrap=True)
    for name in list_methods():
        meta = METHODS.get(name).metadata
        table.add_row(name, f"{meta['kind']}; {', '.join(meta['runtimes'])}; {meta['paper']}",
                      METHODS.get(name).describe_options("\n") or "-")
    return table


def _devices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in text.split(",") if d.strip())
    except ValueError:
        raise UserError(f"--corrupt {text!r} must be a comma list of device ids, e.g. 3,11") from None


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    if not names:
        raise UserError("--methods is empty; give a comma list, e.g. aedfl,fedavg,ad-psgd")
    return names


def collect_method_options(methods: tuple[str, ...], items: list[str],
                           prune_every: int | None) -> dict[str, dict[str, Any]]:
    """{method: {option: value}} from `--method-opt METHOD.OPTION=VALUE` items (later items win); `--prune-every K`
    sets `every` = K for each of `methods` that prunes on a schedule (an explicit `METHOD.every` wins)."""
    options: dict[str, dict[str, Any]] = {}
    if prune_every is not None:
        for name in methods:
            if name in METHODS and "every" in METHODS.get(name).defaults():
                options[name] = {"every": prune_every}
    for item in items:
        with for_option("--method-opt"):
            name, field, value = parse_method_option(item)
        options.setdefault(name, {})[field] = value
    return options


F = AEDFLRunConfig


@user_errors
def aedfl(
    model: Optional[str] = field_option(F, "model"),
    dataset: Optional[str] = field_option(F, "dataset"),
    data_dir: Optional[Path] = field_option(F, "data_dir"),
    download: bool = field_option(F, "download", flag=True),
    devices: Optional[int] = field_option(F, "devices"),
    topology: Optional[str] = field_option(F, "topology"),
    methods: Optional[str] = field_option(F, "methods"),
    alpha: Optional[float] = field_option(F, "alpha"),
    target_acc: Optional[float] = field_option(F, "target_acc"),
    time_budget: Optional[float] = field_option(F, "time_budget"),
    max_updates: Optional[int] = field_option(F, "max_updates"),
    batch_size: Optional[int] = field_option(F, "batch_size"),
    local_steps: Optional[int] = field_option(F, "local_steps"),
    lr: Optional[float] = field_option(F, "lr"),
    slot_width: Optional[float] = field_option(F, "slot_width"),
    eval_interval: Optional[float] = field_option(F, "eval_interval"),
    eval_samples: Optional[int] = field_option(F, "eval_samples"),
    train_samples: Optional[int] = field_option(F, "train_samples"),
    profiles: Optional[Path] = field_option(F, "profiles"),
    heterogeneity: Optional[float] = field_option(F, "heterogeneity"),
    fault_prob: Optional[float] = field_option(F, "fault_prob"),
    corrupt: Optional[str] = field_option(F, "corrupt"),
    corrupt_mode: Optional[str] = field_option(F, "corrupt_mode"),
    prune_every: Optional[int] = typer.Option(None, "--prune-every", help="Prune at every k-th local update "
                                                                         "(the `every` option of the methods that "
                                                                         "prune on a schedule)."),
    method_opt: list[str] = typer.Option([], "--method-opt", help="METHOD.OPTION=VALUE, repeatable, e.g. "
                                                                   "fedbuff.buffer=10 (see --list-methods)."),
    list_methods_: bool = typer.Option(False, "--list-methods", help="Print the methods, their papers, runtimes "
                                                                     "and options, and exit."),
    seed: Optional[int] = field_option(F, "seed"),
    device: Optional[str] = field_option(F, "device"),
    out: Path = typer.Option(Path("runs/aedfl"), "--out", help="Output folder."),
    resume: bool = typer.Option(False, "--resume", help="Keep the methods OUT/results.json already holds for this "
                                "same configuration and run only the others (all of them stay in results.json)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results OUT already holds (without it, "
                                   "a run that would drop or overwrite finished methods is refused)."),
    runtime: Optional[str] = field_option(F, "runtime"),
    peer_timeout: Optional[float] = field_option(F, "peer_timeout"),
    checkpoint_every: Optional[float] = field_option(F, "checkpoint_every"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file whose [config] sets the run (see "
                                                                 "`dflbench run`); options given here override it."),
):
    """Run AEDFL / ablations / baselines and print a Table 1-style table; write results.json, results.csv,
    accuracy_vs_time.png and, for the AEDFL variants, diagnostics.png."""
    console = Console()
    if list_methods_:
        console.print(methods_table())
        return
    names = None if methods is None else _methods(methods)
    options = collect_method_options(names or F.methods, method_opt, prune_every)
    cfg = with_config_file(F, config, given(
        model=model, dataset=dataset, data_dir=None if data_dir is None else str(data_dir), download=download,
        devices=devices, topology=topology, methods=names, alpha=alpha, target_acc=target_acc,
        time_budget=None if time_budget is None else (time_budget or NONE), max_updates=None if max_updates is None
        else (max_updates or NONE), batch_size=batch_size, local_steps=local_steps, lr=lr,
        slot_width=None if slot_width is None else (NONE if slot_width < 0 else slot_width),
        eval_interval=eval_interval, eval_samples=eval_samples, train_samples=train_samples,
        profiles=None if profiles is None else str(profiles), heterogeneity=heterogeneity, fault_prob=fault_prob,
        corrupt=None if corrupt is None else _devices(corrupt), corrupt_mode=corrupt_mode,
        method_options=options or None, seed=seed, device=device, runtime=runtime,
        peer_timeout=peer_timeout, checkpoint_every=checkpoint_every))
    distributed = cfg.runtime == "distributed"
    prepare_out(out, resume, overwrite)
    previous = None if overwrite else read_results(out)
    if previous is not None:
        guard_finished(out / "results.json", [r["method"] for r in previous["runs"]], cfg.methods,
                       config_differences(cfg, previous), resume)
    kept = finished_runs(cfg, previous) if resume else {}
    unfinished = [m for m in cfg.methods if m not in kept and (out / CHECKPOINTS / f"{m}.pt").exists()]
    if unfinished and not (resume or overwrite or distributed):
        raise UserError(f"{out / CHECKPOINTS} holds the checkpoints of unfinished runs of {', '.join(unfinished)}; "
                        "continue them with --resume, give another --out, or start them again with --overwrite")
    on_interrupt(lambda: _saved(out), "--resume")
    partial = {r["method"]: r["stop_reason"] for r in (previous or {}).get("runs", []) if r.get("partial")}
    if resume and (kept or partial or unfinished) and os.environ.get("RANK", "0") == "0":  # once: rank 0's
        again = [f"{m} again (its run stopped early: {partial[m]})" if m in partial else
                 f"{m} (from its checkpoint)" if m in unfinished and not distributed else m
                 for m in cfg.methods if m not in kept]
        console.print(f"resuming from {out / 'results.json'}: " + (f"kept {', '.join(kept)} (finished earlier, not "
                      "run again); " if kept else "") + f"running {', '.join(again) or 'nothing'}",
                      highlight=False, soft_wrap=True)
    if distributed:
        results = _run_distributed(cfg, out, previous, kept)
        if results is None:  # ranks other than 0 write nothing
            return
        _check_finite(results["runs"], out)
        written = keep_earlier_runs(results, previous, "method", "methods")
        paths = write_results(written, out)
    else:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not console.is_terminal, transient=True) as progress:
            task = progress.add_task("methods", total=len(cfg.methods), completed=len(kept))
            inner = progress.add_task("", total=100)

            lines = None if console.is_terminal else LogLines(console)

            def moving(name, fraction, latest):          # within a method: its share of T updates / the budget
                progress.update(inner, completed=100 * fraction, description=f"{name} (% of the run)")
                if lines is not None:
                    lines(name, fraction, latest)

            def done(r, so_far):                        # then run_aedfl_into writes it, before the next method
                _check_finite([r], out)
                progress.advance(task)
                console.print(f"{r['method']}: accuracy {r['accuracy']:.4f} after {r['virtual_time']:.1f} "
                              f"virtual s ({r['wall_time']:.1f} s wall)")

            written, paths = run_aedfl_into(cfg, out, previous, resume, done, moving)
    console.print(results_table({**written, "runs": [r for r in written["runs"] if r["method"] in cfg.methods]}))
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}", highlight=False, soft_wrap=True)
    if "png" not in paths or ("diagnostics_png" not in paths and diagnostics_panels(written["runs"])):
        raise typer.Exit(code=FIGURE_FAILED)               # the warning line is printed; the results are complete


def _run_distributed(cfg: AEDFLRunConfig, out: Path, previous: dict | None, kept: dict) -> dict | None:
    """Rank 0: the results of `cfg`'s one method run on the torchrun ranks (a finished run of it that --resume kept
    is not run again); the other ranks: None. A run that stops early is first written by rank 0 as a partial record
    beside OUT's other methods; then a failed device is one line on every rank naming it (exit 3), a signal the
    interrupt line (exit 130 / 143)."""
    from dflbench.recipes.aedfl_distributed import RunStopped, run_aedfl_distributed  # torch.distributed.rpc: here

    lead = os.environ.get("RANK", "0") == "0"
    if cfg.methods[0] in kept:
        return {**previous, "runs": [kept[cfg.methods[0]]]} if lead else None

    def started(t: int) -> None:           # one line (rank 0's) when training runs on every rank
        if t == 1 and lead:
            Console().print(f"{cfg.methods[0]}: training on {cfg.devices} devices (one per torchrun rank); a device "
                            f"without a heartbeat for {cfg.peer_timeout:g} s stops the run", highlight=False,
                            soft_wrap=True)

    try:
        return run_aedfl_distributed(cfg, on_update=started, heartbeat_timeout_s=cfg.peer_timeout)
    except RunStopped as stop:
        if stop.results is not None:
            write_results(keep_earlier_runs(stop.results, previous, "method", "methods"), out, pictures=False)
        if stop.signal is not None and not stop.failed:
            raise (Terminated() if stop.signal == "SIGTERM" else KeyboardInterrupt()) from None
        wrote = "wrote" if stop.results is not None else "rank 0 writes"
        raise RunAborted(f"{stop}; {wrote} the reporting devices' results to {out / 'results.json'} as a partial "
                         f"run; run {cfg.methods[0]} again with: {_continue_command()}") from None


def _saved(out: Path) -> str:
    """What an interrupted `dflbench aedfl` leaves: the methods in OUT/results.json, finished or partial (a
    distributed run that stopped early); under torchrun the ranks but 0 say that rank 0 writes them."""
    if os.environ.get("RANK", "0") != "0":
        return f"rank 0 writes what finished to {out / 'results.json'}"
    try:
        runs = (read_results(out) or {}).get("runs", [])
    except UserError:
        runs = []
    done = [r["method"] for r in runs if not r.get("partial")]
    partial = [r["method"] for r in runs if r.get("partial")]
    held = ([f"the finished methods {', '.join(done)}"] if done else []) + \
        ([f"the partial run (stopped early) of {', '.join(partial)}"] if partial else [])
    saved = f"{out / 'results.json'} holds {' and '.join(held)}" if held else "no method had finished"
    running = sorted(p.stem for p in (out / CHECKPOINTS).glob("*.pt"))
    if running:
        return f"{saved}; {out / CHECKPOINTS} holds the checkpoints of {', '.join(running)}, continued from there"
    return saved if held else f"{saved}, nothing was saved"


def _check_finite(runs: list[dict], out: Path) -> None:
    """A run whose numbers became NaN/Inf (its models diverged) stops the command with one line; the methods
    finished before it stay in OUT/results.json."""
    for r in runs:
        where = non_finite(r)
        if where is not None:
            raise UserError(f"--lr: {r['method']} diverged ({where} is not finite); lower the learning rate; "
                            f"{_saved(out)}")
