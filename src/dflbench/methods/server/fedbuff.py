"""FedBuff (Nguyen et al. 2022), AEDFL Table 1: buffered asynchronous aggregation of staleness-discounted deltas,
x <- x + eta_g / K sum_k s(tau_k) Delta_k with s(tau) = 1 / sqrt(1 + tau) (`rules.fedbuff`, `inverse_sqrt`);
Delta_k = the upload minus the global model the device started from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.aggregation.staleness_discounts import inverse_sqrt
from dflbench.errors import UserError
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import BufferedServer, BufferOptions
from dflbench.registry import option


@dataclass(frozen=True)
class FedBuffOptions(BufferOptions):
    server_lr: float = option(1.0, "eta_g > 0: the server learning rate")

    def __post_init__(self):
        super().__post_init__()
        if not self.server_lr > 0:
            raise UserError(f"server_lr must be > 0, got {self.server_lr}")


@register_method("fedbuff", options=FedBuffOptions, kind="server", paper="Nguyen et al. 2022 (AEDFL Table 1)")
class FedBuff(BufferedServer):
    name = "fedbuff"

    def __init__(self, options: FedBuffOptions = FedBuffOptions()):
        super().__init__(options)

    def aggregate(self, sim, devs, models, taus) -> torch.Tensor:
        deltas = models - self.start[devs]
        return rules.fedbuff(self.xg, deltas, taus.to(models.dtype), self.options.server_lr, inverse_sqrt())
