"""FedSA (Chen, Mao & Ma 2021), AEDFL Table 1: semi-asynchronous; the server waits for M uploads, then the
sample-weighted average of those with staleness <= tau_0 becomes the global model (`rules.fedsa_aggregate`; none
fresh: the global model stays), and devices train with frequency-compensated learning rates
eta_i = eta clamp(1 / (N f_i), 1 / b, b) (`rules.fedsa_learning_rates`, f_i = device i's share of the uploads so
far, b = `lr_bound`).

Departures (stated): FedSA derives M from its convergence bound and the devices' resources, and its compensation
eta / (N f_i) is unbounded. Here M adapts from the staleness it causes: N devices train at once and every M arrivals
make one version, so an upload's staleness is about N / M; after each server step M <- clamp(round(M tau_bar /
(tau_0 / 2)), 1, N), the M that brings the buffer's mean staleness tau_bar to tau_0 / 2 (`adaptive=False`: M stays
`buffer`). The compensation is bounded by b (unbounded, a review run saw a rare device at 3x the base rate)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.errors import UserError
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import BufferedServer, BufferOptions
from dflbench.registry import option


@dataclass(frozen=True)
class FedSAOptions(BufferOptions):
    tau0: float = option(10.0, "tau_0 > 0: buffered uploads staler than this are left out of the average")
    lr_bound: float = option(2.0, "b >= 1: the compensated learning rate stays in [eta / b, eta b]")
    adaptive: bool = option(True, "adapt M (initially `buffer`) so the mean staleness tracks tau_0 / 2")

    def __post_init__(self):
        super().__post_init__()
        if not self.tau0 > 0:
            raise UserError(f"tau0 must be > 0, got {self.tau0}")
        if not self.lr_bound >= 1:
            raise UserError(f"lr_bound must be >= 1, got {self.lr_bound}")


def adapt_m(M: int, mean_staleness: float, tau0: float, n: int) -> int:
    """M <- clamp(round(M tau_bar / (tau_0 / 2)), 1, n) (module docstring)."""
    return int(min(max(round(M * mean_staleness / (tau0 / 2)), 1), n))


@register_method("fedsa", options=FedSAOptions, kind="server",
                 paper="Chen et al. 2021 (AEDFL Table 1); M adapted from staleness, bounded lr compensation")
class FedSA(BufferedServer):
    name = "fedsa"

    def __init__(self, options: FedSAOptions = FedSAOptions()):
        super().__init__(options)

    def client_lr(self, sim, devs) -> torch.Tensor:
        lrs = rules.fedsa_learning_rates(sim.cfg.lr, self.participation, bound=self.options.lr_bound)
        return lrs[devs].to(torch.float32)

    def aggregate(self, sim, devs, models, taus) -> torch.Tensor:
        if self.options.adaptive:
            self.K = adapt_m(self.K, float(taus.mean()), self.options.tau0, sim.D)
        fresh = taus <= self.options.tau0
        if not fresh.any():
            return self.xg
        return rules.fedsa_aggregate(models[fresh], self.sizes[devs][fresh], taus[fresh], self.options.tau0)
