"""`ImageData`: a dataset held in memory as uint8 tensors, channel-first, plus its class names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dflbench.errors import UserError


@dataclass(frozen=True)
class ImageData:
    """Train/test images as uint8 `[N, C, H, W]` tensors (C = 1 or 3) with int64 labels in `[0, num_classes)`."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self):
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
                raise UserError(f"{self.name}: x_{split} must be uint8 [N, C, H, W] with C in (1, 3), "
                                f"got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise UserError(f"{self.name}: y_{split} must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise UserError(f"{self.name}: y_{split} has labels outside [0, {len(self.classes)}) "
                                f"(found {int(y.min())}..{int(y.max())})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])


def to_nchw_uint8(x) -> torch.Tensor:
    """uint8 NHW (grayscale) or NHWC (channels last, C in 1/3) array -> uint8 `[N, C, H, W]` tensor."""
    x = torch.as_tensor(np.array(x, copy=True))
    if x.dtype != torch.uint8:
        raise UserError(f"images must be uint8, got {x.dtype}")
    if x.dim() == 3:
        return x.unsqueeze(1).contiguous()
    if x.dim() == 4 and x.shape[-1] in (1, 3):
        return x.permute(0, 3, 1, 2).contiguous()
    raise UserError(f"images must be uint8 NHW or NHWC with 1 or 3 channels, got shape {tuple(x.shape)}")


def random_subset(total: int, n: int | None, seed: int) -> torch.Tensor | None:
    """Indices of `n` of `total` samples drawn without replacement by a `seed`ed permutation (None: keep all). The
    recipes' `cpu` scales shrink a dataset with it; asking for more samples than there are is an error, not a
    silent "all of them"."""
    if n is None:
        return None
    if not 1 <= n <= total:
        raise UserError(f"train_samples must be in 1..{total} (the dataset has {total} training samples), got {n}; "
                        "lower it (--train-samples N; in a recipe --set train_samples=N, or none for all)")
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
