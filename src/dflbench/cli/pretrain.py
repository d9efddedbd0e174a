"""`dflbench pretrain`: centralized supervised training of a backbone for `dflbench p2pft --checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dflbench.recipes.config import parse_model_kwargs
from dflbench.recipes.pretrain import PretrainRunConfig
from dflbench.recipes.pretrain import pretrain as run_pretrain

from .errors import user_errors
from .options import field_option, given
from .threads import set_threads

F = PretrainRunConfig


@user_errors
def pretrain(
    model: Optional[str] = field_option(F, "model"),
    dataset: Optional[str] = field_option(F, "dataset"),
    epochs: Optional[int] = field_option(F, "epochs"),
    out: Path = typer.Option(Path("backbone.pt"), "--out", help="Where to write the state dict."),
    lr: Optional[float] = field_option(F, "lr"),
    weight_decay: Optional[float] = field_option(F, "weight_decay"),
    batch_size: Optional[int] = field_option(F, "batch_size"),
    device: Optional[str] = field_option(F, "device"),
    seed: Optional[int] = field_option(F, "seed"),
    model_kwargs: Optional[str] = field_option(F, "model_kwargs"),
    data_dir: Optional[Path] = field_option(F, "data_dir"),
    download: bool = field_option(F, "download", flag=True),
    image_size: Optional[int] = field_option(F, "image_size"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
):
    """Train a whole timm model on a dataset (AdamW) and save its state dict (our offline ImageNet substitute)."""
    set_threads(threads)
    cfg = F(**given(model=model, dataset=dataset, epochs=epochs, lr=lr, weight_decay=weight_decay,
                    batch_size=batch_size, device=device, seed=seed,
                    model_kwargs=None if model_kwargs is None else parse_model_kwargs(model_kwargs),
                    data_dir=None if data_dir is None else str(data_dir), download=download, image_size=image_size))
    info = run_pretrain(cfg, out)
    last = info["history"][-1]
    Console().print(f"pretrained {cfg.model} on {info['data']['name']} for {cfg.epochs} epochs: test accuracy "
                    f"{100 * last['test_accuracy']:.2f}% ({last['wall_time_s']:.1f} s); wrote {out} and {out}.json")
