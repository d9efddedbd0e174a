"""`dflbench run FILE.toml [--set KEY=VALUE ...]`: any config or recipe file, with the reproduction report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dflbench.recipes.reproduce import load_recipe_file

from .errors import user_errors
from .p2pft import set_threads
from .reproduce import execute


@user_errors
def run(
    file: Path = typer.Argument(..., help="A TOML config (experiment = \"aedfl\" | \"p2pft\" and a [config] table) "
                                          "or a recipe file."),
    scale: Optional[str] = typer.Option(None, "--scale", help="A scale of a recipe file (default: its [config])."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds to run (seed, seed+1, ...); finished seeds are skipped."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE over the file's config, repeatable."),
    stand_in: bool = typer.Option(False, "--stand-in", help="Use the file's stand-in dataset."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where the datasets live."),
    download: bool = typer.Option(False, "--download", help="Allow torchvision / IMDB downloads."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/FILE-STEM)."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch default)."),
):
    """Run the experiment a TOML file describes and write results.json, report.md and the PNGs."""
    set_threads(threads)
    execute(load_recipe_file(file), scale, seeds, out or Path("runs") / file.stem, set_, stand_in, data_dir,
            download)
