"""ASO-Fed (Chen, Ning, Slawski & Rangwala 2020), AEDFL Table 1: asynchronous online FL.

Server, on every arrival: x <- x + s_k / s (x_k - x) (`rules.asofed_update`).
Device k (Sec. 4.2), each local SGD step on its surrogate objective zeta_k(w) = f_k(w) + lambda/2 ||w - w_g||^2
(w_g: the global model it received), with a decay coefficient beta balancing its past and current gradients:
  g_t = grad f_k(w) + lambda (w - w_g);  h_t = beta h_{t-1} + (1 - beta) g_t;  w <- w - eta_k h_t
(h persists across the device's local updates, zero before its first step; beta = 0 is SGD on zeta_k), and the
dynamic step size eta_k = eta max(1, log(mean staleness of k so far)) (`rules.asofed_step_scale`): stragglers take
larger steps. The decay's exact recursion was not available here to check; a first reading that stepped along
g_t - g_{t-1} + h_t (gradient differences across minibatches) diverged to a NaN loss at lr 0.1 in a 10-device
CIFAR-10 run, so the decayed average of the surrogate gradients above is used.
Departure (stated): the server-side feature representation learning of ASO-Fed (a re-weighting of the first layer's
input features) is not reproduced: its formula is given for a fully connected first layer and was not available
here to check; nothing replaces it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.errors import UserError
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import AsyncServer
from dflbench.registry import option


@dataclass(frozen=True)
class ASOFedOptions:
    lam: float = option(0.01, "lambda >= 0 of the surrogate's term lambda/2 ||w - w_g||^2")
    beta: float = option(0.5, "decay coefficient in [0, 1) of the past gradients h")

    def __post_init__(self):
        if not self.lam >= 0:
            raise UserError(f"lam must be >= 0, got {self.lam}")
        if not 0 <= self.beta < 1:
            raise UserError(f"beta must be in [0, 1), got {self.beta}")


@register_method("aso-fed", options=ASOFedOptions, kind="server",
                 paper="Chen et al. 2020 (AEDFL Table 1); without the server's feature representation learning")
class ASOFed(AsyncServer):
    name = "aso-fed"

    def __init__(self, options: ASOFedOptions = ASOFedOptions()):
        super().__init__(options)

    def setup(self, sim) -> None:
        self.h = torch.zeros_like(sim.x)                             # each device's decayed surrogate gradients
        super().setup(sim)

    def client_lr(self, sim, devs) -> torch.Tensor:
        n = self.participation[devs].clamp(min=1).double()
        return (sim.cfg.lr * rules.asofed_step_scale(self.staleness_sum[devs] / n)).to(torch.float32)

    def grad_fn(self, sim, devs):
        wg, lam, beta = self.start[devs], self.options.lam, self.options.beta

        def surrogate(x, g):
            h = beta * self.h[devs] + (1 - beta) * (g + lam * (x - wg))
            self.h[devs] = h
            return h

        return surrogate

    def apply(self, sim, d: int, xk: torch.Tensor, tau: int) -> None:
        self.xg = rules.asofed_update(self.xg, xk, float(self.sizes[d]), float(self.sizes.sum()))
        self.version += 1
