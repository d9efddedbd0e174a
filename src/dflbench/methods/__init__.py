"""dflbench.methods: the algorithms the engines run, one class per algorithm, one registry (`registry.py`).
`aedfl/` (the AEDFL device step, model selection, adaptive pruning; its six variants are registered in
`registry.py`), `server/` (FedAvg-family and asynchronous server baselines), `gossip/` (AD-PSGD, D-PSGD),
`dispfl` (DisPFL), `pruning_baselines` (HRank, FedAP, HAP). `make_method(name, options)` builds any of them."""

# the import order is the order `list_methods()` shows them in (after the AEDFL variants)
from . import dispfl, gossip, pruning_baselines, server  # noqa: F401  (register the methods)
from .registry import list_methods, make_method, method_options, register_method

__all__ = ["list_methods", "make_method", "method_options", "register_method"]
