"""Batched tensor transforms from a timm model's data config: uint8 [B, C, h, w] -> normalized float [B, C', H, W].

x <- x / 255; grayscale -> RGB by channel repeat (RGB -> gray by ITU-R 601 luma if the model wants 1 channel);
resize to the model's input size (its interpolation, antialiased); x <- (x - mean) / std. Small images are resized
straight to the input size (no crop_pct center crop: an 8x8 or 32x32 image has no border to spare).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from dflbench.errors import UserError

LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class BatchTransform:
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> "BatchTransform":
        """Mean, std, interpolation from `timm.data.resolve_model_data_config(model)`; the input size is the one the
        model was built with (`patch_embed.img_size` when `img_size=` overrode the pretrained config)."""
        from timm.data import resolve_model_data_config

        cfg = resolve_model_data_config(model)
        size = tuple(cfg["input_size"])
        built = getattr(getattr(model, "patch_embed", None), "img_size", None)
        if built is not None:
            size = (size[0], int(built[0]), int(built[1]))
        return cls(size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bicubic"))

    def __post_init__(self):
        c = self.input_size[0]
        if c not in (1, 3) or len(self.mean) != c or len(self.std) != c:
            raise UserError(f"input_size {self.input_size} needs 1 or 3 channels with matching mean/std, "
                            f"got mean {self.mean}, std {self.std}")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise UserError(f"interpolation must be bilinear, bicubic or nearest, got {self.interpolation!r}")

    def __call__(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"expected a uint8 [B, C, H, W] batch, got {x.dtype} {tuple(x.shape)}")
        out = x.to(dtype) / 255.0
        c = self.input_size[0]
        if out.shape[1] == 1 and c == 3:
            out = out.expand(-1, 3, -1, -1)
        elif out.shape[1] == 3 and c == 1:
            out = (out * out.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
        size = list(self.input_size[1:])
        if list(out.shape[-2:]) != size:
            out = F.resize(out, size, interpolation=InterpolationMode(self.interpolation), antialias=True)
        return F.normalize(out, list(self.mean), list(self.std))
