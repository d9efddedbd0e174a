"""`DistributedSyncSimulator`: the `SyncSimulator` round loop with this rank's nodes only (P2P-FT across processes).

Every rank runs the same algorithm object (push-pull, DGD, GT-DGD, D-PSGD, ...) with its communicator swapped for
a `DistributedCommunicator`, so `alg.step` mixes through point-to-point exchanges with in/out-neighbours while
the node-local arithmetic is the simulator's own code. A rank's stacked state holds only its rows
([n_local, *shape]); its nodes draw exactly the mini-batches the simulator gives them (the `NodeSampler` is a pure
function of (seed, step) over all nodes' index lists: indices, not data) and the local gradients come from one
batched `NodeStack` call over the local rows. Each rank loads its data itself: no training data crosses processes.

At the end rank 0 gathers per-node metrics only (accuracy, loss, bytes sent; `dist.gather_object`) and returns
a `SyncResult` with the full per-node history, identical in layout to the simulator's, for the same results.json.
Every rank checkpoints its own rows to `<checkpoint stem>.rank<r><suffix>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dflbench.engines.sync import SyncConfig, SyncResult, SyncSimulator, TailInputs
from dflbench.mixing import Algorithm
from dflbench.runtime.comm import DistributedCommunicator


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
        local = super().run(path, resume, progress if self.comm.rank == 0 else False, context)
        return self.gather(local)

    def gather(self, local: SyncResult) -> SyncResult:
        """Rank 0: the per-node metrics of every rank merged in node order (metrics only cross processes)."""
        mine = {"nodes": self.comm.local.tolist(), "history": local.history, "bytes_sent": local.bytes_sent,
                "wall_time_s": local.wall_time_s}
        parts = [None] * self.comm.world_size if self.comm.rank == 0 else None
        dist.gather_object(mine, parts, dst=0, group=self.comm.group)
        if self.comm.rank != 0:
            return local
        return merge_results(local.algorithm, local.params, parts, self.n_total, local.steps)


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
