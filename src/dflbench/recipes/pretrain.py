"""Centralized supervised pretraining of a whole timm model: our offline stand-in for ImageNet weights.

The saved state dict loads with `dflbench.vision.create_model(..., checkpoint=PATH)` (the head may differ),
i.e. `dflbench p2pft --checkpoint PATH`. AdamW on cross-entropy, seeded shuffling, bf16 autocast on CUDA.

Default lr 1e-4 (no warmup, no schedule): measured on the Tiny-ImageNet subset (vit_small_patch16_224 at 32x32 in
8x8 patches, batch 64, 2 epochs, seed 0), lr 1e-3 leaves the model at chance (train loss 5.30 = ln 200, test
accuracy 0.75%) while 1e-4 reaches 4.0% (loss 4.91); DeiT's recipe (5e-4 per 512 samples, with warmup) scales to
6e-5 at batch 64.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dflbench.data import BatchTransform, load_dataset
from dflbench.errors import check_numbers, for_option, user_input
from dflbench.io import atomic_torch_save, atomic_write_json
from dflbench.provenance import code_provenance
from dflbench.registry import option
from dflbench.runtime.backend import resolve_device
from dflbench.vision import check_model_name, create_model

# numeric fields -> (the option as the user gives it, the interval it must lie in; `dflbench.errors.check_numbers`)
PRETRAIN_NUMBERS = {
    "epochs": ("--epochs", "[1, inf)"), "lr": ("--lr", "(0, inf)"), "weight_decay": ("--weight-decay", "[0, inf)"),
    "batch_size": ("--batch-size", "[1, inf)"), "seed": ("--seed", "[0, inf)"),
    "image_size": ("--image-size", "[1, inf)"),
}


@dataclass(frozen=True)
class PretrainRunConfig:
    model: str = option("vit_small_patch16_224", "timm model name.")
    dataset: str = option("tiny-imagenet", "Dataset name, npz:PATH or folder:PATH.")
    epochs: int = option(10, "Training epochs.")
    lr: float = option(1e-4, "AdamW learning rate (1e-3 leaves a small ViT at chance).")
    weight_decay: float = option(0.05, "AdamW weight decay.")
    batch_size: int = option(64, "Batch size.")
    device: str = option("auto", "auto | cpu | cuda.")
    seed: int = option(0, "Seed of the initial model and the shuffling.")
    model_kwargs: tuple[tuple[str, Any], ...] = option((), "timm kwargs, e.g. img_size=32,patch_size=4.")
    data_dir: str | None = option(None, "Dataset root folder.")
    download: bool = option(False, "Allow torchvision downloads.")
    image_size: int = option(224, "Load size for datasets with varying image sizes.")

    def __post_init__(self):
        """Every field is checked here, before any data loads; an error names the option as the user gives it."""
        check_numbers(self, PRETRAIN_NUMBERS)
        with for_option("--model"):
            check_model_name(self.model)


@torch.no_grad()
def accuracy(model, transform, x, y, device, batch_size=512, autocast=None) -> float:
    correct = 0
    for chunk in torch.arange(len(y)).split(batch_size):
        with autocast:
            logits = model(transform(x[chunk].to(device)))
        correct += int((logits.argmax(-1) == y[chunk].to(device)).sum())
    return correct / max(len(y), 1)


def run_seed(cfg: PretrainRunConfig, folder: Path, on_run_done=None, on_progress=None) -> None:
    """One seed of a reproduction (`recipes.config.Experiment.run_seed`): `pretrain` into `folder`/backbone.pt and
    `folder`/results.json, `pretrain`'s record with its one run (`run`: "pretrain": the history, the final test
    accuracy and wall time, the checkpoint); `on_run_done(run)` after it (no progress within it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = pretrain(cfg, folder / "backbone.pt", progress=False)
    last = info["history"][-1]
    run = {"run": "pretrain", "accuracy": last["test_accuracy"], "wall_time_s": last["wall_time_s"],
           "history": info["history"], "checkpoint": info["checkpoint"]}
    atomic_write_json(folder / "results.json", {**info, "code": code_provenance(), "runs": [run]})
    if on_run_done is not None:
        on_run_done(run)


def pretrain(cfg: PretrainRunConfig, out: str | Path, progress: bool | None = None) -> dict:
    """Train every parameter on `cfg.dataset`; write the state dict to `out` and `out`.json (config + history)."""
    out = Path(out)
    device = str(resolve_device(cfg.device))
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        with user_input("--model/--model-kwargs", ValueError, TypeError):
            model = create_model(cfg.model, data.num_classes, **dict(cfg.model_kwargs))
    model = model.to(device)
    transform = BatchTransform.from_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    on_cuda = torch.device(device).type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda)
    show = sys.stderr.isatty() if progress is None else progress
    history, start = [], time.perf_counter()
    from rich.progress import Progress

    with Progress(disable=not show, transient=True) as bar:
        task = bar.add_task("pretrain", total=cfg.epochs)
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            total, count = 0.0, 0
            for idx in torch.randperm(len(data.y_train), generator=gen).split(cfg.batch_size):
                x, y = transform(data.x_train[idx].to(device)), data.y_train[idx].to(device)
                with autocast:
                    loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()) * len(idx), count + len(idx)
            model.eval()
            acc = accuracy(model, transform, data.x_test, data.y_test, device, autocast=autocast)
            history.append({"epoch": epoch, "train_loss": total / count, "test_accuracy": acc,
                            "wall_time_s": time.perf_counter() - start})
            bar.update(task, completed=epoch, description=f"pretrain epoch {epoch}/{cfg.epochs} test acc {acc:.4f}")
    atomic_torch_save(out, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    info = {"config": {**asdict(cfg), "model_kwargs": dict(cfg.model_kwargs), "device": device},
            "data": {"name": data.name, "classes": len(data.classes), "train": len(data.y_train)},
            "history": history, "checkpoint": str(out)}
    atomic_write_json(out.with_suffix(out.suffix + ".json"), info)
    return info
