"""Frozen-feature cache (P2P-FT Sec. V-A; docs/ARCHITECTURE.md, frozen-feature cache): run the frozen prefix once,
train the tail on the cache.

Valid only without random augmentation: the prefix must give the same features every epoch. A dataset whose
transform is random (torchvision `Random*`, `ColorJitter`, `RandAugment`, ... or any transform that returns
different values for the same item) is refused. Features live on the device when they fit (the estimate is
computed from one prefix output before caching), otherwise in pinned CPU memory (pinned only when CUDA exists).
"""

from __future__ import annotations

import logging
import sys
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .models import eval_mode

log = logging.getLogger(__name__)

_RANDOM_TRANSFORMS = ("Random", "ColorJitter", "RandAugment", "AutoAugment", "TrivialAugment", "AugMix",
                      "GaussianBlur", "GaussianNoise", "ElasticTransform", "Mixup", "CutMix")


def _transforms(dataset: object) -> list[object]:
    """Every transform reachable from `dataset` (through Subset-style `.dataset` wrappers and Compose lists)."""
    found, stack, seen = [], [dataset], set()
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, (torch.Tensor, str, int, float)) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if obj is not dataset:
            found.append(obj)
        for attr in ("dataset", "transform", "transforms", "target_transform"):
            child = getattr(obj, attr, None)
            stack.extend(child if isinstance(child, (list, tuple)) else [child])
    return found


def check_deterministic(dataset: Dataset) -> None:
    """Raise ValueError if `dataset` applies a random transform (by class name, or item 0 differs when re-read)."""
    random = sorted({type(t).__name__ for t in _transforms(dataset)
                     if type(t).__name__.startswith(_RANDOM_TRANSFORMS)})
    if not random and len(dataset) > 0:
        state = torch.random.get_rng_state()
        torch.manual_seed(0)
        a = dataset[0][0]
        torch.manual_seed(1)
        b = dataset[0][0]
        torch.random.set_rng_state(state)
        if isinstance(a, torch.Tensor) and (a.shape != b.shape or not torch.equal(a, b)):
            random = ["a transform that changes item 0 between reads"]
    if random:
        raise ValueError(f"cannot cache features of a dataset with random augmentation ({', '.join(random)}): "
                         "cached features would freeze one random draw; cache a deterministic transform or "
                         "train uncached")


class FeatureCache:
    """Prefix outputs of a whole dataset, computed once (no grad, eval mode, bf16 autocast on CUDA).

    The prefix is moved to `device` (a ViT prefix holds the whole model, so the model moves with it); its
    train/eval flags are restored afterwards.

    `features` [N, ...] and `labels` [N] sit on `device` when the estimate fits in `memory_fraction` of free
    device memory, else in (pinned) CPU memory. `batches()` yields (features, labels) on `device`;
    `gather(idx)` takes any index tensor, e.g. per-node indices [n, B] -> ([n, B, ...], [n, B]).
    """

    def __init__(self, prefix: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, num_workers: int = 0, memory_fraction: float = 0.8,
                 progress: bool | None = None):
        if len(dataset) == 0:
            raise ValueError("cannot cache features of an empty dataset")
        if not 0 < memory_fraction <= 1:
            raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
        check_deterministic(dataset)
        self.device = torch.device(device)
        on_cuda = self.device.type == "cuda"
        self.dtype = dtype or (torch.bfloat16 if on_cuda else torch.float32)
        prefix = prefix.to(self.device)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=on_cuda)
        n_items = len(dataset)
        feats = labels = None
        with eval_mode(prefix), torch.no_grad(), torch.autocast(self.device.type, torch.bfloat16, enabled=on_cuda):
            show = sys.stderr.isatty() if progress is None else progress
            start = 0
            for images, targets in tqdm(loader, desc="caching features", disable=not show):
                out = prefix(images.to(self.device, non_blocking=True))
                if feats is None:
                    feats, labels = self._allocate(n_items, out.shape[1:], memory_fraction)
                feats[start:start + len(out)] = out.to(feats.device, self.dtype)
                labels[start:start + len(out)] = torch.as_tensor(targets).to(labels.device)
                start += len(out)
        self.features, self.labels = feats, labels

    def _allocate(self, n_items: int, shape: torch.Size, memory_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        need = n_items * shape.numel() * torch.empty((), dtype=self.dtype).element_size()
        where = torch.device("cpu")
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            where = self.device if need <= memory_fraction * free else where
            log.info("feature cache needs %.2f GiB; %.2f GiB free on %s -> stored on %s",
                     need / 2**30, free / 2**30, self.device, where)
        else:
            log.info("feature cache needs %.2f GiB of CPU memory", need / 2**30)
        pin = where.type == "cpu" and torch.cuda.is_available()
        feats = torch.empty((n_items, *shape), dtype=self.dtype, device=where, pin_memory=pin)
        labels = torch.empty(n_items, dtype=torch.long, device=where, pin_memory=pin)
        self.nbytes = need
        return feats, labels

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features[indices], labels[indices]) on `device`; `indices` of any shape (e.g. [n, B] per node)."""
        idx = indices.to(self.features.device)
        return (self.features[idx].to(self.device, non_blocking=True),
                self.labels[idx].to(self.device, non_blocking=True))

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (features, labels) batches; shuffled with `generator` when `shuffle`."""
        if shuffle and generator is None:
            raise ValueError("shuffle=True needs an explicit torch.Generator (seeded) for reproducibility")
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for chunk in order.split(batch_size):
            yield self.gather(chunk)
