"""Port (Su & Li 2022), AEDFL Table 1: staleness-aware buffered aggregation. Every K arrivals,
x <- x + sum_k w_k Delta_k, Delta_k = upload - the global model device k started from, with
w_k ~ p_k ((cos_k + 1) / 2 + b / (tau_k + b)) normalised to sum 1 (`rules.port_weights`): p_k the sample share,
b / (tau_k + b) the bounded staleness discount and cos_k the cosine of Delta_k with the global model's drift since
that start (no drift yet: cosine 0), so stale updates that still point where the global model went keep weight.
Departure (stated): an approximation of Port's weighting (its exact discount and similarity terms, and its
server-side handling of overly stale clients, were not available here to check); the two terms and their equal
weighting are ours."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dflbench.aggregation import rules
from dflbench.errors import UserError
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import BufferedServer, BufferOptions
from dflbench.registry import option


@dataclass(frozen=True)
class PortOptions(BufferOptions):
    staleness_bound: float = option(10.0, "b > 0 of the bounded staleness weight b / (tau + b)")

    def __post_init__(self):
        super().__post_init__()
        if not self.staleness_bound > 0:
            raise UserError(f"staleness_bound must be > 0, got {self.staleness_bound}")


@register_method("port", options=PortOptions, kind="server",
                 paper="Su & Li 2022 (AEDFL Table 1); its staleness/similarity weighting approximated")
class Port(BufferedServer):
    name = "port"

    def __init__(self, options: PortOptions = PortOptions()):
        super().__init__(options)

    def aggregate(self, sim, devs, models, taus) -> torch.Tensor:
        deltas = models - self.start[devs]
        drift = self.xg.unsqueeze(0) - self.start[devs]
        cos = F.cosine_similarity(deltas.double(), drift.double(), dim=1)
        cos = torch.where(drift.norm(dim=1) > 0, cos, torch.zeros_like(cos)).clamp(-1, 1).cpu()
        w = rules.port_weights(self.sizes[devs], taus, cos, bound=self.options.staleness_bound)
        return self.xg + (w.to(device=deltas.device, dtype=deltas.dtype) @ deltas)
