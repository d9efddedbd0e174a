"""Stacked functional models and per-device data for the asynchronous simulator.

See docs/ARCHITECTURE.md, stacked node state. All devices' parameters live in one flat `[D, P]` tensor
(`dflbench.aggregation.flat` layout). Gradients and predictions of any subset of devices come from one
`torch.func.vmap` over `functional_call`, never a loop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from dflbench.aggregation.flat import FlatSpec, flatten_state, unflatten
from dflbench.errors import UserError
from dflbench.pruning import count_flops, masked_mfp

from .async_rng import STREAM_BATCH, counter_randint


class StackedModel:
    """`model`'s architecture evaluated at stacked flat parameters `[B, P]`.

    The model must hold no buffers (use `track_running_stats=False` BatchNorm, as `dflbench.models` does), so a
    device's whole state is its flat parameter vector.
    """

    def __init__(self, model: nn.Module):
        if any(True for _ in model.buffers()):
            raise UserError("StackedModel: the model has buffers (e.g. BatchNorm running stats); build it without "
                            "them (BatchNorm2d(track_running_stats=False)) so devices can be stacked")
        params = {k: v.detach() for k, v in model.named_parameters()}
        self.spec = FlatSpec.from_state_dict(params)
        self.init = flatten_state(params, self.spec).clone()
        self.module = copy.deepcopy(model).to("meta")
        self.template = copy.deepcopy(model).cpu()                   # a real module, for per-model tools

        def loss(flat, x, y):
            out = functional_call(self.module, unflatten(flat, self.spec), (x,))
            return F.cross_entropy(out, y)

        def logits(flat, x):
            return functional_call(self.module, unflatten(flat, self.spec), (x,))

        self._grad = vmap(grad_and_value(loss), randomness="different")
        self._logits = vmap(logits, in_dims=(0, None), randomness="different")

    @property
    def numel(self) -> int:
        return self.spec.numel

    def mfp(self, example: torch.Tensor, masks: torch.Tensor | None = None) -> float | torch.Tensor:
        """MFP of AEDFL Table 1 (`dflbench.pruning`'s counter: million MACs per sample of the conv / linear layers)
        on inputs shaped like `example` (one sample), each layer scaled by its weight density under `masks [D, P]`
        (a tensor [D]); dense when `masks` is None (a float)."""
        example = example[:1].cpu()
        if masks is None:
            return count_flops(self.template, example).mfp
        return masked_mfp(self.template, example, masks.cpu())

    def loss_and_grad(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-device mean cross-entropy `[B]` and its gradient `[B, P]` at `flat [B, P]` on batches `x [B, b, ...]`."""
        self.module.train()
        g, loss = self._grad(flat, x, y)
        return loss, g

    @torch.no_grad()
    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits `[B, n, C]` of every model in `flat [B, P]` on the shared inputs `x [n, ...]`."""
        self.module.eval()
        return self._logits(flat, x)

    def accuracy_and_loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                          chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Accuracy `[B]` and mean loss `[B]` of every model in `flat [B, P]` on the shared set `x [N, ...]`."""
        self.module.eval()
        correct = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
        loss = torch.zeros_like(correct)
        for s in range(0, x.shape[0], chunk):
            out = self._logits(flat, x[s:s + chunk])                     # [B, n, C]
            yb = y[s:s + chunk]
            correct += (out.argmax(-1) == yb).sum(-1)
            loss += F.cross_entropy(out.flatten(0, 1), yb.repeat(flat.shape[0]), reduction="none").view(
                flat.shape[0], -1).sum(-1)
        return correct / x.shape[0], loss / x.shape[0]


def normalize_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] ((x / 255 - 0.5) / 0.5)."""
    return x.float().div_(127.5).sub_(1.0)


@dataclass
class DeviceData:
    """The training set held once, plus per-device index lists padded into `parts [D, max_s]` with `sizes [D]`.

    Row d holds device `ids[d]` (default: row d is device d; a torch.distributed rank holds one row, its own
    device). A device samples its minibatch uniformly (with replacement) from its own indices with the counter-based
    RNG keyed by (device id, local update, step), so every device draws the same batches in exact and batched mode
    and on any host. `prepare` maps a gathered raw batch to model input (uint8 images -> normalized float; tokens
    unchanged).
    """

    x: torch.Tensor
    y: torch.Tensor
    parts: torch.Tensor
    sizes: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    prepare: Callable[[torch.Tensor], torch.Tensor]
    ids: torch.Tensor

    @classmethod
    def from_indices(cls, x, y, indices, x_test, y_test, prepare=None, device="cpu", ids=None) -> "DeviceData":
        indices = [np.asarray(ix, dtype=np.int64) for ix in indices]
        empty = [i for i, ix in enumerate(indices) if len(ix) == 0]
        if empty:
            raise UserError(f"devices {empty[:8]} have no training samples; use fewer devices or a larger alpha")
        width = max(len(ix) for ix in indices)
        parts = torch.stack([torch.as_tensor(np.resize(ix, width)) for ix in indices]).to(device)
        sizes = torch.tensor([len(ix) for ix in indices], device=device)
        ids = torch.arange(len(indices)) if ids is None else torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        if len(ids) != len(indices) or (ids < 0).any() or ids.unique().numel() != len(ids):
            raise ValueError(f"DeviceData: ids must be {len(indices)} distinct device indices >= 0 (one per index "
                             f"list), got {ids.tolist()}")
        if prepare is None:
            prepare = normalize_uint8 if x.dtype == torch.uint8 else (lambda t: t)
        return cls(x.to(device), y.to(device), parts, sizes, x_test.to(device), y_test.to(device), prepare,
                   ids.to(device))

    @property
    def n(self) -> int:
        return int(self.sizes.shape[0])

    def batch(self, devs: torch.Tensor, t: torch.Tensor, step: int, batch_size: int,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Minibatches `[B, b, ...]` for rows `devs [B]` at local update `t [B]`, SGD step `step`."""
        j = torch.arange(batch_size, device=devs.device)
        pos = counter_randint(self.sizes[devs].unsqueeze(1), seed, STREAM_BATCH, self.ids[devs].unsqueeze(1),
                              t.unsqueeze(1), step, j, device=devs.device)
        idx = self.parts[devs.unsqueeze(1), pos]                         # [B, b]
        return self.prepare(self.x[idx]), self.y[idx]


def local_sgd(net: StackedModel, data: DeviceData, devs: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, *,
              steps: int | torch.Tensor, lr: float | torch.Tensor, batch_size: int, seed: int,
              masks: torch.Tensor | None = None, grad_fn=None):
    """`steps` SGD steps (AEDFL eq. 4.5) for rows `devs [B]` of `data` from `x0 [B, P]` (vmapped), on the minibatches
    keyed by (device, `t [B]`, step).

    `masks [B, P]` keeps pruned entries at zero; `grad_fn(x, g) -> g` adds terms (e.g. FedProx's proximal
    gradient); a `[B]` tensor `steps` gives per-device step counts (FedNova), a `[B]` tensor `lr` per-device
    learning rates. Returns the new models, the mean minibatch loss per device (float64, CPU) and the last gradient.
    """
    dev = x0.device
    per_dev = torch.as_tensor(steps, device=dev).expand(devs.shape[0])
    lr = torch.as_tensor(lr, dtype=x0.dtype, device=dev).reshape(-1, 1) if torch.is_tensor(lr) else lr
    x = x0 if masks is None else x0 * masks
    devs, t = devs.to(dev), t.to(dev)
    loss_sum = torch.zeros(devs.shape[0], dtype=torch.float64, device=dev)
    g = torch.zeros_like(x)
    for s in range(int(per_dev.max())):
        xb, yb = data.batch(devs, t, s, batch_size, seed)
        loss, g = net.loss_and_grad(x, xb, yb)
        if grad_fn is not None:
            g = grad_fn(x, g)
        if masks is not None:
            g = g * masks
        active = (per_dev > s).to(x.dtype).unsqueeze(1)
        x = x - lr * g * active
        loss_sum += loss.double() * active.squeeze(1)
    return x, (loss_sum / per_dev.clamp(min=1)).cpu(), g
