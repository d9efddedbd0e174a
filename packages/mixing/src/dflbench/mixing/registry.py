"""Algorithms by name, and the matrices each one takes from a topology.

`make_algorithm(name, **kwargs)` calls the constructor registered under `name`; `from_topology(name,
topology, lr, **kw)` builds the matrices P2P-FT prescribes from a graph (or a callable t -> graph):
pushpull gets A = row_stochastic(W), B = column_stochastic(W); pushsum gets B; the DGD and GT-DGD forms (dgd,
dgd_eq1, dpsgd, gtdgd, gtdgd_atc) get the graph's own row-stochastic A = row_stochastic(W) (never another graph:
doubly stochastic only when the graph is weight-balanced after normalisation, otherwise they converge to a
Perron-weighted point, see `algorithms`); local and centralized none. A doubly stochastic W of an undirected
graph (e.g. `dflbench.topology.metropolis_hastings`) goes to the constructors directly.
"""

from __future__ import annotations

from typing import Callable

from dflbench.topology import Topology, column_stochastic, row_stochastic

from .algorithms import DGD, DPSGD, GTDGD, GTDGDATC, Centralized, DGDEq1, Local, PushPull, PushSum
from .base import Algorithm

_ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (DGD, DGDEq1, DPSGD, GTDGD, GTDGDATC, PushPull, PushSum, Local, Centralized)
}


def list_algorithms() -> list[str]:
    return sorted(_ALGORITHMS)


def get_algorithm(name: str) -> type[Algorithm]:
    """The class registered as `name`; ValueError listing the valid names otherwise."""
    if name not in _ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid algorithms: {', '.join(list_algorithms())}")
    return _ALGORITHMS[name]


def make_algorithm(name: str, *args, **kwargs) -> Algorithm:
    """`get_algorithm(name)(*args, **kwargs)`."""
    return get_algorithm(name)(*args, **kwargs)


def _per_step(topology, fn):
    if isinstance(topology, Topology):
        return fn(topology)
    if callable(topology):
        return lambda t: fn(topology(t))
    raise ValueError(f"topology must be a dflbench.topology.Topology or a callable t -> Topology, "
                     f"got {type(topology).__name__}")


def from_topology(name: str, topology: Topology | Callable[[int], Topology], lr, **kwargs) -> Algorithm:
    """Algorithm `name` with the matrices it takes from `topology` (see module docstring)."""
    cls = get_algorithm(name)
    if cls is PushPull:
        return PushPull(_per_step(topology, row_stochastic), _per_step(topology, column_stochastic), lr, **kwargs)
    if cls is PushSum:
        return PushSum(_per_step(topology, column_stochastic), lr, **kwargs)
    if issubclass(cls, (DGD, GTDGDATC)):
        return cls(_per_step(topology, row_stochastic), lr, **kwargs)
    _per_step(topology, lambda t: t)
    return cls(lr, **kwargs)
