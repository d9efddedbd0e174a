"""Stacked functional models and per-device data for the asynchronous simulator.

See docs/ARCHITECTURE.md, stacked node state. All devices' parameters live in one flat `[D, P]` tensor
(`dflbench.aggregation.flat` layout). Gradients and predictions of any subset of devices come from the kernel
path `StackedModel` picks by measurement (vmap over `functional_call`, or a preallocated model for small batches).
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
from dflbench.pruning import count_flops, structured_mfp

from .async_rng import STREAM_BATCH, counter_randint


class StackedModel:
    """`model`'s architecture evaluated at stacked flat parameters `[B, P]`.

    The model must hold no buffers (use `track_running_stats=False` BatchNorm, as `dflbench.models` does), so a
    device's whole state is its flat parameter vector.

    Kernel path (`path`, chosen by measurement; `bench/RESULTS.md`, "Where the simulator spends its time"):
      "loop"  one preallocated copy of the model whose parameters are views of one flat buffer: per device, copy its
              row in, forward, `torch.autograd.grad` (the plain PyTorch step, without optimizer or allocations);
      "vmap"  `torch.func.vmap` over `functional_call`, `CPU_CHUNK` devices per call on CPU (bounded activations: 100
              LeNet-5 devices at batch 32 in one call page-fault through 44 MB per activation);
      "auto"  "vmap" on CUDA (one kernel launch per layer for all devices). On CPU "vmap" to train more than one
              device on minibatches of at most `CPU_VMAP_MAX_BATCH` samples, else "loop". Measured on one CPU thread
              with LeNet-5 (bench/RESULTS.md): at 100 devices vmap costs 0.72x the loop per client-step at batch 8,
              0.97x at 16; at batch 32 in the simulator (fresh minibatches each step) FedAvg at 100 clients/round
              ran at 0.86x a plain PyTorch loop with vmap and 1.02x with "loop"; for one device vmap costs 1.9x.
              Evaluation on CPU always loops (89 us per model-sample against vmap's 124).
    Every path computes the same per-device loss and gradient (to float rounding; tests/engines_async).
    """

    CPU_CHUNK = 25                      # devices per vmapped call on CPU
    CPU_VMAP_MAX_BATCH = 8

    def __init__(self, model: nn.Module, path: str = "auto"):
        if path not in ("auto", "loop", "vmap"):
            raise UserError(f"StackedModel: path must be 'auto', 'loop' or 'vmap', got {path!r}")
        if any(True for _ in model.buffers()):
            raise UserError("StackedModel: the model has buffers (e.g. BatchNorm running stats); build it without "
                            "them (BatchNorm2d(track_running_stats=False)) so devices can be stacked")
        params = {k: v.detach() for k, v in model.named_parameters()}
        self.path = path
        self.spec = FlatSpec.from_state_dict(params)
        self.init = flatten_state(params, self.spec).clone()
        self.module = copy.deepcopy(model).to("meta")
        self.template = copy.deepcopy(model).cpu()                   # a real module, for per-model tools
        self._loop = None                                            # (module, flat buffer, params), built lazily

        def loss(flat, x, y):
            out = functional_call(self.module, unflatten(flat, self.spec), (x,))
            return F.cross_entropy(out, y)

        self._loss = vmap(loss, randomness="different")

        def logits(flat, x):
            return functional_call(self.module, unflatten(flat, self.spec), (x,))

        self._grad = vmap(grad_and_value(loss), randomness="different")
        self._logits = vmap(logits, in_dims=(0, None), randomness="different")

    @property
    def numel(self) -> int:
        return self.spec.numel

    def mfp(self, example: torch.Tensor, masks: torch.Tensor | None = None) -> float | torch.Tensor:
        """MFP of AEDFL Table 1 (`dflbench.pruning`'s counter: million MACs per sample of the conv / linear layers)
        on inputs shaped like `example` (one sample): of each device's pruned structure under `masks [D, P]`
        (`structured_mfp`, a tensor [D]: a removed unit also removes the weights reading it); dense when `masks` is
        None (a float)."""
        example = example[:1].cpu()
        if masks is None:
            return count_flops(self.template, example).mfp
        return structured_mfp(self.template, example, masks.cpu())

    def kernel_path(self, n: int, device: torch.device, batch: int | None = None) -> tuple[str, int]:
        """(path, devices per call) to train `n` devices on minibatches of `batch` samples on `device`, or to
        evaluate them (`batch` None); class docstring."""
        cpu = device.type == "cpu"
        small = batch is not None and n > 1 and batch <= self.CPU_VMAP_MAX_BATCH
        if self.path == "loop" or (self.path == "auto" and cpu and not small):
            return "loop", 1
        return "vmap", self.CPU_CHUNK if cpu else n

    def _loop_model(self, flat: torch.Tensor) -> tuple[nn.Module, torch.Tensor, list[torch.Tensor]]:
        """The preallocated module of the "loop" path on `flat`'s device and dtype: its parameters are views of
        one flat buffer in the spec's order, so loading a device's model is one copy."""
        if self._loop is None or self._loop[1].device != flat.device or self._loop[1].dtype != flat.dtype:
            module = copy.deepcopy(self.template).to(device=flat.device, dtype=flat.dtype)
            buf = torch.zeros(self.numel, device=flat.device, dtype=flat.dtype)
            named = dict(module.named_parameters())
            params = []
            for name, shape, lo, hi in zip(self.spec.names, self.spec.shapes, self.spec.offsets,
                                           self.spec.offsets[1:]):
                named[name].data = buf[lo:hi].view(shape)
                params.append(named[name].requires_grad_(True))     # every entry of the flat vector, as vmap's grad
            self._loop = module, buf, params
        return self._loop

    def loss_and_grad(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-device mean cross-entropy `[B]` and its gradient `[B, P]` at `flat [B, P]` on batches `x [B, b, ...]`."""
        path, chunk = self.kernel_path(flat.shape[0], flat.device, batch=x.shape[1])
        if path == "vmap":
            self.module.train()
            parts = [self._grad(flat[s:s + chunk], x[s:s + chunk], y[s:s + chunk])
                     for s in range(0, flat.shape[0], chunk)]
            if len(parts) == 1:
                return parts[0][1], parts[0][0]
            return torch.cat([p[1] for p in parts]), torch.cat([p[0] for p in parts])
        module, buf, params = self._loop_model(flat)
        module.train()
        g = torch.empty_like(flat)
        loss = torch.empty(flat.shape[0], dtype=flat.dtype, device=flat.device)
        for i in range(flat.shape[0]):
            with torch.no_grad():
                buf.copy_(flat[i])
            with torch.enable_grad():
                li = F.cross_entropy(module(x[i]), y[i])
                grads = torch.autograd.grad(li, params, allow_unused=True, materialize_grads=True)
            torch.cat([gi.reshape(-1) for gi in grads], out=g[i])
            loss[i] = li.detach()
        return loss, g

    @torch.no_grad()
    def losses(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-device mean cross-entropy `[B]` at `flat [B, P]` on each device's own batch `x [B, b, ...]` (train
        mode, as `loss_and_grad`; no gradient), on the kernel path `kernel_path` picks."""
        path, chunk = self.kernel_path(flat.shape[0], flat.device, batch=x.shape[1])
        if path == "vmap":
            self.module.train()
            return torch.cat([self._loss(flat[s:s + chunk], x[s:s + chunk], y[s:s + chunk])
                              for s in range(0, flat.shape[0], chunk)])
        module, buf, _ = self._loop_model(flat)
        module.train()
        out = torch.empty(flat.shape[0], dtype=flat.dtype, device=flat.device)
        for i, row in enumerate(flat):
            buf.copy_(row)
            out[i] = F.cross_entropy(module(x[i]), y[i])
        return out

    @torch.no_grad()
    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits `[B, n, C]` of every model in `flat [B, P]` on the shared inputs `x [n, ...]` (eval mode)."""
        path, chunk = self.kernel_path(flat.shape[0], flat.device)
        if path == "vmap":
            self.module.eval()
            return torch.cat([self._logits(flat[s:s + chunk], x) for s in range(0, flat.shape[0], chunk)])
        module, buf, _ = self._loop_model(flat)
        module.eval()
        out = []
        for row in flat:
            buf.copy_(row)
            out.append(module(x))
        return torch.stack(out)

    @torch.no_grad()
    def accuracy_and_loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                          chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Accuracy `[B]` and mean loss `[B]` of every model in `flat [B, P]` on the shared set `x [N, ...]`,
        `chunk` samples per call."""
        correct = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
        loss = torch.zeros_like(correct)
        for s in range(0, x.shape[0], chunk):
            out = self.logits(flat, x[s:s + chunk])                      # [B, n, C]
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

    def indices(self, devs: torch.Tensor, t: torch.Tensor, steps: torch.Tensor,
                batch_size: int, seed: int) -> torch.Tensor:
        """Sample indices `[S, B, b]` of the minibatches of rows `devs [B]` at local update `t [B]`, for the SGD
        steps `steps [S]` (one hash over the whole slot)."""
        j = torch.arange(batch_size, device=devs.device)
        steps = torch.as_tensor(steps, device=devs.device).reshape(-1, 1, 1)
        pos = counter_randint(self.sizes[devs].unsqueeze(1), seed, STREAM_BATCH, self.ids[devs].unsqueeze(1),
                              t.unsqueeze(1), steps, j, device=devs.device)
        return self.parts[devs.unsqueeze(1), pos]

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs and labels of the samples `idx`."""
        return self.prepare(self.x[idx]), self.y[idx]

    def batch(self, devs: torch.Tensor, t: torch.Tensor, step: int, batch_size: int,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Minibatches `[B, b, ...]` for rows `devs [B]` at local update `t [B]`, SGD step `step`."""
        return self.gather(self.indices(devs, t, torch.tensor([step]), batch_size, seed)[0])


def local_sgd(net: StackedModel, data: DeviceData, devs: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, *,
              steps: int | torch.Tensor, lr: float | torch.Tensor, batch_size: int, seed: int,
              masks: torch.Tensor | None = None, grad_fn=None, first: tuple | None = None):
    """`steps` SGD steps (AEDFL eq. 4.5) for rows `devs [B]` of `data` from `x0 [B, P]` (`net`'s kernel path), on the
    minibatches keyed by (device, `t [B]`, step), whose indices are drawn once for the whole update.

    `masks [B, P]` keeps pruned entries at zero; `grad_fn(x, g) -> g` adds terms (e.g. FedProx's proximal
    gradient); a `[B]` tensor `steps` gives per-device step counts (FedNova), a `[B]` tensor `lr` per-device
    learning rates. `first = (loss [B], grad [B, P], known [B] bool)`: step 0's loss and raw gradient (before
    `grad_fn` and the mask) at `x0 * masks` on step 0's minibatch, already computed for the rows `known` (AEDFL
    computes them at the end of the previous update, `AEDFLStep`); the other rows compute them here. Returns the new
    models, the mean minibatch loss per device (float64, CPU) and the last gradient.
    """
    dev = x0.device
    per_dev = torch.as_tensor(steps, device=dev).expand(devs.shape[0])
    lr = torch.as_tensor(lr, dtype=x0.dtype, device=dev).reshape(-1, 1) if torch.is_tensor(lr) else lr
    x = x0 if masks is None else x0 * masks
    devs, t = devs.to(dev), t.to(dev)
    loss_sum = torch.zeros(devs.shape[0], dtype=torch.float64, device=dev)
    g = torch.zeros_like(x)
    n_steps = int(per_dev.max())
    idx = data.indices(devs, t, torch.arange(n_steps, device=dev), batch_size, seed)      # [S, B, b]
    for s in range(n_steps):
        if s == 0 and first is not None:
            loss, g = _first_step(net, data, idx[0], x, *first)
        else:
            xb, yb = data.gather(idx[s])
            loss, g = net.loss_and_grad(x, xb, yb)
        if grad_fn is not None:
            g = grad_fn(x, g)
        if masks is not None:
            g = g * masks
        active = (per_dev > s).to(x.dtype).unsqueeze(1)
        x = x - lr * g * active
        loss_sum += loss.double() * active.squeeze(1)
    return x, (loss_sum / per_dev.clamp(min=1)).cpu(), g


def _first_step(net: StackedModel, data: DeviceData, idx: torch.Tensor, x: torch.Tensor, loss: torch.Tensor,
                grad: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`local_sgd`'s step-0 loss and gradient: the given ones for the rows `known`, computed for the others."""
    todo = ~known.to(x.device)
    if not todo.any():
        return loss, grad
    loss, grad = loss.clone(), grad.clone()
    xb, yb = data.gather(idx[todo])
    loss[todo], grad[todo] = net.loss_and_grad(x[todo], xb, yb)
    return loss, grad
