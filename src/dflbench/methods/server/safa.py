"""SAFA (Wu et al. 2020, Sec. 4), AEDFL Table 1: semi-asynchronous rounds with a lag tolerance, a quota and a model
cache.

Every device trains from the model it has and uploads; its upload enters the server's cache (every device's latest
model, with the global version it was trained from). A round ends when the quota Q = ceil(C D) of uploads has
arrived (first come, first merged: the "picked" devices), or earlier when no device the coordinator deems alive is
still training (checked at each upload and every heartbeat interval while devices wait); the new
global model is the sample-weighted cache average over ALL devices in which every entry lagging more than
`lag_tolerance` versions behind is deprecated and replaced by the global model (`rules.safa_aggregate`;
discriminative aggregation, Sec. 4.3). At the round's end the devices waiting with an applied upload, the picked
ones and the deprecated ones alike, receive the new global model (forced synchronisation of the deprecated);
devices still training are stragglers and go on with their own models (lag-tolerant continuation), their uploads
arriving in a later round, deprecated if they lag too much.
Departures (stated): no round deadline T_lim (a round ends at the quota), so there are no "undrafted" uploads and no
bypass cache: an upload arriving after the quota is a candidate of the next round, which is the bypass's effect."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.engines.async_sim import Kind
from dflbench.errors import UserError
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import BufferedServer
from dflbench.methods.server.fedavg import sample_size
from dflbench.registry import option


@dataclass(frozen=True)
class SAFAOptions:
    fraction: float = option(0.3, "C in (0, 1]: the quota, ceil(C D) uploads end a round")
    lag_tolerance: float = option(5.0, "tau >= 0: cache entries more versions behind are deprecated, devices synced")

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise UserError(f"fraction must be in (0, 1], got {self.fraction}")
        if not self.lag_tolerance >= 0:
            raise UserError(f"lag_tolerance must be >= 0, got {self.lag_tolerance}")


@register_method("safa", options=SAFAOptions, kind="server",
                 paper="Wu et al. 2020 (AEDFL Table 1); rounds end at the quota (no deadline)")
class SAFA(BufferedServer):
    name = "safa"

    def __init__(self, options: SAFAOptions = SAFAOptions()):
        super().__init__(options)

    def buffer_size(self, sim) -> int:
        return sample_size(self.options.fraction, sim.D)

    def setup(self, sim) -> None:
        self.cache = sim.x.clone()                                   # every device's latest upload
        self.cache_base = torch.zeros(sim.D, dtype=torch.long)       # the global version it was trained from
        self.waiting: list[int] = []
        self.check_pending = False
        super().setup(sim)

    def apply(self, sim, d: int, xk: torch.Tensor, tau: int) -> None:
        self.cache[d] = xk
        self.cache_base[d] = self.start_version[d]
        if sim.below_limit()[d]:
            self.waiting.append(d)
        version = self.version
        super().apply(sim, d, xk, tau)
        self._end_round(sim, version)

    def _end_round(self, sim, version: int) -> None:
        """Flush a short round when no device the coordinator deems alive is still training (no upload can come);
        after a round's end reply to the waiting devices, else check again after a heartbeat interval."""
        training = sim.coordinator.alive_view(sim.now) & sim.alive & sim.below_limit()
        training[self.waiting] = False
        if self.version == version and self.buf and not training.any():
            self.flush(sim)
        if self.version != version:                                  # the round ended
            for w in self.waiting:
                if sim.alive[w]:
                    self._reply(sim, w)
            self.waiting = []
        elif self.waiting and not self.check_pending:
            self.check_pending = True
            sim.schedule(sim.now + sim.cfg.heartbeat_interval, Kind.ROUND)

    def on_round(self, sim, payload) -> None:
        """The heartbeat check of a round waiting for uploads (a device may have failed while training)."""
        self.check_pending = False
        self._end_round(sim, self.version)

    def answer(self, sim, d: int) -> None:
        """Waits for the round's end (`apply`)."""

    def on_rejoin(self, sim, dev: int) -> None:
        self.waiting = [w for w in self.waiting if w != dev]
        super().on_rejoin(sim, dev)

    def lag(self) -> torch.Tensor:
        """[D] float64: global versions each cache entry is behind."""
        return (self.version - self.cache_base).double()

    def aggregate(self, sim, devs, models, taus) -> torch.Tensor:
        return rules.safa_aggregate(self.xg, self.cache, self.sizes, self.lag(), self.options.lag_tolerance)


