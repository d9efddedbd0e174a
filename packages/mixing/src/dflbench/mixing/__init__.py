"""dflbench-mixing: decentralized optimizers over stacked node parameters.

    from dflbench.mixing import PushPull, run
    alg = PushPull(A, B, lr=1e-3)           # A row-, B column-stochastic [n, n] (or callables t -> matrix)
    state = run(alg, grad_fn, x0, steps)    # x0: tensor [n, q] or dict of [n, *shape]
    state.params, state.aux, state.bytes_sent

Algorithms: DGD, DGDEq1, DPSGD, GTDGD, GTDGDATC, PushPull (P2P-FT Algorithm 1), PushSum, Local, Centralized (see
`algorithms`); cross-node operations go through a `Communicator` (see `comm`; `BlockCommunicator` runs independent
copies of a system stacked along the rows, e.g. several seeds).
"""

from .accounting import consensus_distance, pairwise_consensus_distance, total_bytes
from .algorithms import DGD, DPSGD, GTDGD, GTDGDATC, Centralized, DGDEq1, Local, PushPull, PushSum
from .base import Algorithm, NonFiniteError
from .comm import BlockCommunicator, Communicator, LocalCommunicator
from .matrix import MatrixSchedule, MixingMatrix
from .registry import (
    RENAMED,
    canonical_algorithm,
    from_topology,
    get_algorithm,
    list_algorithms,
    make_algorithm,
    register_algorithm,
)
from .run import run
from .state import MixingState, concat_states
from .tree import Tree, flatten_rows, tree_leaves, tree_map

__all__ = [
    "RENAMED", "Algorithm", "BlockCommunicator", "Centralized", "Communicator", "DGD", "DGDEq1", "DPSGD", "GTDGD",
    "GTDGDATC", "Local", "LocalCommunicator", "MatrixSchedule", "MixingMatrix", "MixingState", "NonFiniteError",
    "PushPull", "PushSum", "Tree", "canonical_algorithm", "concat_states", "consensus_distance", "flatten_rows",
    "from_topology", "get_algorithm", "list_algorithms", "make_algorithm", "pairwise_consensus_distance",
    "register_algorithm", "run", "total_bytes", "tree_leaves", "tree_map",
]
