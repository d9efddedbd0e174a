"""`SyncSimulator`: lock-step rounds of a dflbench.mixing algorithm over n simulated nodes (P2P-FT Sec. III).

Stacked state: the trainable tail's parameters are one dict of [n, *shape] tensors. Each round, every node
draws a mini-batch from its own data (`NodeSampler`), all n per-node losses and gradients come from ONE
batched call (`dflbench.vision.NodeStack.loss_and_grads`), and the algorithm mixes through its communicator
(e.g. push-pull, Algorithm 1: theta <- A (theta - a tau), tau <- B (tau + g_new - g_old)). After each epoch
every node is evaluated on the full test set (one batched forward over nodes), and the state is checkpointed
atomically so `resume=True` continues bit-exactly.

Inputs to the tail come from `TailInputs`: the frozen prefix run once over train and test (`FeatureCache`,
bf16 on CUDA) when it is deterministic (no augmentation: the default), or recomputed per batch (uncached).
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from dflbench.data import BatchTransform, ImageData
from dflbench.errors import UserError
from dflbench.io import atomic_torch_save
from dflbench.mixing import Algorithm, MixingState, consensus_distance
from dflbench.vision import FeatureCache, NodeStack

from .sampling import NodeSampler

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class SyncConfig:
    """epochs: passes over the largest node's data; steps_per_epoch = ceil(max_i |D_i| / batch_size) unless given
    (smaller nodes wrap around their own data to fill an epoch).
    cache: train on cached prefix features (needs a deterministic prefix); False recomputes the prefix per batch.
    amp: bf16 autocast on CUDA (ignored on CPU). dtype: parameter/feature dtype ("float64" for reference tests).
    method: NodeStack evaluation method ("vmap", "fold"); None uses dflbench.vision's default."""

    epochs: int = 100
    batch_size: int = 32
    seed: int = 0
    cache: bool = True
    eval_batch_size: int = 512
    device: str = "cpu"
    dtype: str = "float32"
    amp: bool = True
    method: str | None = None
    steps_per_epoch: int | None = None

    def __post_init__(self):
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 (or None), got {self.steps_per_epoch}")
        if self.epochs < 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise UserError(f"need epochs >= 0 and batch sizes >= 1, got epochs={self.epochs}, "
                            f"batch_size={self.batch_size}, eval_batch_size={self.eval_batch_size}")
        if self.dtype not in DTYPES:
            raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def autocast(self):
        dev = torch.device(self.device)
        if self.amp and dev.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()


class Preprocess(nn.Module):
    """uint8 images -> the model's normalized input (batched `BatchTransform`), then the frozen prefix."""

    def __init__(self, transform: BatchTransform, prefix: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.transform, self.prefix, self.dtype = transform, prefix, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefix(self.transform(x, self.dtype))


class TailInputs:
    """What the tail consumes: `train(idx [n, B]) -> (feats [n, B, ...], labels [n, B])` and `test_batches()`.

    Cached: `FeatureCache` of the preprocessing + prefix over the train and the test set, computed once and
    shareable by several simulators (same frozen prefix). Uncached: the prefix runs on every batch.
    """

    def __init__(self, prefix: nn.Module, transform: BatchTransform, data: ImageData, config: SyncConfig,
                 progress: bool | None = None):
        self.config, self.data = config, data
        self.device = torch.device(config.device)
        self.pre = Preprocess(transform, prefix, config.torch_dtype).to(self.device).eval()
        self.cached = config.cache
        if self.cached:
            bf16 = config.amp and self.device.type == "cuda" and config.dtype == "float32"
            kw = dict(batch_size=config.eval_batch_size, device=self.device, progress=progress,
                      dtype=torch.bfloat16 if bf16 else config.torch_dtype)
            self.train_cache = FeatureCache(self.pre, TensorDataset(data.x_train, data.y_train), **kw)
            self.test_cache = FeatureCache(self.pre, TensorDataset(data.x_test, data.y_test), **kw)
        self.y_train = data.y_train.to(self.device)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self.config.autocast():
            return self.pre(x.to(self.device))

    def train(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cached:
            return self.train_cache.gather(idx)
        feats = self._encode(self.data.x_train[idx.flatten()])
        return feats.unflatten(0, idx.shape), self.y_train[idx.to(self.device)]

    def test_batches(self):
        if self.cached:
            yield from self.test_cache.batches(self.config.eval_batch_size)
            return
        for chunk in torch.arange(len(self.data.y_test)).split(self.config.eval_batch_size):
            yield self._encode(self.data.x_test[chunk]), self.data.y_test[chunk].to(self.device)


@dataclass
class SyncResult:
    """Final stacked params, per-node test accuracy, per-epoch history (mean and per-node accuracy, train loss,
    consensus distance (1/n) sum_i ||x_i - xbar||^2 of the trained parameters, bytes, wall time), timings and
    bytes each node sent."""

    algorithm: str
    params: dict[str, torch.Tensor]
    node_accuracy: list[float]
    history: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0
    bytes_sent: list[int] = field(default_factory=list)
    steps: int = 0

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.node_accuracy))


class SyncSimulator:
    """Run `algorithm` (a dflbench.mixing Algorithm over n = len(node_indices) nodes) on the tail.

    `tail`: the trainable module (its current weights are every node's start); `node_indices[i]`: node i's
    training samples (global indices into `inputs.data`); `name` labels progress, results and checkpoints.
    """

    def __init__(self, tail: nn.Module, inputs: TailInputs, node_indices: Sequence[np.ndarray],
                 algorithm: Algorithm, config: SyncConfig | None = None, name: str | None = None):
        self.config = config or inputs.config
        self.inputs = inputs
        self.algorithm = algorithm
        self.name = name or algorithm.name
        self.tail = tail.to(device=self.config.device, dtype=self.config.torch_dtype).eval()
        method = {} if self.config.method is None else {"method": self.config.method}
        self.stack = NodeStack(self.tail, **method)
        self.sampler = NodeSampler(node_indices, self.config.batch_size, self.config.seed,
                                   self.config.steps_per_epoch)
        self.n = self.sampler.n
        self._calls = 0

    # --- one batched gradient evaluation per round --------------------------------------------------

    def grad_fn(self, params: dict[str, torch.Tensor]):
        """Per-node gradients at `params` on each node's next mini-batch; aux = per-node losses [n]."""
        idx = self.sampler.batch(self._calls)
        self._calls += 1
        feats, labels = self.inputs.train(idx)
        with self.config.autocast():
            losses, grads = self.stack.loss_and_grads(params, feats, labels, F.cross_entropy)
        return {k: g.to(params[k].dtype) for k, g in grads.items()}, losses.float()

    @torch.no_grad()
    def evaluate(self, params: dict[str, torch.Tensor]) -> list[float]:
        """Test accuracy of every node on the full test set (one batched forward over nodes per chunk)."""
        correct = torch.zeros(self.n, dtype=torch.int64, device=self.config.device)
        total = 0
        for feats, labels in self.inputs.test_batches():
            with self.config.autocast():
                logits = self.stack.forward_nodes(params, feats, shared=True)
            correct += (logits.argmax(-1) == labels[None, :]).sum(1)
            total += len(labels)
        return (correct.double() / max(total, 1)).tolist()

    # --- checkpoints ----------------------------------------------------------------------------------

    def fingerprint(self, x0: dict[str, torch.Tensor]) -> dict:
        lr = self.algorithm.lr if not callable(self.algorithm.lr) else "schedule"
        return {"algorithm": self.name, "mixing": type(self.algorithm).__name__, "nodes": self.n,
                "batch_size": self.config.batch_size, "seed": self.config.seed, "lr": lr,
                "momentum": self.algorithm.momentum, "weight_decay": self.algorithm.weight_decay,
                "dtype": self.config.dtype,
                "node_sizes": self.sampler.sizes.tolist(), "steps_per_epoch": self.sampler.steps_per_epoch,
                "shapes": {k: list(v.shape) for k, v in x0.items()}}

    def _load(self, path: Path, fingerprint: dict):
        ckpt = torch.load(path, map_location=self.config.device, weights_only=True)
        if ckpt.get("fingerprint") != fingerprint:
            diff = sorted(k for k in fingerprint if ckpt.get("fingerprint", {}).get(k) != fingerprint[k])
            raise UserError(f"checkpoint {path} belongs to a different run (differs in {', '.join(diff)}); "
                            "use another --out folder or drop --resume")
        return MixingState.from_dict(ckpt["state"]), ckpt["epoch"], ckpt["history"], ckpt["wall_time_s"]

    # --- the run --------------------------------------------------------------------------------------

    def run(self, checkpoint: str | Path | None = None, resume: bool = False,
            progress: bool | None = None, context: dict | None = None) -> SyncResult:
        """Train `config.epochs` epochs; checkpoint after each to `checkpoint`; with `resume`, continue from it.
        `context`: what else determines the trajectory (model, data, graph, ...), stored in the checkpoint's
        fingerprint beside the simulator's own fields; a resume whose fingerprint differs is refused, naming them."""
        cfg = self.config
        x0 = self.stack.init_params(self.n)
        fp = {**(context or {}), **self.fingerprint(x0)}
        path = Path(checkpoint) if checkpoint is not None else None
        if resume and path is not None and path.is_file():
            state, epoch, history, elapsed = self._load(path, fp)
            self._calls = state.step + 1 if state.grad_calls is None else state.grad_calls  # the next mini-batch
        else:
            start = time.perf_counter()
            self._calls = 0
            state = self.algorithm.init(x0, self.grad_fn)
            acc = self.evaluate(state.params)
            history = [self._record(0, acc, state.aux, state, 0.0)]
            epoch, elapsed = 0, time.perf_counter() - start
        spe = self.sampler.steps_per_epoch
        show = sys.stderr.isatty() if progress is None else progress
        from rich.progress import Progress

        with Progress(disable=not show, transient=True) as bar:
            task = bar.add_task(self.name, total=cfg.epochs, completed=epoch)
            while epoch < cfg.epochs:
                start = time.perf_counter()
                losses = torch.zeros(self.n, device=cfg.device)
                for _ in range(spe):
                    state = self.algorithm.step(state, self.grad_fn)
                    losses += state.aux
                acc = self.evaluate(state.params)
                epoch += 1
                elapsed += time.perf_counter() - start
                history.append(self._record(epoch, acc, losses / spe, state, elapsed))
                if path is not None:
                    atomic_torch_save(path, {"fingerprint": fp, "state": state.to_dict(), "epoch": epoch,
                                             "history": history, "wall_time_s": elapsed})
                bar.update(task, completed=epoch,
                           description=f"{self.name} epoch {epoch}/{cfg.epochs} mean acc {np.mean(acc):.4f}")
        return SyncResult(self.name, state.params, history[-1]["node_accuracy"], history, elapsed,
                          state.bytes_sent.tolist(), state.step)

    def _record(self, epoch: int, acc: list[float], losses, state: MixingState, elapsed: float) -> dict:
        return {"epoch": epoch, "mean_accuracy": float(np.mean(acc)), "node_accuracy": acc,
                "train_loss": [float(v) for v in losses.tolist()] if losses is not None else None,
                "consensus": float(consensus_distance(state.params)), "bytes_sent": int(state.bytes_sent.sum()),
                "wall_time_s": elapsed}
