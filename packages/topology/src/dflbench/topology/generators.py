"""Graph generators and their registry (`list_topologies`, `make_topology`), all with self-loops."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Callable

import torch

from .graph import Topology

_REGISTRY: dict[str, Callable[..., Topology]] = {}


def register_topology(fn: Callable[..., Topology]) -> Callable[..., Topology]:
    """Register `fn(n, **kw) -> Topology` under its function name; ValueError when another generator holds it."""
    held = _REGISTRY.get(fn.__name__)
    if held is not None and held is not fn:
        raise ValueError(f"topology {fn.__name__!r} is already registered (by {held.__module__}); registered: "
                         f"{', '.join(list_topologies())}; give the generator another name")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_topologies() -> list[str]:
    return sorted(_REGISTRY)


def make_topology(name: str, n: int, **kwargs) -> Topology:
    """Build the registered topology `name` on `n` nodes; unknown names list the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown topology {name!r}; choose one of: {', '.join(list_topologies())}")
    return _REGISTRY[name](n, **kwargs)


def _check_n(n: int, name: str, at_least: int = 1) -> None:
    if not isinstance(n, int) or n < at_least:
        raise ValueError(f"{name} needs an integer node count >= {at_least}, got {n!r}")


def _from_edges(n: int, edges, name: str) -> Topology:
    """edges: iterable of (src, dst); adds every self-loop."""
    w = torch.eye(n, dtype=torch.float64)
    for src, dst in edges:
        w[dst, src] = 1.0
    return Topology(w, name=name)


def _hops(n: int) -> list[int]:
    """Exponential-graph hops 2**k for k >= 0 with 2**k < n (AEDFL eq. 3.2)."""
    return [1 << k for k in range(n.bit_length()) if (1 << k) < n]


@register_topology
def ring(n: int, directed: bool = False) -> Topology:
    """Ring: node j sends to j+1 (and to j-1 unless directed)."""
    _check_n(n, "ring")
    edges = [(j, (j + 1) % n) for j in range(n)]
    if not directed:
        edges += [(j, (j - 1) % n) for j in range(n)]
    return _from_edges(n, edges, "ring-directed" if directed else "ring")


@register_topology
def exponential(n: int) -> Topology:
    """AEDFL eq. 3.2: w_ij > 0 iff i == (j + 2**k) mod n for some k >= 0 with 2**k < n, or i == j."""
    _check_n(n, "exponential")
    return _from_edges(n, [(j, (j + h) % n) for j in range(n) for h in _hops(n)], "exponential")


@register_topology
def hub_ring(n: int) -> Topology:
    """Directed ring j -> j+1 plus hub 0 sending to every node: strongly connected (the ring) and, for n >= 3, not
    weight-balanced (node 0 sends to n-1 nodes and hears 1; nodes 2..n-1 hear 2 and send to 1), so the row- and
    column-normalised matrices of P2P-FT differ (A != B). The default P2P-FT graph: it exercises push-pull, where a
    regular graph (ring, exponential on a power of two) reduces it to plain gradient tracking. With n <= 2 every
    strongly connected digraph is regular, so it is refused."""
    _check_n(n, "hub_ring", at_least=3)
    edges = {(j, (j + 1) % n) for j in range(n)} | {(0, i) for i in range(1, n)}
    return _from_edges(n, sorted(edges), "hub_ring")


@register_topology
def one_peer_exponential(n: int, t: int = 0) -> Topology:
    """Time-varying one-peer exponential graph: at step t node j sends only to j + 2**(t mod ceil(log2 n))."""
    _check_n(n, "one_peer_exponential")
    hops = _hops(n)
    if not hops:
        return _from_edges(n, [], "one_peer_exponential")
    h = hops[t % len(hops)]
    return _from_edges(n, [(j, (j + h) % n) for j in range(n)], f"one_peer_exponential[t={t}]")


def one_peer_exponential_period(n: int) -> int:
    """Number of distinct graphs in the one-peer exponential sequence (their union is `exponential(n)`)."""
    return max(1, len(_hops(n)))


@register_topology
def complete(n: int) -> Topology:
    _check_n(n, "complete")
    return Topology(torch.ones(n, n, dtype=torch.float64), name="complete")


@register_topology
def star(n: int) -> Topology:
    """Undirected star centred on node 0."""
    _check_n(n, "star")
    return _from_edges(n, [e for j in range(1, n) for e in ((0, j), (j, 0))], "star")


@register_topology
def torus(n: int | None = None, rows: int | None = None, cols: int | None = None) -> Topology:
    """2-D torus (undirected, 4 neighbours). Give rows and cols, or n (the most square factorisation)."""
    if rows is None or cols is None:
        if n is None:
            raise ValueError("torus needs n or both rows and cols")
        _check_n(n, "torus")
        rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
        cols = n // rows
    if rows < 1 or cols < 1 or (n is not None and rows * cols != n):
        raise ValueError(f"torus rows x cols must equal n: got {rows} x {cols} for n={n}")
    idx = lambda r, c: (r % rows) * cols + (c % cols)  # noqa: E731
    edges = [(idx(r, c), idx(r + dr, c + dc)) for r in range(rows) for c in range(cols)
             for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))]
    return _from_edges(rows * cols, edges, f"torus-{rows}x{cols}")


@register_topology
def erdos_renyi(n: int, p: float = 0.5, directed: bool = True, seed: int = 0, max_tries: int = 1000) -> Topology:
    """G(n, p) resampled (seeded) until strongly connected; ValueError after `max_tries` draws."""
    _check_n(n, "erdos_renyi")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"erdos_renyi edge probability p must be in [0, 1], got {p}")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(max_tries):
        adj = torch.rand(n, n, generator=gen, dtype=torch.float64) < p
        if not directed:
            adj = torch.triu(adj, 1)
            adj = adj | adj.T
        adj.fill_diagonal_(True)
        topo = Topology(adj.to(torch.float64), name=f"erdos_renyi-p{p:g}")
        if topo.is_strongly_connected():
            return topo
    raise ValueError(f"erdos_renyi({n}, p={p}) drew no strongly connected graph in {max_tries} tries; raise p")


def from_adjacency(adj, name: str = "custom", self_loops: bool = True) -> Topology:
    """A topology from `adj[i, j] > 0` iff j sends to i; missing self-loops get weight 1 unless `self_loops=False`."""
    w = Topology(adj, name=name).weights.clone()
    if self_loops:
        d = torch.diagonal(w)
        d[d == 0] = 1.0
    return Topology(w, name=name)


def from_networkx(g, name: str | None = None, weight: str = "weight", self_loops: bool = True) -> Topology:
    """From a networkx (Di)Graph on nodes 0..n-1: an edge u -> v means u sends to v (undirected: both ways)."""
    import networkx as nx

    nodes = sorted(g.nodes)
    if nodes != list(range(len(nodes))):
        raise ValueError("from_networkx needs nodes labelled 0..n-1; "
                         "relabel with networkx.convert_node_labels_to_integers")
    w = torch.zeros(len(nodes), len(nodes), dtype=torch.float64)
    for u, v, data in g.edges(data=True):
        w[v, u] = float(data.get(weight, 1.0))
        if not isinstance(g, nx.DiGraph):
            w[u, v] = float(data.get(weight, 1.0))
    return from_adjacency(w, name=name or (g.name or "networkx"), self_loops=self_loops)


def topology_from_spec(spec: str, n: int, seed: int = 0) -> Topology:
    """The graph a run's `topology` option names on `n` nodes: a registered generator (one that draws, i.e. takes a
    `seed`, gets `seed`), or `adjacency:PATH` to a text or .npy 0/1 matrix with adj[i, j] > 0 iff j sends to i. It
    must be strongly connected. ValueError on a bad spec, FileNotFoundError for a missing adjacency file."""
    if spec.startswith("adjacency:"):
        import numpy as np

        path = Path(spec.split(":", 1)[1])
        if not path.is_file():
            raise FileNotFoundError(f"adjacency file {str(path)!r} does not exist; give adjacency:PATH to an n x n "
                                    "0/1 matrix (.npy or whitespace-separated text)")
        adj = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, ndmin=2)
        if adj.shape != (n, n):
            raise ValueError(f"adjacency {path} has shape {adj.shape} but the run has {n} nodes; give an n x n matrix")
        topo = from_adjacency(torch.as_tensor(adj, dtype=torch.float64), name=path.stem)
    elif spec not in _REGISTRY:
        raise ValueError(f"unknown topology {spec!r}; valid: {', '.join(list_topologies())}, adjacency:PATH")
    else:
        seeded = "seed" in inspect.signature(_REGISTRY[spec]).parameters
        topo = make_topology(spec, n, **({"seed": seed} if seeded else {}))
    return topo.check_strongly_connected()
