"""Decentralized baselines of AEDFL Table 1 on the AsyncSimulator (exponential graph, no server).

  ad-psgd (Lian et al. 2018)  asynchronous: a device applies its gradient (computed at the model it read when its
                              update started, as AD-PSGD's stale reads) and atomically averages with one random
                              out-neighbor, x_i = x_j = (x_i + x_j) / 2. Averagings of one time slot are applied
                              in event order, each atomic (the pairs of a slot need not be disjoint). A partner
                              that had done its T updates before the slot is out: no averaging that update.
  d-psgd  (Lian et al. 2017)  synchronous rounds: every alive device takes its local steps, then
                              x <- W x with W the uniform row-stochastic weights over in-neighbors and self,
                              restricted to the alive devices still below T updates; a round lasts as long as
                              the slowest device.
  dispfl  (Dai et al. 2022)   synchronous decentralized sparse training: fixed-density personalized masks (random
                              at density `density`), aggregation of the in-neighbors' sparse models by mask-count
                              averaging (`rules.dispfl_aggregate`), masked local steps, then prune-and-regrow:
                              drop the rate_t smallest-magnitude kept weights and regrow as many pruned entries
                              with the largest magnitude of the dense minibatch gradient (regrown at zero),
                              rate_t = alpha/2 (1 + cos(pi t / T_end)).
                              Simplification: unstructured masks of one density for every conv/linear weight
                              (no ERK); biases stay dense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.engines.async_rng import STREAM_MASK, counter_uniform
from dflbench.engines.async_sim import ROUND, AsyncSimulator
from dflbench.topology import uniform



class _Decentralized:
    def _init_common(self, sim: AsyncSimulator) -> None:
        self.sizes = sim.data.sizes.double().cpu()
        self.dense_mflops = sim.model_mflops()

    def eval_models(self, sim: AsyncSimulator) -> torch.Tensor:
        return sim.x

    def mflops(self, sim: AsyncSimulator) -> float:
        return self.dense_mflops

    def on_round(self, sim, payload) -> None:
        raise RuntimeError(f"{self.name} schedules no rounds")

    def on_arrive(self, sim, msg) -> None:
        raise RuntimeError(f"{self.name} sends no messages through the event queue")


class ADPSGD(_Decentralized):
    name = "ad-psgd"

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_common(sim)
        sim.schedule_completions(torch.arange(sim.D), torch.zeros(sim.D, dtype=torch.float64))

    def on_complete(self, sim: AsyncSimulator, devs: torch.Tensor, times: torch.Tensor) -> None:
        open_ = sim.alive & sim.below_limit()                           # partners: alive, fewer than T updates
        read = sim.x[devs]
        x, loss, _ = sim.local_sgd(devs, read)
        sim.x[devs] += x - read                                        # gradient applied to the current model
        sim.t[devs] += 1
        sim.loss[devs] = loss
        partner = sim.random_out_neighbor(devs)
        nbytes = sim.model_bytes()
        start = times.clone()
        for b, (i, j) in enumerate(zip(devs.tolist(), partner.tolist())):
            if j < 0 or not open_[j]:
                continue
            _pair_average(sim.x, i, j)
            sim.bytes_sent += 2 * nbytes
            sim.messages += 2
            start[b] += float(sim.profiles.comm_time(torch.tensor(i), torch.tensor(j), torch.tensor(nbytes)))
        sim.schedule_completions(devs, start)

    def on_rejoin(self, sim: AsyncSimulator, dev: int) -> None:
        sim.schedule_completions(torch.tensor([dev]), torch.tensor([sim.now], dtype=torch.float64))


class _Rounds(_Decentralized):
    """Synchronous rounds: every alive device with fewer than T updates takes part (`round_step`, which returns the
    devices' comm times; finished devices neither train nor mix); the next round starts when the slowest finishes,
    or after a heartbeat while no device can take part."""

    def on_round(self, sim: AsyncSimulator, payload) -> None:
        alive = sim.alive & sim.below_limit()
        devs = alive.nonzero().squeeze(1)
        if len(devs) == 0:
            sim.schedule(sim.now + sim.cfg.heartbeat_interval, ROUND)
            return
        comm = self.round_step(sim, alive, devs)
        sim.schedule(sim.now + float((sim.compute_time(devs) + comm).max()), ROUND)

    def on_complete(self, sim, devs, times) -> None:
        raise RuntimeError(f"{self.name} runs in rounds")

    def on_rejoin(self, sim, dev) -> None:
        """A rejoined device takes part from the next round on."""


def _pair_average(x: torch.Tensor, i: int, j: int) -> None:
    """In-place atomic x_i = x_j = (x_i + x_j) / 2 (AD-PSGD's gossip step for one pair)."""
    m = 0.5 * (x[i] + x[j])
    x[i] = m
    x[j] = m


class DPSGD(_Rounds):
    name = "d-psgd"

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_common(sim)
        self.W = uniform(sim.topology).to(sim.x.dtype).to(sim.dev)
        self.out_deg = sim.out_adj.sum(1)
        sim.schedule(0.0, ROUND)

    def round_step(self, sim: AsyncSimulator, alive: torch.Tensor, devs: torch.Tensor) -> torch.Tensor:
        x, loss, _ = sim.local_sgd(devs, sim.x[devs])
        sim.x[devs] = x
        sim.t[devs] += 1
        sim.loss[devs] = loss
        W = self.W * alive.to(self.W.dtype).to(sim.dev).unsqueeze(0)
        W = W / W.sum(1, keepdim=True)
        sim.x[devs] = (W @ sim.x)[devs]
        nbytes = sim.model_bytes()
        sim.bytes_sent += int(self.out_deg[devs].sum()) * nbytes
        sim.messages += int(self.out_deg[devs].sum())
        return sim.profiles.latency[devs] * 2 + nbytes * self.out_deg[devs].double() / sim.profiles.bandwidth[devs]


@dataclass(frozen=True)
class DisPFLConfig:
    density: float = 0.5
    alpha: float = 0.2
    anneal_rounds: int = 500

    def __post_init__(self):
        if not 0 < self.density <= 1 or not 0 <= self.alpha < 1 or self.anneal_rounds < 1:
            raise ValueError("DisPFLConfig: density in (0, 1], alpha in [0, 1), anneal_rounds >= 1")


class DisPFL(_Rounds):
    name = "dispfl"

    def __init__(self, config: DisPFLConfig = DisPFLConfig()):
        self.cfg = config

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_common(sim)
        u = counter_uniform(sim.cfg.seed, STREAM_MASK, torch.arange(sim.D).unsqueeze(1), -1,
                            torch.arange(sim.P).unsqueeze(0))
        weight = torch.cat([torch.full((n,), len(shape) >= 2) for n, shape in zip(sim.net.spec.numels,
                                                                                 sim.net.spec.shapes)])
        self.prunable = weight.to(sim.dev)                            # conv/linear weights; biases stay dense
        self.masks = ((u < self.cfg.density).to(sim.dev) | ~self.prunable)
        sim.x *= self.masks
        adj = sim.topology.adjacency.clone()
        adj.fill_diagonal_(False)
        self.K = int(adj.sum(1).max())
        nbrs = torch.full((sim.D, self.K), -1, dtype=torch.long)
        for i in range(sim.D):                                          # graph structure, built once
            js = adj[i].nonzero().squeeze(1)
            nbrs[i, :len(js)] = js
        self.nbrs = nbrs
        self.round = 0
        sim.schedule(0.0, ROUND)

    def round_step(self, sim: AsyncSimulator, alive: torch.Tensor, devs: torch.Tensor) -> torch.Tensor:
        nb = self.nbrs[devs]
        ok = (nb >= 0) & alive[nb.clamp(min=0)]
        idx = torch.cat([devs.unsqueeze(1), torch.where(ok, nb, devs.unsqueeze(1))], 1)   # missing -> self
        models = sim.x[idx]                                                                  # [B, K+1, P]
        masks = self.masks[idx]
        agg = rules.dispfl_aggregate(models, masks)
        x, loss, _ = sim.local_sgd(devs, agg, masks=self.masks[devs])
        xb, yb = sim.data.batch(devs.to(sim.dev), sim.t[devs].to(sim.dev), -1, sim.cfg.batch_size, sim.cfg.seed)
        _, g = sim.net.loss_and_grad(x, xb, yb)                     # dense gradient: it scores the regrowth
        sim.t[devs] += 1
        sim.loss[devs] = loss
        new_masks = self._prune_regrow(x, g, self.masks[devs])
        sim.x[devs] = x * new_masks
        self.masks[devs] = new_masks
        nbytes = sim.model_bytes(self.masks[0])
        sent = int(ok.sum())
        sim.bytes_sent += sent * nbytes
        sim.messages += sent
        sim.cost_fraction[devs] = self.cfg.density
        self.round += 1
        return 2 * sim.profiles.latency[devs] + nbytes * ok.sum(1).double() / sim.profiles.bandwidth[devs]

    def _prune_regrow(self, x: torch.Tensor, g: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Drop the k smallest |w| kept weights, regrow the k pruned weights of largest |g| (same density)."""
        rate = self.cfg.alpha / 2 * (1 + math.cos(math.pi * min(self.round, self.cfg.anneal_rounds)
                                                   / self.cfg.anneal_rounds))
        k = int(rate * int((masks[0] & self.prunable).sum()))
        if k == 0:
            return masks
        drop_score = torch.where(masks & self.prunable, x.abs(), torch.full_like(x, math.inf))
        drop = drop_score.topk(k, dim=1, largest=False).indices
        grow_score = torch.where(masks | ~self.prunable, torch.full_like(g, -math.inf), g.abs())
        grow = grow_score.topk(k, dim=1).indices
        new = masks.clone()
        new.scatter_(1, drop, False)
        new.scatter_(1, grow, True)
        return new

    def mflops(self, sim: AsyncSimulator) -> float:
        return float(sim.model_mflops(self.masks).mean())
