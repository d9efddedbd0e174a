"""Server-based baselines of AEDFL Table 1 on the AsyncSimulator: a simulated server (no compute time, infinite
bandwidth on its side) and heterogeneous devices. Aggregation rules come from `dflbench.aggregation.rules`.

Synchronous (`SyncServer`): each round the server samples a fraction of the devices the coordinator deems alive
(counter-based, keyed by the round; only devices below T = `max_updates` updates are drawn, at most all of them),
they train from the global model in ONE vmapped batch, and the round lasts until the slowest returns (download +
compute + upload); the new global model takes effect at the round's end.
  fedavg  (McMahan et al. 2017)  sample-weighted average
  fedprox (Li et al. 2020)       local loss + mu/2 ||w - w_global||^2
  fednova (Wang et al. 2020)     normalized averaging; device i runs tau_i = ceil(local_steps * s_i / mean s) steps

Asynchronous (`AsyncServer`): a device trains from the last global model it received, uploads, and waits for the
server's reply (the current global model; none once it has done T) before its next update; the server applies its
rule per arrival or per buffer of arrivals. Staleness = server version now - the version the device started from.
  fedbuff  (Nguyen et al. 2022)  buffer of K deltas, x += eta_g / K sum s(tau_k) Delta_k, s = 1/sqrt(1+tau)
  fedsa    (Chen et al. 2021)    buffer of M models, sample-weighted average of those with staleness <= tau_0;
                                 frequency-compensated client learning rates
  aso-fed  (Chen et al. 2020)    per arrival x += s_k / s (x_k - x); client step scaled by max(1, log(mean staleness))
  safa     (Wu et al. 2020)      model cache of every device's latest upload; every K arrivals the cache average with
                                 entries beyond the lag tolerance replaced by the global model.
                                 Simplification: every device receives the new global model (no local continuation
                                 of tolerable devices), no per-round deadline.
  sageflow (Park et al. 2021)    staleness-aware grouping: every K arrivals, updates grouped by staleness are averaged
                                 per group (sample-weighted), groups combined with weights s_g / (1 + tau_g), and the
                                 result mixed into the global model with rate gamma.
                                 Simplification: no entropy/loss-based filtering (no adversaries are simulated).
  port     (Su & Li 2022)        every K arrivals, x += sum_k w_k Delta_k with w_k from sample size, bounded staleness
                                 and the cosine of Delta_k with the global drift since the device's start model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dflbench.aggregation import rules
from dflbench.aggregation.staleness_discounts import inverse_sqrt
from dflbench.engines.async_rng import STREAM_SAMPLE, counter_uniform
from dflbench.engines.async_sim import ROUND, SERVER, AsyncSimulator, Message



class _ServerBase:
    """Global model state, evaluation of the global model, dense MFLOPs."""

    name = "server"

    def _init_global(self, sim: AsyncSimulator) -> None:
        self.xg = sim.net.init.to(sim.dev).clone()
        self.version = 0
        self.sizes = sim.data.sizes.double().cpu()
        self.dense_mflops = sim.model_mflops()

    def eval_models(self, sim: AsyncSimulator) -> torch.Tensor:
        return self.xg.unsqueeze(0)

    def mflops(self, sim: AsyncSimulator) -> float:
        return self.dense_mflops


@dataclass(frozen=True)
class SyncServerConfig:
    fraction: float = 0.1
    mu: float = 0.01

    def __post_init__(self):
        if not 0 < self.fraction <= 1 or self.mu < 0:
            raise ValueError(f"SyncServerConfig: fraction in (0, 1], mu >= 0, got {self.fraction}, {self.mu}")


class SyncServer(_ServerBase):
    """fedavg / fedprox / fednova (module docstring)."""

    RULES = ("fedavg", "fedprox", "fednova")

    def __init__(self, rule: str, config: SyncServerConfig = SyncServerConfig()):
        if rule not in self.RULES:
            raise ValueError(f"unknown synchronous rule {rule!r}; valid: {', '.join(self.RULES)}")
        self.name, self.rule, self.cfg = rule, rule, config

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_global(sim)
        self.round = 0
        self.pending = None
        sim.schedule(0.0, ROUND)

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
        m = min(max(1, round(self.cfg.fraction * int(alive.sum()))), n_eligible)
        u = counter_uniform(sim.cfg.seed, STREAM_SAMPLE, self.round, torch.arange(sim.D))
        u[~eligible] = math.inf
        devs = u.argsort()[:m].sort().values
        self.round += 1
        x0 = self.xg.unsqueeze(0).expand(m, -1)
        steps = None
        grad_fn = None
        if self.rule == "fednova":
            s = self.sizes[devs]
            steps = torch.ceil(sim.cfg.local_steps * s / self.sizes.mean()).long().clamp(min=1)
        if self.rule == "fedprox":
            mu, xg = self.cfg.mu, self.xg

            def grad_fn(x, g):
                return g + mu * (x - xg)
        x, loss, _ = sim.local_sgd(devs, x0, steps=steps, grad_fn=grad_fn)
        sim.t[devs] += 1
        sim.loss[devs] = loss
        if self.rule == "fednova":
            self.pending = rules.fednova(self.xg, x, self.sizes[devs], steps)
        else:
            self.pending = rules.fedavg(x, self.sizes[devs])
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
class AsyncServerConfig:
    buffer: int = 10
    server_lr: float = 1.0
    tau0: float = 10.0
    lag_tolerance: float = 5.0
    gamma: float = 0.5
    staleness_bound: float = 10.0

    def __post_init__(self):
        if self.buffer < 1 or self.server_lr <= 0 or not 0 < self.gamma <= 1:
            raise ValueError("AsyncServerConfig: buffer >= 1, server_lr > 0, gamma in (0, 1]")


class AsyncServer(_ServerBase):
    """fedbuff / fedsa / aso-fed / safa / sageflow / port (module docstring)."""

    RULES = ("fedbuff", "fedsa", "aso-fed", "safa", "sageflow", "port")

    def __init__(self, rule: str, config: AsyncServerConfig = AsyncServerConfig()):
        if rule not in self.RULES:
            raise ValueError(f"unknown asynchronous rule {rule!r}; valid: {', '.join(self.RULES)}")
        self.name, self.rule, self.cfg = rule, rule, config

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_global(sim)
        D = sim.D
        self.start = sim.x.clone()                                   # model each device started from
        self.start_version = torch.zeros(D, dtype=torch.long)
        self.buf: list[tuple[int, torch.Tensor, int]] = []
        self.participation = torch.zeros(D)
        self.staleness_sum = torch.zeros(D, dtype=torch.float64)
        if self.rule == "safa":
            self.cache = sim.x.clone()
            self.cache_version = torch.zeros(D, dtype=torch.long)
        sim.schedule_completions(torch.arange(D), torch.zeros(D, dtype=torch.float64))

    def _client_lr(self, sim, devs) -> float | torch.Tensor:
        if self.rule == "fedsa":
            return rules.fedsa_learning_rates(sim.cfg.lr, self.participation)[devs].to(torch.float32)
        if self.rule == "aso-fed":
            n = self.participation[devs].clamp(min=1).double()
            return (sim.cfg.lr * rules.asofed_step_scale(self.staleness_sum[devs] / n)).to(torch.float32)
        return sim.cfg.lr

    def on_complete(self, sim: AsyncSimulator, devs: torch.Tensor, times: torch.Tensor) -> None:
        x, loss, _ = sim.local_sgd(devs, sim.x[devs], lr=self._client_lr(sim, devs))
        sim.t[devs] += 1
        sim.loss[devs] = loss
        sim.x[devs] = x
        nbytes = sim.model_bytes()
        for b, d in enumerate(devs.tolist()):
            sim.send(d, SERVER, {"x": x[b].clone(), "version": int(self.start_version[d])}, nbytes,
                     at=float(times[b]))

    def on_arrive(self, sim: AsyncSimulator, msg: Message) -> None:
        if msg.dst != SERVER:                                        # a device receives the global model
            d = msg.dst
            if msg.payload["epoch"] != int(sim.epoch[d]):            # sent before the device failed: stale
                return
            sim.x[d] = msg.payload["x"]
            self.start[d] = msg.payload["x"]
            self.start_version[d] = msg.payload["version"]
            sim.schedule_completions(torch.tensor([d]), torch.tensor([sim.now], dtype=torch.float64))
            return
        d, xk, v = msg.src, msg.payload["x"], msg.payload["version"]
        tau = self.version - v
        self.participation[d] += 1
        self.staleness_sum[d] += tau
        self._apply(sim, d, xk, tau)
        if not sim.below_limit()[d]:                                  # the device has done its T updates
            return
        sim.send(SERVER, d, {"x": self.xg.clone(), "version": self.version, "epoch": int(sim.epoch[d])},
                 sim.model_bytes())

    def _apply(self, sim, d: int, xk: torch.Tensor, tau: int) -> None:
        r, c = self.rule, self.cfg
        if r == "aso-fed":
            self.xg = rules.asofed_update(self.xg, xk, float(self.sizes[d]), float(self.sizes.sum()))
            self.version += 1
            return
        if r == "safa":
            self.cache[d] = xk
            self.cache_version[d] = self.version
        self.buf.append((d, xk, tau))
        if len(self.buf) < c.buffer:
            return
        devs = torch.tensor([b[0] for b in self.buf])
        models = torch.stack([b[1] for b in self.buf])
        taus = torch.tensor([float(b[2]) for b in self.buf], dtype=torch.float64)
        s = self.sizes[devs]
        if r == "fedbuff":
            deltas = models - self.start[devs]
            self.xg = rules.fedbuff(self.xg, deltas, taus.to(models.dtype), c.server_lr, inverse_sqrt())
        elif r == "fedsa":
            fresh = taus <= c.tau0
            if fresh.any():
                self.xg = rules.fedsa_aggregate(models[fresh], s[fresh], taus[fresh], c.tau0)
        elif r == "safa":
            stale = (self.version - self.cache_version).double()
            self.xg = rules.safa_aggregate(self.xg, self.cache, self.sizes, stale, c.lag_tolerance)
        elif r == "sageflow":
            groups = taus.unique()
            avgs = torch.stack([rules.fedavg(models[taus == g], s[taus == g]) for g in groups])
            gw = torch.stack([s[taus == g].sum() / (1 + g) for g in groups])
            self.xg = (1 - c.gamma) * self.xg + c.gamma * rules.fedavg(avgs, gw)
        elif r == "port":
            deltas = models - self.start[devs]
            drift = self.xg.unsqueeze(0) - self.start[devs]
            cos = F.cosine_similarity(deltas.double(), drift.double(), dim=1)
            cos = torch.where(drift.norm(dim=1) > 0, cos, torch.zeros_like(cos)).clamp(-1, 1).cpu()
            w = rules.port_weights(s, taus, cos, bound=c.staleness_bound)
            self.xg = self.xg + (w.to(device=deltas.device, dtype=deltas.dtype) @ deltas)
        self.version += 1
        self.buf = []

    def on_round(self, sim, payload) -> None:
        raise RuntimeError(f"{self.name} schedules no rounds")

    def on_rejoin(self, sim: AsyncSimulator, dev: int) -> None:
        """A rejoined device below T updates asks the server for the current global model."""
        if not sim.below_limit()[dev]:
            return
        sim.send(SERVER, dev, {"x": self.xg.clone(), "version": self.version, "epoch": int(sim.epoch[dev])},
                 sim.model_bytes())
