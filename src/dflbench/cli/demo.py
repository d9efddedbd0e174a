"""`dflbench demo`: P2P-FT vs Local-FT vs centralized on the embedded digits data (CPU, under two minutes)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dflbench.recipes.demo import DEMO, THREADS, check_claim, demo_config
from dflbench.recipes.p2pft import run_p2pft

from .errors import user_errors
from .options import field_option, given, with_default
from .p2pft import print_partition, results_table, wrote
from .threads import set_threads


@user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Output folder (results.json, results.csv, "
                                                              "accuracy.png, checkpoints/)."),
    epochs: Optional[int] = field_option(DEMO, "epochs"),
    threads: Optional[int] = typer.Option(None, "--threads", help=with_default("torch CPU threads (1 is fastest "
                                                                               "for this tiny model).", THREADS)),
):
    """P2P-FT in miniature: 4 nodes, class-disjoint digits, tiny ViT; exits 1 if the paper's claim fails."""
    set_threads(THREADS if threads is None else threads)
    console = Console()
    console.print("dflbench demo: 4 nodes, digits split by class (0-2, 3-5, 6-7, 8-9), tiny timm ViT, "
                  "last block + head trained, random frozen prefix")
    run = run_p2pft(demo_config(**given(epochs=epochs)), out)
    print_partition(console, run.results)
    console.print(results_table(run.results))
    holds, text = check_claim(run.results)
    console.print(text)
    console.print(wrote(run.results, out), highlight=False, soft_wrap=True)
    if not holds:
        raise typer.Exit(code=1)
