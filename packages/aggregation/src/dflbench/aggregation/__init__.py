"""dflbench-aggregation: AEDFL dynamic model aggregation (Sec. 4) and the baselines' aggregation rules.

Conventions: a model is a flat vector `[P]` (see `flat`); slot 0 of a `[..., K, P]` stack is the local model,
slots 1..K-1 the cached neighbor models; leading dimensions batch many devices.
"""

from .cache import CacheView, NeighborCache, NeighborSlots, in_neighbor_slots
from .flat import FlatSpec, flatten_state, unflatten
from .masked import masked_average
from .policy import PolicyBank, PolicyConfig, SelectionPolicy
from .pretrain import PretrainConfig, heuristic_selection, pretrain_policy, synthetic_candidates
from .rules import (
    adpsgd_pairwise,
    asofed_step_scale,
    asofed_update,
    dispfl_aggregate,
    fedasync,
    fedavg,
    fedbuff,
    fednova,
    fedprox_term,
    fedsa_aggregate,
    fedsa_learning_rates,
    port_weights,
    safa_aggregate,
    sample_weights,
)
from .staleness import FEATURE_NAMES, NUM_FEATURES, selection_features, staleness
from .staleness_discounts import list_staleness, make_staleness, register_staleness
from .weights import (
    DynamicWeights,
    DynamicWeightsConfig,
    dynamic_weights,
    importance_scale,
    lambda_grad,
    static_weights,
)

__all__ = [
    "CacheView", "NeighborCache", "NeighborSlots", "in_neighbor_slots", "FlatSpec", "flatten_state", "unflatten",
    "masked_average", "PolicyBank", "PolicyConfig",
    "SelectionPolicy", "PretrainConfig", "heuristic_selection", "pretrain_policy", "synthetic_candidates",
    "adpsgd_pairwise", "asofed_step_scale", "asofed_update", "dispfl_aggregate", "fedasync", "fedavg", "fedbuff",
    "fednova", "fedprox_term", "fedsa_aggregate", "fedsa_learning_rates", "port_weights", "safa_aggregate",
    "sample_weights", "FEATURE_NAMES", "NUM_FEATURES", "selection_features", "staleness", "list_staleness",
    "make_staleness", "register_staleness", "DynamicWeights", "DynamicWeightsConfig", "dynamic_weights",
    "importance_scale", "lambda_grad", "static_weights",
]
