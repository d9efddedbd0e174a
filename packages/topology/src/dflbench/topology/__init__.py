"""dflbench-topology: communication graphs, stochastic weight matrices and spectra.

Orientation (both papers): `weights[i, j] > 0` iff node j sends to node i, so x_i <- sum_j a_ij x_j.
"""

from .generators import (
    complete,
    erdos_renyi,
    exponential,
    from_adjacency,
    from_networkx,
    hub_ring,
    list_topologies,
    make_topology,
    one_peer_exponential,
    one_peer_exponential_period,
    register_topology,
    ring,
    star,
    topology_from_spec,
    torus,
)
from .graph import Topology
from .matrices import (
    column_stochastic,
    is_column_stochastic,
    is_doubly_stochastic,
    is_row_stochastic,
    metropolis_hastings,
    mixing_matrices,
    perron_vector,
    row_stochastic,
    spectral_gap,
    uniform,
)

__all__ = [
    "Topology", "complete", "erdos_renyi", "exponential", "from_adjacency", "from_networkx", "hub_ring",
    "list_topologies", "make_topology", "one_peer_exponential", "one_peer_exponential_period", "register_topology",
    "ring", "star", "topology_from_spec", "torus",
    "column_stochastic", "is_column_stochastic", "is_doubly_stochastic", "is_row_stochastic",
    "metropolis_hastings", "mixing_matrices", "perron_vector", "row_stochastic", "spectral_gap", "uniform",
]
