"""`dflbench run FILE.toml [--set KEY=VALUE ...]`: any config or recipe file, with the reproduction report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dflbench.recipes.config import EXPERIMENTS
from dflbench.recipes.reproduce import load_recipe_file, run_seeds

from .errors import user_errors
from .options import param_option
from .reproduce import execute
from .threads import set_threads


@user_errors
def run(
    file: Path = typer.Argument(..., help=f"A TOML config (experiment = {' | '.join(map(repr, EXPERIMENTS))} and a "
                                          "[config] table) or a recipe file."),
    scale: Optional[str] = typer.Option(None, "--scale", help="A scale of a recipe file (default: its [config])."),
    seeds: Optional[int] = param_option(run_seeds, "seeds", help="Seeds to run (seed, seed+1, ...); finished seeds "
                                                                 "are skipped."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE over the file's config, repeatable."),
    stand_in: bool = typer.Option(False, "--stand-in", help="Use the file's stand-in dataset."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where the datasets live."),
    download: bool = typer.Option(False, "--download", help="Allow torchvision / IMDB downloads."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/FILE-STEM)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
):
    """Run the experiment a TOML file describes and write results.json, report.md and the PNGs."""
    set_threads(threads)
    execute(load_recipe_file(file), scale, seeds, out or Path("runs") / file.stem, set_, stand_in, data_dir,
            download)
