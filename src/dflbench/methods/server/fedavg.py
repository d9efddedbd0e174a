"""The synchronous server baselines of AEDFL Table 1: FedAvg and the two that change one part of its round.

A round (`FedAvg.on_round`): the server samples a fraction C of the devices the coordinator deems alive
(counter-based, keyed by the round; only devices below T = `max_updates` updates are drawn, at most all of them);
they train from the global model in ONE vmapped batch, and the round lasts until the slowest returns (download +
compute + upload); the new global model takes effect at the round's end.
  fedavg  (McMahan et al. 2017)  x <- sum_k p_k x_k, p_k = s_k / sum_j s_j over the sampled devices
  fedprox (Li et al. 2020)       local objective F_k(w) + mu/2 ||w - w^t||^2 (`rules.fedprox_term`), FedAvg's average
  fednova (Wang et al. 2020)     device k runs tau_k = ceil(local_steps * s_k / mean s) steps; normalized averaging
                                 `rules.fednova`
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.engines.async_rng import STREAM_SAMPLE, counter_uniform
from dflbench.engines.async_sim import ROUND, SERVER, AsyncSimulator
from dflbench.errors import UserError
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import ServerMethod
from dflbench.registry import option


@dataclass(frozen=True)
class FedAvgOptions:
    fraction: float = option(0.1, "C: fraction of the alive devices sampled per round, in (0, 1]")

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise UserError(f"fraction must be in (0, 1], got {self.fraction}")


@register_method("fedavg", options=FedAvgOptions, kind="server", paper="McMahan et al. 2017 (AEDFL Table 1)")
class FedAvg(ServerMethod):
    """Synchronous rounds (module docstring). `local_steps`, `grad_fn` and `aggregate` are what FedProx and FedNova
    change."""

    name = "fedavg"

    def __init__(self, options: FedAvgOptions = FedAvgOptions()):
        super().__init__(options)

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_global(sim)
        self.round = 0
        self.pending = None
        sim.schedule(0.0, ROUND)

    def local_steps(self, sim: AsyncSimulator, devs: torch.Tensor) -> torch.Tensor | None:
        """Per-device SGD steps `[m]` of the sampled devices; None: the run's `local_steps` for all."""
        return None

    def grad_fn(self):
        """`g(x, g) -> g` adding terms to the minibatch gradient of the local objective; None: plain SGD."""
        return None

    def aggregate(self, x: torch.Tensor, devs: torch.Tensor, steps: torch.Tensor | None) -> torch.Tensor:
        """The next global model from the local models `x [m, P]` of devices `devs`."""
        return rules.fedavg(x, self.sizes[devs])

    def on_round(self, sim: AsyncSimulator, payload) -> None:
        if self.pending is not None:
            self.xg = self.pending
            self.version += 1
        alive = sim.coordinator.alive_view(sim.now) & sim.alive
        eligible = alive & sim.below_limit()                        # devices with T updates are not sampled
        n_eligible = int(eligible.sum())
        if n_eligible == 0:
            self.pending = None
            sim.schedule(sim.now + sim.cfg.heartbeat_interval, ROUND)
            return
        m = min(max(1, round(self.options.fraction * int(alive.sum()))), n_eligible)
        u = counter_uniform(sim.cfg.seed, STREAM_SAMPLE, self.round, torch.arange(sim.D))
        u[~eligible] = math.inf
        devs = u.argsort()[:m].sort().values
        self.round += 1
        x0 = self.xg.unsqueeze(0).expand(m, -1)
        steps = self.local_steps(sim, devs)
        x, loss, _ = sim.local_sgd(devs, x0, steps=steps, grad_fn=self.grad_fn())
        sim.t[devs] += 1
        sim.loss[devs] = loss
        self.pending = self.aggregate(x, devs, steps)
        nbytes = sim.model_bytes()
        sim.bytes_sent += 2 * nbytes * m
        sim.messages += 2 * m
        comm = sim.profiles.comm_time(devs, torch.full_like(devs, SERVER), torch.tensor(nbytes))
        steps_t = torch.as_tensor(sim.cfg.local_steps if steps is None else steps, dtype=torch.float64)
        compute = steps_t * sim.cfg.batch_size * sim.profiles.time_per_sample[devs] * sim.cost_fraction[devs]
        sim.schedule(sim.now + float((2 * comm + compute).max()), ROUND)

    def on_complete(self, sim, devs, times) -> None:
        raise RuntimeError(f"{self.name} runs in rounds, devices schedule no completions")

    def on_arrive(self, sim, msg) -> None:
        raise RuntimeError(f"{self.name} sends no messages through the event queue")

    def on_rejoin(self, sim, dev) -> None:
        """A rejoined device is sampled again once the coordinator sees its heartbeats."""


@dataclass(frozen=True)
class FedProxOptions(FedAvgOptions):
    mu: float = option(0.01, "mu >= 0 of the proximal term mu/2 ||w - w^t||^2")

    def __post_init__(self):
        super().__post_init__()
        if not self.mu >= 0:
            raise UserError(f"mu must be >= 0, got {self.mu}")


@register_method("fedprox", options=FedProxOptions, kind="server", paper="Li et al. 2020 (AEDFL Table 1)")
class FedProx(FedAvg):
    """FedAvg whose devices minimise F_k(w) + mu/2 ||w - w^t||^2 (w^t: the round's global model): the gradient of
    `rules.fedprox_term` is added to each minibatch gradient."""

    name = "fedprox"

    def __init__(self, options: FedProxOptions = FedProxOptions()):
        super().__init__(options)

    def grad_fn(self):
        xg, mu = self.xg, self.options.mu
        proximal = torch.func.grad(lambda w: rules.fedprox_term(w, xg.expand_as(w), mu))

        def with_proximal(x, g):
            return g + proximal(x)

        return with_proximal


@register_method("fednova", options=FedAvgOptions, kind="server", paper="Wang et al. 2020 (AEDFL Table 1)")
class FedNova(FedAvg):
    """FedAvg with heterogeneous local work and normalized averaging: device k runs tau_k = ceil(local_steps s_k /
    mean s) steps (more data, more steps), and the server applies `rules.fednova` (the tau-normalized update)."""

    name = "fednova"

    def local_steps(self, sim: AsyncSimulator, devs: torch.Tensor) -> torch.Tensor:
        s = self.sizes[devs]
        return torch.ceil(sim.cfg.local_steps * s / self.sizes.mean()).long().clamp(min=1)

    def aggregate(self, x: torch.Tensor, devs: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return rules.fednova(self.xg, x, self.sizes[devs], steps)
