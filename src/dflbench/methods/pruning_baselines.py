"""Pruning baselines of AEDFL Table 1 (hrank, fedap, hap) on the decentralized asynchronous loop.

The loop is AEDFL-0's (uniform weights over all cached models, masked aggregation eq. 4.11, one random
out-neighbor per update); at the same scheduled updates as AEDFL's pruning, each due device re-prunes its full
model with `dflbench.pruning.prune_model` and the rule's scores (structured units: conv channels / neighbors):
  hrank  (Lin et al. 2020)   average rank of each unit's feature maps
  fedap  (Zhang et al. 2022) layer-adaptive rates from the per-layer eigen-gap rule, HRank scores inside a layer
  hap    (Yu et al. 2022)    Hessian-aware sensitivity tr(H_uu) / |u| ||w_u||^2
at the fixed rate `rate` (the baselines have no neighbor-aware rate rule).
Simplification: pruning runs model by model (a loop over the due devices, at pruning updates only); local
training and aggregation stay batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils import vector_to_parameters

from dflbench.pruning import PruningConfig as PackagePruningConfig
from dflbench.pruning import prune_model

from dflbench.methods.aedfl.method import AEDFL, AEDFLConfig
from dflbench.methods.aedfl.pruning import ScheduledPruner

RULES = ("hrank", "fedap", "hap")


@dataclass(frozen=True)
class BaselinePruningConfig:
    every: int = 10
    until: int = 10_000
    rate: float = 0.4
    num_probes: int = 4
    slq_steps: int = 8
    slq_runs: int = 1

    def __post_init__(self):
        if self.every < 1 or not 0 <= self.rate < 1:
            raise ValueError("BaselinePruningConfig: every >= 1 and rate in [0, 1)")


class PackagePruner(ScheduledPruner):
    """Scheduled structured pruning of single models with a `dflbench.pruning` scoring rule."""

    def __init__(self, sim, rule: str, cfg: BaselinePruningConfig):
        if rule not in RULES:
            raise ValueError(f"unknown pruning baseline {rule!r}; valid: {', '.join(RULES)}")
        super().__init__(sim, cfg)
        self.rule = rule
        self.pcfg = PackagePruningConfig(rule=rule, approximation="diagonal", num_probes=cfg.num_probes,
                                         slq_steps=cfg.slq_steps, slq_runs=cfg.slq_runs)
        self.rate.fill_(cfg.rate)
        self.model = sim.net.template
        self.init = {k: v.detach().clone() for k, v in self.model.named_parameters()}

    def prune(self, sim, devs, x, masks, w, active, neighbor_rates):
        xb, yb = sim.data.batch(devs.to(sim.dev), sim.t[devs].to(sim.dev), -1, sim.cfg.batch_size, sim.cfg.seed)
        new = []
        for b in range(len(devs)):
            vector_to_parameters(x[b].detach().cpu(), self.model.parameters())
            res = prune_model(self.model, F.cross_entropy, (xb[b].cpu(), yb[b].cpu()), self.cfg.rate,
                              config=self.pcfg, initial_params=self.init, seed=sim.cfg.seed + int(devs[b]))
            new.append(res.flat_mask(self.model).to(torch.bool))
        new = torch.stack(new).to(sim.dev)
        return new, self.mflops(sim, new) / self.dense


class PruningBaseline(AEDFL):
    """AEDFL-0's loop with a `dflbench.pruning` baseline rule at the scheduled updates."""

    def __init__(self, rule: str, config: BaselinePruningConfig = BaselinePruningConfig()):
        if rule not in RULES:
            raise ValueError(f"unknown pruning baseline {rule!r}; valid: {', '.join(RULES)}")
        super().__init__(rule, AEDFLConfig(rl=False, dwu=False, prune=False))
        self.rule, self.pconfig = rule, config

    def setup(self, sim) -> None:
        super().setup(sim)
        self.pruner = PackagePruner(sim, self.rule, self.pconfig)
