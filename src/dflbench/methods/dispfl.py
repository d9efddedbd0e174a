"""DisPFL (Dai et al. 2022), AEDFL Table 1: synchronous decentralized sparse training on the AsyncSimulator.

Fixed-density personalized masks (random at density `density`), aggregation of the in-neighbors' sparse models by
mask-count averaging (`rules.dispfl_aggregate`), masked local steps, then prune-and-regrow: drop the rate_t
smallest-magnitude kept weights and regrow as many pruned entries with the largest magnitude of the dense minibatch
gradient (regrown at zero), rate_t = alpha/2 (1 + cos(pi min(t, T_end) / T_end)), t the round, T_end =
`anneal_rounds`.
Simplification (stated): unstructured masks of one density for every conv/linear weight (no ERK); biases stay dense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.engines.async_rng import STREAM_MASK, counter_uniform
from dflbench.engines.async_sim import ROUND, AsyncSimulator
from dflbench.errors import UserError
from dflbench.methods.gossip.base import RoundMethod
from dflbench.methods.registry import register_method
from dflbench.registry import option


@dataclass(frozen=True)
class DisPFLOptions:
    density: float = option(0.5, "fraction of each conv/linear weight kept by the personalized masks, in (0, 1]")
    alpha: float = option(0.2, "initial prune-and-regrow rate alpha, in [0, 1)")
    anneal_rounds: int = option(500, "T_end: rounds over which the rate anneals to 0 (cosine), >= 1")

    def __post_init__(self):
        if not 0 < self.density <= 1 or not 0 <= self.alpha < 1 or self.anneal_rounds < 1:
            raise UserError(f"DisPFL needs density in (0, 1], alpha in [0, 1) and anneal_rounds >= 1, got "
                            f"{self.density}, {self.alpha}, {self.anneal_rounds}")


@register_method("dispfl", options=DisPFLOptions, kind="decentralized", paper="Dai et al. 2022 (AEDFL Table 1)")
class DisPFL(RoundMethod):
    name = "dispfl"

    def __init__(self, options: DisPFLOptions = DisPFLOptions()):
        super().__init__(options)

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_common(sim)
        u = counter_uniform(sim.cfg.seed, STREAM_MASK, torch.arange(sim.D).unsqueeze(1), -1,
                            torch.arange(sim.P).unsqueeze(0))
        weight = torch.cat([torch.full((n,), len(shape) >= 2) for n, shape in zip(sim.net.spec.numels,
                                                                                 sim.net.spec.shapes)])
        self.prunable = weight.to(sim.dev)                            # conv/linear weights; biases stay dense
        self.masks = ((u < self.options.density).to(sim.dev) | ~self.prunable)
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
        sim.cost_fraction[devs] = self.options.density
        self.round += 1
        return 2 * sim.profiles.latency[devs] + nbytes * ok.sum(1).double() / sim.profiles.bandwidth[devs]

    def _prune_regrow(self, x: torch.Tensor, g: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Drop the k smallest |w| kept weights, regrow the k pruned weights of largest |g| (same density)."""
        o = self.options
        rate = o.alpha / 2 * (1 + math.cos(math.pi * min(self.round, o.anneal_rounds) / o.anneal_rounds))
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
