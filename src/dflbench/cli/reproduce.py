"""`dflbench reproduce NAME`: a shipped recipe (P2P-FT Table I, AEDFL Table 1) at a scale, over seeds, with the
report beside the paper's numbers. `execute` is shared with `dflbench run FILE.toml`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dflbench.errors import UserError
from dflbench.io import writable_folder
from dflbench.recipes.config import EXPERIMENTS, merge, parse_sets
from dflbench.recipes.reproduce import SCALES, SEEDS, Recipe, list_recipes, load_recipe, run_seeds

from .errors import on_interrupt, user_errors
from .options import param_option
from .progress import LogLines
from .threads import set_threads


def recipes_table() -> Table:
    """Every shipped recipe: name, title, scales and its stand-in dataset (never cut: long words fold)."""
    table = Table(title="dflbench reproduce NAME --scale paper|paper-cpu|cpu|smoke")
    table.add_column("recipe", no_wrap=True)
    table.add_column("title", overflow="fold", min_width=20)
    table.add_column("scales; stand-in", overflow="fold")
    for name in list_recipes():
        r = load_recipe(name)
        stand_in = r.stand_in[1].get("dataset", "yes") if r.stand_in else "-"
        table.add_row(name, r.title, f"{', '.join(r.scales)}; {stand_in}")
    return table


def execute(recipe: Recipe, scale: str | None, seeds: int | None, out: Path, sets: list[str], stand_in: bool,
            data_dir: Path | None, download: bool) -> Path:
    """Resolve the config, run the seeds (skipping finished ones) with a progress bar on a terminal, write the
    report; returns its path."""
    from dflbench.recipes.report import write_report

    extra = {k: v for k, v in (("data_dir", None if data_dir is None else str(data_dir)),
                               ("download", True if download else None)) if v is not None}
    cfg = recipe.resolve(scale, merge(extra, parse_sets(sets)), stand_in)
    kind = EXPERIMENTS[recipe.experiment]
    names = kind.part_names(cfg)
    writable_folder(out)
    on_interrupt(lambda: _saved(out), None)
    console = Console()
    for note in recipe.notes(scale, stand_in):
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not console.is_terminal, transient=True) as progress:
            count = SEEDS if seeds is None else seeds
            task = progress.add_task(f"{recipe.name}", total=count * len(names))
            inner = progress.add_task("", total=100, visible=kind.progress)

            lines = None if console.is_terminal else LogLines(console)

            def moving(seed, name, fraction, latest):   # within an AEDFL method: its share of T updates / budget
                progress.update(inner, completed=100 * fraction, description=f"seed {seed} {name} (% of the run)")
                if lines is not None:
                    lines(f"seed {seed} {name}", fraction, latest)

            def started(seed):
                progress.update(task, description=f"{recipe.name} seed {seed}: {names[0]}")

            def done(seed, run):
                name = run[kind.run_key]
                following = names[names.index(name) + 1] if names.index(name) + 1 < len(names) else "done"
                progress.update(task, advance=1, description=f"{recipe.name} seed {seed}: {following}")
                acc = run.get("accuracy", run.get("mean_accuracy"))
                virtual = f" after {run['virtual_time']:.1f} virtual s" if "virtual_time" in run else ""
                wall = run.get("wall_time", run.get("wall_time_s"))
                console.print(f"seed {seed} {name}: accuracy {acc:.4f}{virtual} ({wall:.1f} s wall)", highlight=False)

            folders = run_seeds(recipe, cfg, out, count, started, done, moving)
    except FileNotFoundError as exc:
        hint = (f"; or add --stand-in to run on {recipe.stand_in[1].get('dataset')} instead (the report says so)"
                if recipe.stand_in and not stand_in else "")
        raise FileNotFoundError(f"{exc}{hint}") from None
    report = write_report(recipe, scale, recipe.notes(scale, stand_in), folders, out,
                          names if kind.part_resume else None)
    console.print(f"wrote {report} and {out / 'results.json'}", highlight=False, soft_wrap=True)
    return report


def _saved(out: Path) -> str:
    """What an interrupted reproduction leaves: its finished seeds (the rerun skips them; an AEDFL seed also keeps
    its finished methods) and the checkpoints of the runs that were under way (the rerun continues them)."""
    done = sorted(p.parent.name for p in out.glob("seed-*/done.json"))
    started = sorted(p.parent.name for p in out.glob("seed-*/results.json") if p.parent.name not in done)
    running = sorted(f"{p.parent.parent.name}/{p.stem}" for p in out.glob("seed-*/checkpoints/*.pt"))
    parts = ([f"finished {', '.join(done)}"] if done else []) + (
        [f"partial results in {', '.join(started)}"] if started else []) + (
        [f"checkpoints of {', '.join(running)}, continued from there"] if running else [])
    return f"{out} holds {'; '.join(parts)}" if parts else "no seed had finished, nothing was saved"


@user_errors
def reproduce(
    name: Optional[str] = typer.Argument(None, help="Recipe name (see --list)."),
    list_: bool = typer.Option(False, "--list", help="Print the recipes and exit."),
    scale: str = typer.Option("cpu", "--scale", help="paper (the paper's setting, for a GPU) | paper-cpu (the paper's "
                                                     "setting as a CPU runs it, where a recipe has one: days) | cpu "
                                                     "(shrunk to about 15 min on a 2-core CPU) | smoke (a minute)."),
    seeds: Optional[int] = param_option(run_seeds, "seeds", help="Seeds to run (seed, seed+1, ...); finished seeds "
                                                                 "are skipped. P2P-FT seeds train stacked as one run "
                                                                 "per algorithm (same results; --set "
                                                                 "batch_seeds=false: one after another)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where the datasets live."),
    download: bool = typer.Option(False, "--download", help="Allow torchvision / IMDB downloads."),
    stand_in: bool = typer.Option(False, "--stand-in", help="Use the recipe's offline stand-in dataset (e.g. "
                                                            "Fashion-MNIST for EMNIST-letters); the report says so."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE over the recipe's config, repeatable (e.g. "
                                                     "--set epochs=5, --set method_options.fedbuff.buffer=4)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/reproduce/NAME-SCALE)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
):
    """Reproduce a paper table: run a named recipe over seeds and write report.md beside the paper's numbers."""
    if list_:
        Console().print(recipes_table())
        return
    if name is None:
        raise UserError("give a recipe name (dflbench reproduce --list shows them)")
    if scale not in SCALES:
        raise UserError(f"unknown --scale {scale!r}; valid: {', '.join(SCALES)}")
    set_threads(threads)
    execute(load_recipe(name), scale, seeds, out or Path("runs/reproduce") / f"{name}-{scale}", set_, stand_in,
            data_dir, download)
