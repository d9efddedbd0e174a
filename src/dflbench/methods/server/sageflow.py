"""Sageflow (Park et al. 2021), AEDFL Table 1: staleness-aware grouping; every K arrivals the uploads are grouped
by staleness, averaged per group (sample-weighted), the groups combined with weights s_g / (1 + tau_g), and the
result mixed into the global model, x <- (1 - gamma) x + gamma x_agg.
Simplification (stated): no entropy/loss-based filtering (no adversaries are simulated)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.errors import UserError
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import BufferedServer, BufferOptions
from dflbench.registry import option


@dataclass(frozen=True)
class SageflowOptions(BufferOptions):
    gamma: float = option(0.5, "rate in (0, 1] at which the grouped average enters the global model")

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.gamma <= 1:
            raise UserError(f"gamma must be in (0, 1], got {self.gamma}")


@register_method("sageflow", options=SageflowOptions, kind="server", paper="Park et al. 2021 (AEDFL Table 1)")
class Sageflow(BufferedServer):
    name = "sageflow"

    def __init__(self, options: SageflowOptions = SageflowOptions()):
        super().__init__(options)

    def aggregate(self, sim, devs, models, taus) -> torch.Tensor:
        s = self.sizes[devs]
        groups = taus.unique()
        avgs = torch.stack([rules.fedavg(models[taus == g], s[taus == g]) for g in groups])
        gw = torch.stack([s[taus == g].sum() / (1 + g) for g in groups])
        gamma = self.options.gamma
        return (1 - gamma) * self.xg + gamma * rules.fedavg(avgs, gw)
