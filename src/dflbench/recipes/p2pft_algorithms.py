"""P2P-FT's algorithm names: `--algorithms` takes the names of the one algorithm registry, dflbench.mixing's (one
name each; the recipe's former names, e.g. p2pft for pushpull, still read: `dflbench.mixing.RENAMED`), and
`central`: ONE model trained with plain SGD (mixing's `local`) on the union of the nodes' data.

The mixing algorithms run on the --topology graph with its own row-stochastic weights
(`dflbench.mixing.from_topology`), so off weight-balanced graphs DGD and GT-DGD converge to a Perron-weighted,
biased point: the paper's contrast with push-pull. `dgd` is adapt-then-combine with each node's own gradient (the
paper's reading of eq. 1), `gtdgd` Qu & Li's form (eq. 2 as printed); dgd_eq1, dpsgd and gtdgd_atc are named
variants.
"""

from __future__ import annotations

from dflbench.errors import UserError
from dflbench.mixing import RENAMED, Algorithm, from_topology, get_algorithm, list_algorithms, make_algorithm

CENTRAL = "central"


def list_p2pft_algorithms() -> list[str]:
    """The names `--algorithms` takes: the mixing package's algorithms and `central`."""
    return [*list_algorithms(), CENTRAL]


def label(name: str) -> str:
    """The algorithm's name in tables and plots (Local-FT, P2P-FT, ...; `central`: Centralized)."""
    return "Centralized" if name == CENTRAL else get_algorithm(name).label


def single_model(name: str) -> bool:
    """True for `central`: one model on the union of the nodes' data, not one per node."""
    return name == CENTRAL


def needs_graph(name: str) -> bool:
    """True for an algorithm that mixes over the graph (takes matrices from it)."""
    return not single_model(name) and bool(get_algorithm(name).topology_matrices)


def parse_algorithms(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'local,pushpull,central' -> ('local', 'pushpull', 'central'), a former name read as today's (p2pft ->
    pushpull); UserError naming the valid choices."""
    names = tuple(a.strip() for a in (spec.split(",") if isinstance(spec, str) else spec) if a.strip())
    names = tuple(RENAMED.get(a, a) for a in names)
    bad = [a for a in names if a not in list_p2pft_algorithms()]
    if bad or not names:
        raise UserError(f"--algorithms: unknown algorithm(s) {', '.join(bad) or '(none given)'}; valid: "
                        f"{', '.join(list_p2pft_algorithms())}")
    if len(set(names)) != len(names):
        raise UserError(f"--algorithms: {','.join(names)} repeats a name")
    return names


def build_algorithm(name: str, lr: float, momentum: float, topology) -> Algorithm:
    """Algorithm `name` with its matrices from `topology` (None when no algorithm of the run needs a graph);
    `central` is mixing's `local` (on the one model the recipe gives it)."""
    if needs_graph(name):
        return from_topology(name, topology, lr, momentum=momentum)
    return make_algorithm("local" if single_model(name) else name, lr, momentum=momentum)
