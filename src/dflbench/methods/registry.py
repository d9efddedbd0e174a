"""Registry of the AEDFL methods: AEDFL, its ablations (Sec. 6.1) and the 14 baselines of Table 1.

`make_method(name)` returns a fresh method object for `AsyncSimulator`; unknown names raise a ValueError that
lists the valid ones. `options` (a dict) reaches the method's config where it has one (e.g. {"fraction": 0.2}).
"""

from __future__ import annotations

from typing import Callable

from dflbench.methods.decentralized import ADPSGD, DPSGD, DisPFL, DisPFLConfig
from dflbench.methods.aedfl.method import AEDFL, AEDFLConfig
from dflbench.methods.aedfl.pruning import PruningConfig
from dflbench.methods.pruning_baselines import BaselinePruningConfig, PruningBaseline
from dflbench.methods.server import AsyncServer, AsyncServerConfig, SyncServer, SyncServerConfig

ABLATIONS = {  # name: (rl, dwu, prune)
    "aedfl": (True, True, True), "aedfl-0": (False, False, False), "aedfl-rl": (True, False, False),
    "aedfl-dwu": (False, True, False), "aedfl-p": (False, False, True), "aedfl-rl-dwu": (True, True, False),
}


def _aedfl(name):
    def make(prune_every: int = 10, min_rate: float = 0.4, **_):
        rl, dwu, prune = ABLATIONS[name]
        return AEDFL(name, AEDFLConfig(rl=rl, dwu=dwu, prune=prune,
                                       pruning=PruningConfig(every=prune_every, min_rate=min_rate,
                                                             max_rate=max(min_rate, PruningConfig.max_rate))))
    return make


def _sync(rule):
    return lambda fraction=0.1, mu=0.01, **_: SyncServer(rule, SyncServerConfig(fraction, mu))


def _async(rule):
    return lambda buffer=10, **_: AsyncServer(rule, AsyncServerConfig(buffer=buffer))


def _pruning(rule):
    return lambda prune_every=10, min_rate=0.4, **_: PruningBaseline(rule, BaselinePruningConfig(prune_every,
                                                                                                  rate=min_rate))


_METHODS: dict[str, Callable] = {
    **{n: _aedfl(n) for n in ABLATIONS},
    **{r: _sync(r) for r in SyncServer.RULES},
    **{r: _async(r) for r in AsyncServer.RULES},
    "ad-psgd": lambda **_: ADPSGD(), "d-psgd": lambda **_: DPSGD(),
    "dispfl": lambda density=0.5, **_: DisPFL(DisPFLConfig(density=density)),
    **{r: _pruning(r) for r in ("hrank", "fedap", "hap")},
}


def list_methods() -> list[str]:
    return list(_METHODS)


def make_method(name: str, options: dict | None = None):
    """A fresh method object. `options`: prune_every, min_rate (AEDFL, pruning baselines), fraction, mu (fedavg,
    fedprox, fednova), buffer (async server rules), density (dispfl)."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(_METHODS)}")
    return _METHODS[name](**(options or {}))
