"""`DistributedSyncSimulator`: the `SyncSimulator` round loop with this rank's nodes only (P2P-FT across processes).

Every rank runs the same algorithm object (push-pull, DGD, GT-DGD, D-PSGD, ...) with its communicator swapped for
a `DistributedCommunicator`, so `alg.step` mixes through point-to-point exchanges with in/out-neighbours while
the node-local arithmetic is the simulator's own code. A rank's stacked state holds only its rows
([n_local, *shape]); its nodes draw exactly the mini-batches the simulator gives them (the `NodeSampler` is a pure
function of (seed, step) over all nodes' index lists: indices, not data) and the local gradients come from one
batched `NodeStack` call over the local rows. Each rank loads its data itself: no training data crosses processes.

At the end rank 0 gathers per-node metrics only (accuracy, loss, bytes sent; `dist.gather_object`) and returns
a `SyncResult` with the full per-node history, identical in layout to the simulator's, for the same results.json.
Every rank checkpoints its own rows to `<checkpoint stem>.rank<r><suffix>` and keeps the epoch before in
`previous/` beside it: a rank that dies between the last exchange of an epoch and its checkpoint leaves the
others one epoch ahead, so a resume first agrees on the least epoch every rank holds (an all-reduce) and the
ranks ahead go back to their previous checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dflbench.engines.sync import SyncConfig, SyncResult, SyncSimulator, TailInputs, checkpoint_epoch
from dflbench.errors import RunAborted, UserError
from dflbench.io import atomic_torch_save
from dflbench.mixing import Algorithm
from dflbench.runtime.comm import DistributedCommunicator, PeerFailure, transport_error


class LocalRows:
    """A `NodeSampler` restricted to the rows `local` (global node ids): `batch(c)` -> [n_local, B]."""

    def __init__(self, sampler, local: torch.Tensor):
        self.full, self.local = sampler, local
        self.n, self.batch_size, self.seed = len(local), sampler.batch_size, sampler.seed
        self.sizes, self.steps_per_epoch = sampler.sizes, sampler.steps_per_epoch

    def batch(self, c: int) -> torch.Tensor:
        return self.full.batch(c)[self.local]


class DistributedSyncSimulator(SyncSimulator):
    """`SyncSimulator` over the nodes of this rank (see the module docstring); needs an initialised process group."""

    def __init__(self, tail: nn.Module, inputs: TailInputs, node_indices: Sequence[np.ndarray],
                 algorithm: Algorithm, config: SyncConfig | None = None, name: str | None = None,
                 comm: DistributedCommunicator | None = None):
        super().__init__(tail, inputs, node_indices, algorithm, config, name)
        self.comm = comm if comm is not None else DistributedCommunicator(self.n)
        if self.comm.n != self.n:
            raise ValueError(f"the communicator runs {self.comm.n} nodes but node_indices lists {self.n}")
        algorithm.comm = self.comm
        self.n_total = self.n
        self.sampler = LocalRows(self.sampler, self.comm.local)
        self.n = len(self.comm.local)

    def run(self, checkpoint: str | Path | None = None, resume: bool = False,
            progress: bool | None = None, context: dict | None = None) -> SyncResult:
        """Train on this rank's nodes; rank 0 returns the merged result of all nodes, the others their own."""
        path = None
        if checkpoint is not None:
            p = Path(checkpoint)
            path = p.with_name(f"{p.stem}.rank{self.comm.rank}{p.suffix}")
            if resume:
                self.agree_on_epoch(path)
        local = super().run(path, resume, progress if self.comm.rank == 0 else False, context)
        return self.gather(local)

    def save_checkpoint(self, path: Path, payload: dict) -> None:
        """This rank's checkpoint, the one it replaces moved to `previous/` first (see the module docstring)."""
        if path.is_file():
            previous_checkpoint(path).parent.mkdir(exist_ok=True)
            os.replace(path, previous_checkpoint(path))
        atomic_torch_save(path, payload)

    def agree_on_epoch(self, path: Path) -> None:
        """Leave at `path` the checkpoint of the least epoch any rank holds (none: every rank starts afresh)."""
        previous = previous_checkpoint(path)
        if not path.is_file() and previous.is_file():     # stopped between keeping the previous one and the next
            os.replace(previous, path)
        mine = checkpoint_epoch(path)
        least = torch.tensor([-1 if mine is None else mine])
        dist.all_reduce(least, op=dist.ReduceOp.MIN, group=self.comm.group)
        least = int(least)
        if mine is None or mine == least:
            return
        if least < 0:
            os.replace(path, previous)
        elif checkpoint_epoch(previous) == least:
            os.replace(previous, path)
        else:
            raise UserError(f"rank {self.comm.rank}: {path} holds epoch {mine}, another rank's checkpoint epoch "
                            f"{least}, and {previous} is not at epoch {least}: the ranks cannot resume together; "
                            "rerun with --overwrite")

    def gather(self, local: SyncResult) -> SyncResult:
        """Rank 0: the per-node metrics of every rank merged in node order (metrics only cross processes)."""
        mine = {"nodes": self.comm.local.tolist(), "history": local.history, "bytes_sent": local.bytes_sent,
                "wall_time_s": local.wall_time_s}
        parts = [None] * self.comm.world_size if self.comm.rank == 0 else None
        try:
            dist.gather_object(mine, parts, dst=0, group=self.comm.group)
        except RuntimeError as exc:      # a rank died or hung after its last exchange
            failed = PeerFailure.recorded()
            if failed is not None:
                raise PeerFailure(self.comm.rank, failed, exc) from exc
            raise RunAborted(f"rank {self.comm.rank}: gathering the ranks' final metrics failed "
                             f"({transport_error(exc)}); a rank died or stopped answering within the peer timeout; "
                             "the finished epochs are checkpointed: start every rank again with --resume") from exc
        if self.comm.rank != 0:
            return local
        return merge_results(local.algorithm, local.params, parts, self.n_total, local.steps)


def previous_checkpoint(path: Path) -> Path:
    """Where a rank keeps the checkpoint before `path`'s: `previous/` beside it (out of the CLI's `*.pt` listing)."""
    return path.parent / "previous" / path.name


def merge_results(algorithm: str, params: dict, parts: list[dict], n: int, steps: int) -> SyncResult:
    """One `SyncResult` from the ranks' metric dicts: per-node lists ordered by global node id."""
    order = [node for part in parts for node in part["nodes"]]
    if sorted(order) != list(range(n)):
        raise ValueError(f"ranks reported nodes {sorted(order)}, expected 0..{n - 1}")
    perm = np.argsort(order)

    def per_node(values: list) -> list:
        return [values[k] for k in perm]

    history = []
    for epoch_records in zip(*(part["history"] for part in parts)):
        acc = per_node([a for r in epoch_records for a in r["node_accuracy"]])
        losses = [r["train_loss"] for r in epoch_records]
        history.append({"epoch": epoch_records[0]["epoch"], "mean_accuracy": float(np.mean(acc)),
                        "node_accuracy": acc,
                        "train_loss": None if losses[0] is None else per_node([v for ls in losses for v in ls]),
                        "bytes_sent": sum(r["bytes_sent"] for r in epoch_records),
                        "wall_time_s": max(r["wall_time_s"] for r in epoch_records)})
    bytes_sent = per_node([b for part in parts for b in part["bytes_sent"]])
    wall = max(part["wall_time_s"] for part in parts)
    return SyncResult(algorithm, params, history[-1]["node_accuracy"], history, wall, bytes_sent, steps)
