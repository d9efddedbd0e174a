"""Communicators: the only place where node rows meet. Algorithms do node-local arithmetic plus these calls.

Interface (what a torch.distributed communicator implements to run the same algorithm code):

- `num_nodes(n_local) -> int`: the global number of nodes n, given that local tensors hold `n_local` rows.
- `node_ids(n_local) -> LongTensor[n_local]`: the global node ids of the local rows, in order.
- `mix(m, x) -> tree`: for every local row i, `sum_j m.weights[i, j] * x_j` over ALL n nodes. `x` is a tree
  (tensor, or nested dict/tuple/list of tensors), each leaf `[n_local, ...]`; the result has the same
  structure. A distributed implementation sends each local row j to `m.out_neighbors(j)` and receives from
  `m.in_neighbors(i)` (e.g. one `batch_isend_irecv` over all leaves packed into one buffer).
- `mean(x) -> tree`: every local row gets (1/n) sum_j x_j over all n nodes (an all-reduce).
- `mix_bytes(m, x)` / `mean_bytes(x) -> LongTensor[n_local]`: bytes each local node sends in that call.

`LocalCommunicator` simulates all n nodes in one process: local tensors hold every row and `mix` is a matmul
over the node dimension, dense or torch.sparse CSR (chosen per matrix: sparse when n >= `sparse_min_nodes`
and the matrix density <= `sparse_max_density`; `sparse=True/False` forces it). Mixing runs with autocast
disabled, in the dtype of each leaf.

`BlockCommunicator(inner, blocks)` runs `blocks` independent copies of one n-node system stacked along the rows
(batched seeds: row b*n + i is node i of copy b): every call is `inner`'s call on each block of n rows, so copies
never mix and each block computes exactly what `inner` computes for that copy alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .matrix import MixingMatrix
from .tree import Tree, num_rows, row_bytes, tree_map

_CSR_CPU_DTYPES = (torch.float32, torch.float64)


class Communicator(ABC):
    """What algorithms may call to combine node rows (see the module docstring)."""

    @abstractmethod
    def num_nodes(self, n_local: int) -> int: ...

    @abstractmethod
    def node_ids(self, n_local: int) -> torch.Tensor: ...

    @abstractmethod
    def mix(self, m: MixingMatrix, x: Tree) -> Tree: ...

    @abstractmethod
    def mean(self, x: Tree) -> Tree: ...

    def mix_bytes(self, m: MixingMatrix, x: Tree, n_local: int) -> torch.Tensor:
        """Bytes each local node sends in `mix(m, x)`: out-degree (self excluded) x its slice of every leaf."""
        return m.out_degree[self.node_ids(n_local)] * row_bytes(x)

    def mean_bytes(self, x: Tree, n_local: int) -> torch.Tensor:
        """Bytes each local node sends in `mean(x)`: its slice once (to a server / into the all-reduce)."""
        return torch.full((n_local,), row_bytes(x), dtype=torch.int64)


class LocalCommunicator(Communicator):
    """All n nodes in one process; mixing is `M @ X` over the node dimension (dense or CSR)."""

    def __init__(self, sparse: bool | None = None, sparse_min_nodes: int = 64, sparse_max_density: float = 0.2):
        if sparse not in (None, True, False):
            raise ValueError(f"sparse must be None (automatic), True or False, got {sparse!r}")
        if not 0.0 <= sparse_max_density <= 1.0:
            raise ValueError(f"sparse_max_density must lie in [0, 1], got {sparse_max_density}")
        self.sparse = sparse
        self.sparse_min_nodes = sparse_min_nodes
        self.sparse_max_density = sparse_max_density

    def num_nodes(self, n_local: int) -> int:
        return n_local

    def node_ids(self, n_local: int) -> torch.Tensor:
        return torch.arange(n_local)

    def mix_bytes(self, m: MixingMatrix, x: Tree, n_local: int) -> torch.Tensor:
        return m.out_degree * row_bytes(x)  # every row is local

    def uses_sparse(self, m: MixingMatrix, leaf: torch.Tensor) -> bool:
        """Whether `mix` multiplies by the CSR copy of `m` for this leaf."""
        if self.sparse is not None:
            return self.sparse
        csr_ok = leaf.device.type != "cpu" or leaf.dtype in _CSR_CPU_DTYPES
        return csr_ok and m.n >= self.sparse_min_nodes and m.density <= self.sparse_max_density

    def mix(self, m: MixingMatrix, x: Tree) -> Tree:
        return tree_map(lambda leaf: self._mix_leaf(m, leaf), x)

    def _mix_leaf(self, m: MixingMatrix, leaf: torch.Tensor) -> torch.Tensor:
        if leaf.shape[0] != m.n:
            raise ValueError(f"{m.name} is {m.n}x{m.n} but a mixed tensor has {leaf.shape[0]} node rows")
        flat = leaf.reshape(m.n, -1)
        if torch.is_autocast_enabled(leaf.device.type):
            with torch.autocast(leaf.device.type, enabled=False):
                return self._matmul(m, leaf, flat).reshape(leaf.shape)
        return self._matmul(m, leaf, flat).reshape(leaf.shape)

    def _matmul(self, m: MixingMatrix, leaf: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        if self.uses_sparse(m, leaf):
            return torch.sparse.mm(m.csr(leaf.device, leaf.dtype), flat)
        return torch.mm(m.dense(leaf.device, leaf.dtype), flat)

    def mean(self, x: Tree) -> Tree:
        return tree_map(lambda leaf: leaf.mean(dim=0, keepdim=True).expand_as(leaf).clone(), x)


class BlockCommunicator(Communicator):
    """`blocks` independent copies of an n-node system, stacked: rows [b*n, (b+1)*n) are copy b (see the module
    docstring). Matrices stay n x n (one graph for every copy); `mix` and `mean` apply `inner`'s call block by
    block (the same kernel on the same [n, ...] slice as an unstacked run, hence the same numbers);
    `num_nodes` is n, and `node_ids` are the ids within each copy."""

    def __init__(self, inner: Communicator, blocks: int):
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.inner, self.blocks = inner, blocks

    def _n(self, n_local: int) -> int:
        if n_local % self.blocks:
            raise ValueError(f"{n_local} rows do not split into {self.blocks} equal blocks")
        return n_local // self.blocks

    def num_nodes(self, n_local: int) -> int:
        return self.inner.num_nodes(self._n(n_local))

    def node_ids(self, n_local: int) -> torch.Tensor:
        return self.inner.node_ids(self._n(n_local)).repeat(self.blocks)

    def _per_block(self, call, x: Tree) -> Tree:
        n = self._n(num_rows(x))
        parts = [call(tree_map(lambda leaf, b=b: leaf[b * n:(b + 1) * n], x)) for b in range(self.blocks)]
        return tree_map(lambda *leaves: torch.cat(leaves), *parts)

    def mix(self, m: MixingMatrix, x: Tree) -> Tree:
        return self._per_block(lambda block: self.inner.mix(m, block), x)

    def mean(self, x: Tree) -> Tree:
        return self._per_block(self.inner.mean, x)

    def mix_bytes(self, m: MixingMatrix, x: Tree, n_local: int) -> torch.Tensor:
        return self.inner.mix_bytes(m, x, self._n(n_local)).repeat(self.blocks)

    def mean_bytes(self, x: Tree, n_local: int) -> torch.Tensor:
        return self.inner.mean_bytes(x, self._n(n_local)).repeat(self.blocks)
