"""dflbench.methods: the algorithms the engines run. `aedfl/` (the AEDFL device step, model selection, adaptive
pruning), `server` (FedAvg-family and asynchronous server baselines), `decentralized` (AD-PSGD, D-PSGD, DisPFL),
`pruning_baselines` (HRank, FedAP, HAP). `make_method(name, options)` builds any of them by name."""

from .registry import list_methods, make_method

__all__ = ["list_methods", "make_method"]
