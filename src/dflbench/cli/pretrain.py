"""`dflbench pretrain`: centralized supervised training of a backbone for `dflbench p2pft --checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dflbench.recipes.p2pft import parse_model_kwargs
from dflbench.recipes.pretrain import PretrainConfig
from dflbench.recipes.pretrain import pretrain as run_pretrain

from .errors import user_errors
from .p2pft import set_threads


@user_errors
def pretrain(
    model: str = typer.Option("vit_small_patch16_224", "--model", help="timm model name."),
    dataset: str = typer.Option("tiny-imagenet", "--dataset", help="Dataset name, npz:PATH or folder:PATH."),
    epochs: int = typer.Option(10, "--epochs"),
    out: Path = typer.Option(Path("backbone.pt"), "--out", help="Where to write the state dict."),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW learning rate (1e-3 leaves a small ViT at chance)."),
    weight_decay: float = typer.Option(0.05, "--weight-decay"),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
    model_kwargs: str = typer.Option("", "--model-kwargs", help="timm kwargs, e.g. img_size=32,patch_size=4."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset root folder."),
    download: bool = typer.Option(False, "--download", help="Allow torchvision downloads."),
    image_size: int = typer.Option(224, "--image-size", help="Load size for datasets with varying image sizes."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch default)."),
):
    """Train a whole timm model on a dataset (AdamW) and save its state dict (our offline ImageNet substitute)."""
    set_threads(threads)
    cfg = PretrainConfig(model=model, dataset=dataset, epochs=epochs, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, device=device, seed=seed, model_kwargs=parse_model_kwargs(model_kwargs),
                         data_dir=None if data_dir is None else str(data_dir), download=download,
                         image_size=image_size)
    info = run_pretrain(cfg, out)
    last = info["history"][-1]
    Console().print(f"pretrained {model} on {info['data']['name']} for {epochs} epochs: test accuracy "
                    f"{100 * last['test_accuracy']:.2f}% ({last['wall_time_s']:.1f} s); wrote {out} and {out}.json")
