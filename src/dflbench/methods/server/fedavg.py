"""The synchronous server baselines of AEDFL Table 1: FedAvg and the two that change one part of its round.

A round (`FedAvg.on_round`): the server samples m = ceil(C * alive) of the devices the coordinator deems alive,
without replacement (counter-based, keyed by the round; only devices below T = `max_updates` updates are drawn, at
most all of them); they train from the global model in ONE vmapped batch; the round lasts until the slowest returns
(download + compute + upload), and at its end the average of the uploaded models (`AsyncSimulator.outgoing`: a
harmful device uploads noise) becomes the global model and the devices' update counts grow. Every trained round's
average reaches the final model: the run ends after `rounds` R rounds (`sim.finish`), when every device has T
updates (the last round's end counts the updates, so it is applied before the stop), or at `time_budget`, where a
round that could not end within the budget is not started and the run ends (a budget of k rounds' time gives k
rounds: `AsyncSimulator.over_budget`).
  fedavg  (McMahan et al. 2017, Alg. 1)  x <- sum_k p_k x_k, p_k = s_k / sum_j s_j over the sampled devices
  fedprox (Li et al. 2020, Alg. 2)       local objective F_k(w) + mu/2 ||w - w^t||^2 (`rules.fedprox_term`) and
                                         partial work: a fraction of the sampled devices (Sec. 5.2: "stragglers",
                                         drawn at random) runs a uniform number of steps in [1, local_steps]; their
                                         models are averaged as the others (FedProx keeps partial solutions)
  fednova (Wang et al. 2020, eq. 6-7)    device k runs tau_k = ceil(local_steps * s_k / mean s) steps (the paper's
                                         E n_k / B with the run's local_steps as E); normalized averaging
                                         `rules.fednova`
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.engines.async_rng import STREAM_SAMPLE, counter_randint, counter_uniform
from dflbench.engines.async_sim import SERVER, AsyncSimulator, Kind
from dflbench.engines.cost import average_macs
from dflbench.errors import UserError
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import ServerMethod
from dflbench.registry import option


@dataclass(frozen=True)
class FedAvgOptions:
    fraction: float = option(0.1, "C in (0, 1]: ceil(C * alive devices) sampled per round, without replacement")
    rounds: int = option(0, "R >= 0: rounds to run, then the run ends (0: until --max-updates / --time-budget)")

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise UserError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.rounds < 0:
            raise UserError(f"rounds must be >= 0 (0: no round limit), got {self.rounds}")


def sample_size(fraction: float, alive: int) -> int:
    """m = max(1, ceil(C * alive)) (McMahan et al. 2017, Alg. 1), immune to float noise (0.1 * 30 is 3, not 4)."""
    return max(1, math.ceil(round(fraction * alive, 9)))



@dataclass(frozen=True)
class RoundInFlight:
    """A ROUND event's payload while a round is in flight: its devices and their training losses (the round counts
    for them when it ends)."""

    devs: torch.Tensor
    loss: torch.Tensor

@register_method("fedavg", options=FedAvgOptions, kind="server", paper="McMahan et al. 2017 (AEDFL Table 1)")
class FedAvg(ServerMethod):
    """Synchronous rounds (module docstring). `local_steps`, `grad_fn` and `aggregate` are what FedProx and FedNova
    change."""

    name = "fedavg"

    def __init__(self, options: FedAvgOptions = FedAvgOptions()):
        super().__init__(options)

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_global(sim)
        self.round = 0                                               # rounds started (and trained)
        self.pending = None                                          # the average of the round in flight
        sim.schedule(0.0, Kind.ROUND)

    def local_steps(self, sim: AsyncSimulator, devs: torch.Tensor) -> torch.Tensor | None:
        """Per-device SGD steps `[m]` of the sampled devices; None: the run's `local_steps` for all."""
        return None

    def grad_fn(self):
        """`g(x, g) -> g` adding terms to the minibatch gradient of the local objective; None: plain SGD."""
        return None

    def aggregate(self, x: torch.Tensor, devs: torch.Tensor, steps: torch.Tensor | None) -> torch.Tensor:
        """The next global model from the local models `x [m, P]` of devices `devs`."""
        return rules.fedavg(x, self.sizes[devs])

    def sample(self, sim: AsyncSimulator) -> torch.Tensor:
        """The devices of the next round (sorted; empty when none is eligible)."""
        alive = sim.coordinator.alive_view(sim.now) & sim.alive
        eligible = alive & sim.below_limit()                        # devices with T updates are not sampled
        m = min(sample_size(self.options.fraction, int(alive.sum())), int(eligible.sum()))
        u = counter_uniform(sim.cfg.seed, STREAM_SAMPLE, self.round, torch.arange(sim.D))
        u[~eligible] = math.inf
        return u.argsort()[:m].sort().values

    def on_round(self, sim: AsyncSimulator, payload) -> None:
        if payload is not None:                                      # the round in flight ends now
            ended: RoundInFlight = payload
            self.xg, self.pending = self.pending, None
            self.version += 1
            sim.account(ended.devs, updates=1, loss=ended.loss)
            if self.round == self.options.rounds:
                sim.finish(f"{self.round} rounds")
                return
        devs = self.sample(sim)
        if len(devs) == 0:
            sim.schedule(sim.now + sim.cfg.heartbeat_interval, Kind.ROUND)
            return
        steps = self.local_steps(sim, devs)
        nbytes = sim.model_bytes()
        comm = sim.profiles.comm_time(devs, torch.full_like(devs, SERVER), torch.tensor(nbytes))
        steps_t = torch.as_tensor(sim.cfg.local_steps if steps is None else steps, dtype=torch.float64)
        compute = steps_t * sim.cfg.batch_size * sim.profiles.time_per_sample[devs] * sim.cost_fraction[devs]
        aggregation = float(sim.work_time(torch.tensor(SERVER), average_macs(len(devs), sim.P)))   # engines.cost
        end = sim.now + float((2 * comm + compute).max()) + aggregation
        if sim.over_budget(end):                                     # its average could not count: not trained
            sim.finish("time budget")
            return
        x0 = self.xg.unsqueeze(0).expand(len(devs), -1)
        x, loss, _ = sim.local_sgd(devs, x0, steps=steps, grad_fn=self.grad_fn())
        self.pending = self.aggregate(sim.outgoing(devs, x), devs, steps)   # as uploaded: noise from harmful ones
        self.round += 1
        sim.account(messages=2 * len(devs), nbytes=nbytes)         # the global model down, the update up
        sim.schedule(end, Kind.ROUND, RoundInFlight(devs, loss))

    def fraction_done(self, sim: AsyncSimulator) -> float:
        """Rounds started of R (`AsyncSimulator.fraction_done`); 0 without a round limit."""
        return self.round / self.options.rounds if self.options.rounds else 0.0

    def on_complete(self, sim, devs, times) -> None:
        raise RuntimeError(f"{self.name} runs in rounds, devices schedule no completions")

    def on_arrive(self, sim, msg) -> None:
        raise RuntimeError(f"{self.name} sends no messages through the event queue")

    def on_rejoin(self, sim, dev) -> None:
        """A rejoined device is sampled again once the coordinator sees its heartbeats."""


@dataclass(frozen=True)
class FedProxOptions(FedAvgOptions):
    mu: float = option(0.01, "mu >= 0 of the proximal term mu/2 ||w - w^t||^2")
    stragglers: float = option(0.0, "fraction in [0, 1] of the sampled devices doing partial work (Li et al. Sec. 5.2)")

    def __post_init__(self):
        super().__post_init__()
        if not self.mu >= 0:
            raise UserError(f"mu must be >= 0, got {self.mu}")
        if not 0 <= self.stragglers <= 1:
            raise UserError(f"stragglers must be in [0, 1], got {self.stragglers}")


@register_method("fedprox", options=FedProxOptions, kind="server",
                 paper="Li et al. 2020 (AEDFL Table 1); optional random stragglers as in its Sec. 5.2")
class FedProx(FedAvg):
    """FedAvg whose devices minimise F_k(w) + mu/2 ||w - w^t||^2 (w^t: the round's global model; the gradient of
    `rules.fedprox_term` is added to each minibatch gradient), with partial work: each sampled device is a straggler
    with probability `stragglers` (counter-based, keyed by round and device) and then runs a uniform number of SGD
    steps in [1, local_steps] (with local_steps = 1 partial work is the full step). The default 0 gives FedProx the
    work FedAvg does (FedAvg here has no stragglers to drop, unlike Li et al.'s comparison); 0.5 and 0.9 are the
    paper's settings (with 0.5, FedProx reached 0.177 accuracy against FedAvg's 0.287 in a 10-device CIFAR-10
    run, 5 local steps)."""

    name = "fedprox"

    def __init__(self, options: FedProxOptions = FedProxOptions()):
        super().__init__(options)

    def local_steps(self, sim: AsyncSimulator, devs: torch.Tensor) -> torch.Tensor:
        E = sim.cfg.local_steps
        straggler = counter_uniform(sim.cfg.seed, STREAM_SAMPLE, self.round, devs, 1) < self.options.stragglers
        partial = 1 + counter_randint(torch.full_like(devs, E), sim.cfg.seed, STREAM_SAMPLE, self.round, devs, 2)
        return torch.where(straggler, partial, torch.full_like(devs, E))

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
