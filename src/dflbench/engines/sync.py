"""`SyncSimulator`: lock-step rounds of a dflbench.mixing algorithm over n simulated nodes (P2P-FT Sec. III).

Stacked state: the trainable tail's parameters are one dict of [n, *shape] tensors. Each round, every node
draws a mini-batch from its own data (`NodeSampler`), all n per-node losses and gradients come from ONE
batched call (`dflbench.vision.NodeStack.loss_and_grads`), and the algorithm mixes through its communicator
(e.g. push-pull, Algorithm 1: theta <- A (theta - a tau), tau <- B (tau + g_new - g_old)). After each epoch
every node is evaluated on the full test set (one batched forward over nodes), and the state is checkpointed
atomically so `resume=True` continues bit-exactly.

Inputs to the tail come from `TailInputs`: the frozen prefix run once over train and test (`FeatureCache`,
bf16 on CUDA) when it is deterministic (no augmentation: the default), or recomputed per batch (uncached).

Seeds stack like nodes: `SyncSimulator.stacked` runs S seeds' simulators as one run of S * n rows with
block-diagonal mixing, each seed computing what it computes alone (see the class docstring).
"""

from __future__ import annotations

import copy
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
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
from dflbench.mixing import Algorithm, BlockCommunicator, MixingState, concat_states, consensus_distance, tree_map
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
    bytes each node sent. A part of a stacked run (`SyncSimulator.stacked`) gets its share of the wall time."""

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

    Batched seeds: `SyncSimulator.stacked(sims)` runs S independent simulators (e.g. one per seed: own initial
    tail, own split, own graph copy, own mini-batch order, own feature cache when the frozen prefix differs) as ONE
    stacked run of S * n rows, row s * n + i being node i of `sims[s]` (`parts`). It is exact, not approximate:
    (1) every part draws its mini-batches from its own `NodeSampler` (a pure function of its seed and the step),
    concatenated; (2) per-node gradients never couple rows (`NodeStack`: per-node weights, the weight-free
    attention per sequence); (3) mixing goes through `dflbench.mixing.BlockCommunicator`, which applies the
    part's n x n matrices (block-diagonal mixing) and means block by block, so a copy of the graph mixes only
    within its seed; (4) each part is evaluated on its own test features. So part s computes what `sims[s].run()`
    computes alone, up to float summation order in the batched kernels. Each part keeps its own checkpoint file,
    in the format and with the fingerprint of its unstacked run: the two resume each other's checkpoints.
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
        self.parts: list[SyncSimulator] = [self]
        self._calls = 0

    # --- batched seeds --------------------------------------------------------------------------------

    def stack_key(self) -> dict:
        """What must agree for simulators to be stacked (`stacked`): the algorithm with its step size and
        matrices (time-varying ones never agree), the number of nodes, the steps per epoch, the tail's shapes, the
        test set's size and the config but its seed."""
        alg = self.algorithm
        varying = any(sched.time_varying for sched in alg._schedules().values())
        return {"algorithm": (type(alg), self.name, repr(alg.lr), alg.momentum, alg.weight_decay),
                "graph": ("time-varying", id(alg)) if varying else  # a schedule's graphs are not compared
                tuple((k, m.numpy().tobytes()) for k, m in alg.matrices().items()),
                "nodes": self.n, "steps_per_epoch": self.sampler.steps_per_epoch,
                "config": replace(self.config, seed=0), "test set": len(self.inputs.data.y_test),
                "tail": tuple((k, tuple(p.shape)) for k, p in self.tail.named_parameters())}

    @classmethod
    def stack_groups(cls, sims: Sequence[SyncSimulator], checkpoints: Sequence[str | Path | None] | None = None,
                     resume: bool = False) -> tuple[list[list[int]], list[str]]:
        """Indices of `sims` grouped into stackable runs (first-seen order), and the fields that split them: a
        differing `stack_key` field, or with `resume` the epoch of an existing checkpoint ("resume epoch")."""
        keys = []
        for i, sim in enumerate(sims):
            path = None if checkpoints is None or checkpoints[i] is None else Path(checkpoints[i])
            epoch = checkpoint_epoch(path) if resume and path is not None else None
            keys.append({**sim.stack_key(), "resume epoch": epoch})
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(tuple(key.values()), []).append(i)
        split = [k for k in keys[0] if len({repr(key[k]) for key in keys}) > 1] if len(groups) > 1 else []
        return list(groups.values()), split

    @classmethod
    def stacked(cls, sims: Sequence[SyncSimulator]) -> SyncSimulator:
        """One simulator over the rows of `sims` (see the class docstring); ValueError naming what differs when
        they cannot be stacked. A single simulator is returned as is."""
        sims = list(sims)
        if len(sims) == 1:
            return sims[0]
        groups, split = cls.stack_groups(sims)
        if len(groups) > 1:
            raise ValueError(f"cannot stack these runs: they differ in {', '.join(split)}")
        first = sims[0]
        buffers = dict(first.tail.named_buffers())
        for sim in sims[1:]:
            if any(not torch.equal(b, buffers[k]) for k, b in sim.tail.named_buffers()):
                raise ValueError("cannot stack these runs: their tails hold different buffers")
        out = copy.copy(first)
        out.parts, out.n, out.sampler, out.inputs = sims, first.n * len(sims), None, None
        out.algorithm = copy.copy(first.algorithm)
        out.algorithm.comm = BlockCommunicator(first.algorithm.comm, len(sims))
        return out

    # --- one batched gradient evaluation per round --------------------------------------------------

    def grad_fn(self, params: dict[str, torch.Tensor]):
        """Per-node gradients at `params` on each node's next mini-batch; aux = per-node losses [n]."""
        idx = [part.sampler.batch(self._calls) for part in self.parts]
        self._calls += 1
        if all(part.inputs is self.parts[0].inputs for part in self.parts):
            feats, labels = self.parts[0].inputs.train(torch.cat(idx))
        else:
            pairs = [part.inputs.train(i) for part, i in zip(self.parts, idx)]
            feats, labels = torch.cat([f for f, _ in pairs]), torch.cat([y for _, y in pairs])
        with self.config.autocast():
            losses, grads = self.stack.loss_and_grads(params, feats, labels, F.cross_entropy)
        return {k: g.to(params[k].dtype) for k, g in grads.items()}, losses.float()

    @torch.no_grad()
    def evaluate(self, params: dict[str, torch.Tensor]) -> list[float]:
        """Test accuracy of every node (row) on its part's full test set: one batched forward over all rows per
        chunk (parts sharing their inputs share the test batch)."""
        correct = torch.zeros(self.n, dtype=torch.int64, device=self.config.device)
        total = 0
        shared = all(part.inputs is self.parts[0].inputs for part in self.parts)
        streams = [self.parts[0].inputs.test_batches()] if shared else [p.inputs.test_batches() for p in self.parts]
        for chunks in zip(*streams):
            with self.config.autocast():
                if shared:
                    feats, labels = chunks[0]
                    logits = self.stack.forward_nodes(params, feats, shared=True)
                    labels = labels[None, :]
                else:
                    feats = torch.cat([f.expand(p.n, *f.shape) for p, (f, _) in zip(self.parts, chunks)])
                    logits = self.stack.forward_nodes(params, feats)
                    labels = torch.cat([y.expand(p.n, -1) for p, (_, y) in zip(self.parts, chunks)])
            correct += (logits.argmax(-1) == labels).sum(1)
            total += labels.shape[-1]
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

    def save_checkpoint(self, path: Path, payload: dict) -> None:
        """Write one part's checkpoint atomically (the distributed runtime also keeps the one before)."""
        atomic_torch_save(path, payload)

    # --- the run --------------------------------------------------------------------------------------

    def run(self, checkpoint: str | Path | None = None, resume: bool = False,
            progress: bool | None = None, context: dict | None = None) -> SyncResult:
        """Train `config.epochs` epochs; checkpoint after each to `checkpoint`; with `resume`, continue from it.
        `context`: what else determines the trajectory (model, data, graph, ...), stored in the checkpoint's
        fingerprint beside the simulator's own fields; a resume whose fingerprint differs is refused, naming them."""
        if len(self.parts) != 1:
            raise ValueError("a stacked simulator runs with run_parts (a checkpoint and a context per part)")
        return self.run_parts([checkpoint], resume, progress, [context])[0]

    def run_parts(self, checkpoints: Sequence[str | Path | None], resume: bool = False, progress: bool | None = None,
                  contexts: Sequence[dict | None] | None = None) -> list[SyncResult]:
        """`run` for every part at once: `checkpoints[s]` and `contexts[s]` are part s's (see `run`); returns a
        `SyncResult` per part. Resuming, the parts' checkpoints must all exist at the same epoch or all be absent
        (`stack_groups(..., resume=True)` groups them so). A part's wall time is the stacked run's divided by the
        number of parts (its share)."""
        cfg, parts = self.config, self.parts
        contexts = contexts or [None] * len(parts)
        if len(checkpoints) != len(parts) or len(contexts) != len(parts):
            raise ValueError(f"need a checkpoint and a context per part ({len(parts)}), got {len(checkpoints)} "
                             f"and {len(contexts)}")
        x0s = [part.stack.init_params(part.n) for part in parts]
        fps = [{**(ctx or {}), **part.fingerprint(x0)} for part, x0, ctx in zip(parts, x0s, contexts)]
        paths = [Path(c) if c is not None else None for c in checkpoints]
        found = [resume and p is not None and p.is_file() for p in paths]
        if any(found):
            if not all(found):
                raise ValueError("resuming a stacked run needs every part's checkpoint; group the runs with "
                                 "stack_groups(..., resume=True)")
            loaded = [part._load(path, fp) for part, path, fp in zip(parts, paths, fps)]
            if len({ep for _, ep, _, _ in loaded}) > 1:
                raise ValueError(f"the parts' checkpoints are at epochs {[ep for _, ep, _, _ in loaded]}; group "
                                 "the runs with stack_groups(..., resume=True)")
            state, epoch = concat_states([st for st, _, _, _ in loaded]), loaded[0][1]
            histories, elapsed = [h for _, _, h, _ in loaded], [w for _, _, _, w in loaded]
            self._calls = state.step + 1 if state.grad_calls is None else state.grad_calls  # the next mini-batch
        else:
            start = time.perf_counter()
            self._calls = 0
            state = self.algorithm.init(tree_map(lambda *leaves: torch.cat(leaves), *x0s), self.grad_fn)
            acc = self.evaluate(state.params)
            share = (time.perf_counter() - start) / len(parts)
            histories = [[self._record(0, a, st.aux, st, 0.0)] for a, st in zip(self._split(acc), state.split(
                len(parts)))]
            epoch, elapsed = 0, [share] * len(parts)
        spe = parts[0].sampler.steps_per_epoch
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
                share = (time.perf_counter() - start) / len(parts)
                per_part = zip(self._split(acc), self._split(losses / spe), state.split(len(parts)))
                for s, (part_acc, part_loss, part_state) in enumerate(per_part):
                    elapsed[s] += share
                    histories[s].append(self._record(epoch, part_acc, part_loss, part_state, elapsed[s]))
                    if paths[s] is not None:
                        self.save_checkpoint(paths[s], {"fingerprint": fps[s], "state": part_state.to_dict(),
                                                        "epoch": epoch, "history": histories[s],
                                                        "wall_time_s": elapsed[s]})
                bar.update(task, completed=epoch,
                           description=f"{self.name} epoch {epoch}/{cfg.epochs} mean acc {np.mean(acc):.4f}")
        return [SyncResult(self.name, st.params, h[-1]["node_accuracy"], h, w, st.bytes_sent.tolist(), st.step)
                for st, h, w in zip(state.split(len(parts)), histories, elapsed)]

    def _split(self, rows):
        """A per-row list (or tensor) cut into the parts' rows."""
        bounds = np.cumsum([0] + [part.n for part in self.parts])
        return [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def _record(self, epoch: int, acc: list[float], losses, state: MixingState, elapsed: float) -> dict:
        return {"epoch": epoch, "mean_accuracy": float(np.mean(acc)), "node_accuracy": acc,
                "train_loss": [float(v) for v in losses.tolist()] if losses is not None else None,
                "consensus": float(consensus_distance(state.params)), "bytes_sent": int(state.bytes_sent.sum()),
                "wall_time_s": elapsed}


def checkpoint_epoch(path: Path | None) -> int | None:
    """The epoch a `SyncSimulator` checkpoint file holds (None when there is none)."""
    if path is None or not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
