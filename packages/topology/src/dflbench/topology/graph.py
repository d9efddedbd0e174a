"""The `Topology` data structure: who sends to whom, with the papers' orientation.

`weights[i, j] > 0` iff node j sends to node i, so a mixing step reads x_i <- sum_j w_ij x_j.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def as_weight_matrix(w, *, what: str = "weight matrix") -> torch.Tensor:
    """Return `w` as a float64 [n, n] tensor, or raise ValueError naming what is wrong."""
    if isinstance(w, Topology):
        return w.weights
    t = torch.as_tensor(w, dtype=torch.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"{what} must be square [n, n], got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{what} is empty: a graph needs at least one node")
    if not torch.isfinite(t).all():
        i, j = torch.nonzero(~torch.isfinite(t))[0].tolist()
        raise ValueError(f"{what} has a non-finite entry at [{i}, {j}]")
    if (t < 0).any():
        i, j = torch.nonzero(t < 0)[0].tolist()
        raise ValueError(f"{what} has a negative weight {t[i, j].item():g} at [{i}, {j}]; weights must be >= 0")
    return t


def _reachable(adj: torch.Tensor) -> torch.Tensor:
    """reach[s, d] is True iff d can be reached from s along edges s -> d (adj[d, s] > 0)."""
    n = adj.shape[0]
    step = (adj > 0).T.to(torch.float64)  # step[s, d]: edge s -> d
    reach = torch.eye(n, dtype=torch.float64) + step
    reach = (reach > 0).to(torch.float64)
    # repeated squaring of the reachability relation: O(n^3 log n), fine for n <= a few thousand
    for _ in range(max(1, n.bit_length())):
        new = ((reach @ reach) > 0).to(torch.float64)
        if torch.equal(new, reach):
            break
        reach = new
    return reach > 0


@dataclass(frozen=True, eq=False)
class Topology:
    """A communication graph. `weights[i, j] > 0` iff node j sends to node i (self-loops included)."""

    weights: torch.Tensor
    name: str = "custom"

    def __post_init__(self):
        object.__setattr__(self, "weights", as_weight_matrix(self.weights, what=f"topology '{self.name}' weights"))

    @property
    def n(self) -> int:
        return self.weights.shape[0]

    @property
    def adjacency(self) -> torch.Tensor:
        """Boolean [n, n]: adjacency[i, j] iff j sends to i."""
        return self.weights > 0

    @property
    def directed(self) -> bool:
        return not torch.equal(self.adjacency, self.adjacency.T)

    def in_neighbors(self, i: int) -> list[int]:
        """Nodes j that send to node i (j != i)."""
        self._check_node(i)
        return [j for j in torch.nonzero(self.adjacency[i]).flatten().tolist() if j != i]

    def out_neighbors(self, j: int) -> list[int]:
        """Nodes i that receive from node j (i != j)."""
        self._check_node(j)
        return [i for i in torch.nonzero(self.adjacency[:, j]).flatten().tolist() if i != j]

    def num_edges(self) -> int:
        """Directed edges, self-loops excluded."""
        return int(self.adjacency.sum().item() - torch.diagonal(self.adjacency).sum().item())

    def has_self_loops(self) -> bool:
        return bool(torch.diagonal(self.adjacency).all())

    def unreachable(self) -> dict[int, list[int]]:
        """{s: [nodes s cannot reach]} for every node s that cannot reach all others."""
        reach = _reachable(self.weights)
        return {s: torch.nonzero(~reach[s]).flatten().tolist() for s in range(self.n) if not reach[s].all()}

    def is_strongly_connected(self) -> bool:
        return not self.unreachable()

    def check_strongly_connected(self) -> "Topology":
        """Return self, or raise ValueError saying which nodes cannot reach which."""
        bad = self.unreachable()
        if bad:
            shown = "; ".join(f"node {s} cannot reach {t}" for s, t in list(bad.items())[:5])
            more = f" (and {len(bad) - 5} more nodes)" if len(bad) > 5 else ""
            raise ValueError(f"topology '{self.name}' with {self.n} nodes is not strongly connected: {shown}{more}")
        return self

    def undirected(self) -> "Topology":
        """The symmetrized graph: an edge both ways wherever one existed (weights max(w, w^T))."""
        return Topology(torch.maximum(self.weights, self.weights.T), name=f"{self.name}-undirected")

    def to_networkx(self):
        """A networkx.DiGraph with an edge j -> i of attribute `weight` for each w_ij > 0 (self-loops kept)."""
        import networkx as nx

        g = nx.DiGraph(name=self.name)
        g.add_nodes_from(range(self.n))
        for i, j in torch.nonzero(self.adjacency).tolist():
            g.add_edge(j, i, weight=float(self.weights[i, j]))
        return g

    def _check_node(self, i: int):
        if not 0 <= i < self.n:
            raise ValueError(f"node {i} is out of range for topology '{self.name}' with {self.n} nodes "
                             f"(0..{self.n - 1})")

    def __repr__(self) -> str:
        kind = "directed" if self.directed else "undirected"
        return f"Topology(name={self.name!r}, n={self.n}, edges={self.num_edges()}, {kind})"
