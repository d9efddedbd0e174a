"""The one registry of decentralized algorithms: every algorithm class registers itself under its `name`, once.

    @register_algorithm
    class PushPull(Algorithm):
        name, label, topology_matrices = "pushpull", "P2P-FT", ("row", "column")

`make_algorithm(name, *args, **kwargs)` calls the class registered under `name`; `from_topology(name, topology, lr,
**kw)` builds it with the matrices its `topology_matrices` names, taken from a graph (or a callable t -> graph):
"row" is row_stochastic(W) (P2P-FT's A), "column" column_stochastic(W) (its B). So pushpull gets A and B, pushsum
B, the DGD and GT-DGD forms (dgd, dgd_eq1, dpsgd, gtdgd, gtdgd_atc) the graph's own row-stochastic A (never another
graph: doubly stochastic only when the graph is weight-balanced after normalisation, otherwise they converge to a
Perron-weighted point, see `algorithms`); local and centralized none. A doubly stochastic W of an undirected graph
(e.g. `dflbench.topology.metropolis_hastings`) goes to the constructors directly.

`RENAMED` maps the names dflbench's P2P-FT recipe used before it took this registry's (p2pft, gt-dgd, dgd-cta,
dgd-eq1, gt-dgd-atc) to the names here: `canonical_algorithm` and every lookup accept them, so recorded results
and recipe files that hold them still load; `list_algorithms` shows only the names here.
"""

from __future__ import annotations

from typing import Callable

from dflbench.topology import Topology, column_stochastic, row_stochastic

from .base import Algorithm

_ALGORITHMS: dict[str, type[Algorithm]] = {}
_NORMALISE = {"row": row_stochastic, "column": column_stochastic}
RENAMED = {"p2pft": "pushpull", "gt-dgd": "gtdgd", "dgd-cta": "dpsgd", "dgd-eq1": "dgd_eq1",
           "gt-dgd-atc": "gtdgd_atc"}


def register_algorithm(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: register `cls` under `cls.name`; ValueError when the name (or an old name in `RENAMED`) is
    taken or `cls.topology_matrices` names an unknown normalisation."""
    if cls.name in _ALGORITHMS or cls.name in RENAMED:
        raise ValueError(f"algorithm {cls.name!r} is already registered; pick another name")
    bad = [m for m in cls.topology_matrices if m not in _NORMALISE]
    if bad:
        raise ValueError(f"algorithm {cls.name!r}: unknown topology_matrices {bad}; valid: {', '.join(_NORMALISE)}")
    _ALGORITHMS[cls.name] = cls
    return cls


def list_algorithms() -> list[str]:
    return sorted(_ALGORITHMS)


def canonical_algorithm(name: str) -> str:
    """`name`, or the name it was renamed to (`RENAMED`); ValueError listing the valid names for an unknown one."""
    name = RENAMED.get(name, name)
    if name not in _ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid algorithms: {', '.join(list_algorithms())}")
    return name


def get_algorithm(name: str) -> type[Algorithm]:
    """The class registered as `name` (or as what `name` was renamed to); ValueError listing the valid names
    otherwise."""
    return _ALGORITHMS[canonical_algorithm(name)]


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
    _per_step(topology, lambda t: t)                                  # checked even when no matrix is taken
    return cls(*(_per_step(topology, _NORMALISE[m]) for m in cls.topology_matrices), lr, **kwargs)
