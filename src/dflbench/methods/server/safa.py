"""SAFA (Wu et al. 2020), AEDFL Table 1: the server caches every device's latest upload; every K arrivals the new
global model is the sample-weighted cache average, with entries more than `lag_tolerance` versions old replaced by
the global model (`rules.safa_aggregate`).
Simplification (stated): every device receives the new global model (no local continuation of tolerable devices),
and there is no per-round deadline."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.errors import UserError
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import BufferedServer, BufferOptions
from dflbench.registry import option


@dataclass(frozen=True)
class SAFAOptions(BufferOptions):
    lag_tolerance: float = option(5.0, "cache entries more server versions old than this are deprecated")

    def __post_init__(self):
        super().__post_init__()
        if not self.lag_tolerance >= 0:
            raise UserError(f"lag_tolerance must be >= 0, got {self.lag_tolerance}")


@register_method("safa", options=SAFAOptions, kind="server", paper="Wu et al. 2020 (AEDFL Table 1)")
class SAFA(BufferedServer):
    name = "safa"

    def __init__(self, options: SAFAOptions = SAFAOptions()):
        super().__init__(options)

    def setup(self, sim) -> None:
        self.cache = sim.x.clone()                                   # every device's latest upload
        self.cache_version = torch.zeros(sim.D, dtype=torch.long)
        super().setup(sim)

    def apply(self, sim, d: int, xk: torch.Tensor, tau: int) -> None:
        self.cache[d] = xk
        self.cache_version[d] = self.version
        super().apply(sim, d, xk, tau)

    def aggregate(self, sim, devs, models, taus) -> torch.Tensor:
        stale = (self.version - self.cache_version).double()
        return rules.safa_aggregate(self.xg, self.cache, self.sizes, stale, self.options.lag_tolerance)
