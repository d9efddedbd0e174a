"""ASO-Fed (Chen et al. 2020), AEDFL Table 1: the server applies every arrival at once, x <- x + s_k / s (x_k - x)
(`rules.asofed_update`), and a device's local step is scaled by max(1, log(its mean staleness so far))
(`rules.asofed_step_scale`): stragglers take larger steps."""

from __future__ import annotations

import torch

from dflbench.aggregation import rules
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import AsyncServer
from dflbench.registry import NoOptions


@register_method("aso-fed", options=NoOptions, kind="server", paper="Chen et al. 2020 (AEDFL Table 1)")
class ASOFed(AsyncServer):
    name = "aso-fed"

    def __init__(self, options: NoOptions = NoOptions()):
        super().__init__(options)

    def client_lr(self, sim, devs) -> torch.Tensor:
        n = self.participation[devs].clamp(min=1).double()
        return (sim.cfg.lr * rules.asofed_step_scale(self.staleness_sum[devs] / n)).to(torch.float32)

    def apply(self, sim, d: int, xk: torch.Tensor, tau: int) -> None:
        self.xg = rules.asofed_update(self.xg, xk, float(self.sizes[d]), float(self.sizes.sum()))
        self.version += 1
