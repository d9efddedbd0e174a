"""FedSA (Chen et al. 2021), AEDFL Table 1: semi-asynchronous; every M buffered uploads, the sample-weighted
average of those with staleness <= tau_0 becomes the global model (`rules.fedsa_aggregate`; none fresh: the global
model stays); devices train with frequency-compensated learning rates eta_i = eta / (N f_i)
(`rules.fedsa_learning_rates`, f_i = device i's share of the uploads so far)."""

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
    tau0: float = option(10.0, "tau_0 >= 0: buffered uploads staler than this are left out of the average")

    def __post_init__(self):
        super().__post_init__()
        if not self.tau0 >= 0:
            raise UserError(f"tau0 must be >= 0, got {self.tau0}")


@register_method("fedsa", options=FedSAOptions, kind="server", paper="Chen et al. 2021 (AEDFL Table 1)")
class FedSA(BufferedServer):
    name = "fedsa"

    def __init__(self, options: FedSAOptions = FedSAOptions()):
        super().__init__(options)

    def client_lr(self, sim, devs) -> torch.Tensor:
        return rules.fedsa_learning_rates(sim.cfg.lr, self.participation)[devs].to(torch.float32)

    def aggregate(self, sim, devs, models, taus) -> torch.Tensor:
        fresh = taus <= self.options.tau0
        if not fresh.any():
            return self.xg
        return rules.fedsa_aggregate(models[fresh], self.sizes[devs][fresh], taus[fresh], self.options.tau0)
