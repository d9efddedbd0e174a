"""timm model factory for P2P-FT (Sec. V-A): any timm model with its head sized to the global class count.

`create_model` wraps `timm.create_model`; `load_checkpoint` loads a local state dict with
`torch.load(weights_only=True)` and accepts only the head (the classifier named in the model's pretrained
config) as differing: any other missing, unexpected or mis-shaped key is an error, never a silent partial load.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import timm
import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

ARCHITECTURES = {"vit": VisionTransformer, "swin": SwinTransformer}


def architecture_of(model: nn.Module) -> str:
    """'vit' for timm VisionTransformer (ViT, DeiT, distilled DeiT), 'swin' for SwinTransformer."""
    for name, cls in ARCHITECTURES.items():
        if isinstance(model, cls):
            return name
    raise ValueError(
        f"unsupported architecture {type(model).__name__}: dflbench.vision knows the timm classes "
        f"{', '.join(c.__name__ for c in ARCHITECTURES.values())} (ViT, DeiT incl. distilled, Swin); "
        "use one of those model families")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block; its train/eval flags are restored on exit (also on exceptions)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@dataclass(frozen=True)
class CheckpointReport:
    """What `load_checkpoint` did: head keys left at their fresh initialization, and those it loaded."""

    path: str
    loaded: tuple[str, ...]
    head_skipped: tuple[str, ...]


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or "head"
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(n + "." for n in names)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: pass the path of a saved state dict")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle/zip/runtime errors for files that are not checkpoints
        reason = ("it holds objects other than tensors, refused because loading them could run code"
                  if "Weights only load failed" in str(err) else
                  f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        raise ValueError(f"checkpoint {path} is not a readable torch state dict ({reason}); save one with "
                         "torch.save(model.state_dict(), path)") from err
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict of named tensors; "
                         "save one with torch.save(model.state_dict(), path)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_checkpoint(model: nn.Module, path: str | Path) -> CheckpointReport:
    """Load a local state dict into `model`; only head keys may be missing, extra or differently shaped."""
    path = Path(path)
    state = _read_state_dict(path)
    own = model.state_dict()
    heads = _head_prefixes(model)
    is_head = lambda k: k.startswith(heads)  # noqa: E731
    missing = sorted(k for k in own if k not in state and not is_head(k))
    unexpected = sorted(k for k in state if k not in own and not is_head(k))
    mismatched = sorted(f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in state
                        if k in own and state[k].shape != own[k].shape and not is_head(k))
    if missing or unexpected or mismatched:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", mismatched)) if keys]
        raise ValueError(f"checkpoint {path} does not match {type(model).__name__} outside the head: "
                         + "; ".join(parts) + ". Check the model name and timm kwargs used to save it")
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(usable, strict=False)
    skipped = tuple(sorted(k for k in own if is_head(k) and k not in usable))
    return CheckpointReport(str(path), tuple(sorted(usable)), skipped)


def check_model_name(name: str) -> str:
    """The timm name `name` stands for (the hub's `timm/` prefix dropped); ValueError with similar names when timm
    has no such model (`hf-hub:` ids are not checked: they are online only)."""
    name = name.removeprefix("timm/")  # the paper's hub ids, e.g. timm/vit_small_patch16_224: same timm name
    if not name.startswith(("hf-hub:", "hf_hub:")) and not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0].split('_')[0]}*")[:10]
        raise ValueError(f"unknown timm model {name!r}; similar names: {', '.join(close) or 'none'} "
                         "(see timm.list_models())")
    return name


def create_model(name: str, num_classes: int, pretrained: bool = False, checkpoint: str | Path | None = None,
                 **timm_kwargs) -> nn.Module:
    """A timm model `name` with a fresh `num_classes` head, optionally initialised from a local checkpoint.

    `name`: a timm name, optionally with a pretrained tag (`swin_small_patch4_window7_224.ms_in22k`) or the
    hub's `timm/` prefix as the paper writes it; `hf-hub:` ids go to timm unchanged (online only).
    `pretrained=True` downloads timm's weights (online users); `checkpoint` loads a local state dict after
    creation (the head is expected to differ and stays freshly initialised when its shape differs).
    Tiny CPU variants come through timm kwargs, e.g. `img_size=32, patch_size=4, depth=4`.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    name = check_model_name(name)
    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **timm_kwargs)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model
