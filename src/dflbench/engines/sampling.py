"""Per-node mini-batch indices, vectorized over nodes: every node draws only from its own data.

Batch c (the c-th gradient evaluation) of node i is a slice of node i's epoch permutation: with S steps per
epoch, epoch e = c // S uses a fresh permutation of node i's indices drawn from a generator seeded by
(seed, e), and positions (c mod S) * B + [0, B) taken modulo |D_i| (small nodes wrap around). The batch is a
pure function of (seed, c), so a resumed run draws exactly the batches the uninterrupted run would.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from dflbench.errors import UserError


class NodeSampler:
    """`batch(c) -> LongTensor [n, B]` of global training indices, row i from `node_indices[i]` only."""

    def __init__(self, node_indices: Sequence[np.ndarray], batch_size: int, seed: int,
                 steps_per_epoch: int | None = None):
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        sizes = [len(ix) for ix in node_indices]
        if not sizes or min(sizes) == 0:
            raise UserError(f"every node needs at least one training sample, got sizes {sizes}")
        self.n, self.batch_size, self.seed = len(sizes), batch_size, seed
        self.sizes = torch.tensor(sizes, dtype=torch.int64)
        width = max(sizes)
        self.pool = torch.zeros(self.n, width, dtype=torch.int64)
        for i, ix in enumerate(node_indices):  # built once, not per step
            self.pool[i, :len(ix)] = torch.as_tensor(np.asarray(ix), dtype=torch.int64)
        self.valid = torch.arange(width)[None, :] < self.sizes[:, None]
        self.steps_per_epoch = steps_per_epoch or math.ceil(width / batch_size)
        self._epoch: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        """[n, width] positions: row i starts with a uniform permutation of 0..|D_i|-1 (one argsort, all nodes)."""
        if self._epoch is None or self._epoch[0] != epoch:
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
            keys = torch.rand(self.pool.shape, generator=g).masked_fill(~self.valid, 2.0)
            self._epoch = (epoch, keys.argsort(dim=1))
        return self._epoch[1]

    def batch(self, c: int) -> torch.Tensor:
        epoch, step = divmod(c, self.steps_per_epoch)
        pos = (step * self.batch_size + torch.arange(self.batch_size))[None, :] % self.sizes[:, None]
        slots = self.permutation(epoch).gather(1, pos)
        return self.pool.gather(1, slots)
