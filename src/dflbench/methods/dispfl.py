"""DisPFL (Dai et al. 2022), AEDFL Table 1: decentralized sparse training of personalized models, in synchronous
rounds on the AsyncSimulator.

Setup: every device holds the same ERK mask (DisPFL's default, `different_initial=False`): parameter tensor l of
shape (n_1, ..., n_k) keeps int(d_l numel_l) random entries, d_l = eps (sum_i n_i / prod_i n_i) (`erk_densities`,
Evci et al. 2020's Erdos-Renyi-Kernel, over every trainable tensor as DisPFL's code does: a tensor whose d_l would
exceed 1 is dense and eps is re-solved), so that the kept entries are `density` of all parameters.
Round r, for every alive device i below T updates:
  1. neighbours: `neighbors` distinct devices drawn uniformly among the other alive devices (DisPFL's per-round
     random choice, `cs="random"`: a time-varying topology, not the exponential graph);
  2. aggregation: each entry is the mean over {i} and its neighbours of the models whose mask keeps it (models and
     masks as they were at the start of the round; the neighbours' models as they put them on the wire,
     `AsyncSimulator.outgoing`: noise from a harmful one), re-masked with i's mask (`rules.dispfl_aggregate`);
  3. `local_steps` masked SGD steps;
  4. mask update per tensor l: drop the k_l = ceil(a_r nnz_l) kept entries of smallest |w|, regrow the k_l entries
     of largest dense-gradient magnitude among the then-pruned ones (one minibatch at the trained model), with
     a_r = alpha / 2 (1 + cos(pi min(r, T_end) / T_end)), T_end = `anneal_rounds` (default T = max_updates; a
     run stopped by a virtual-time budget B alone anneals over it, r / T_end read as the virtual time now / B:
     our reading, since DisPFL anneals over the whole run and a budgeted run's round count is not known ahead);
     regrown entries start at zero unless they were just dropped.
Evaluation: DisPFL's models are personalized, so `personalized_accuracy` scores device i's model (only its own)
on the test distribution of its own labels: the class-conditional accuracies on the global test set weighted by
i's training label frequencies, i.e. the expected accuracy on test sets drawn with i's label distribution (exact,
no sampling noise). The run's `accuracy` stays the mean accuracy on the global test set, like every other method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.engines.async_rng import STREAM_MASK, STREAM_NEIGHBOR, counter_uniform
from dflbench.engines.async_sim import AsyncSimulator, Kind
from dflbench.engines.cost import average_macs, gradient_macs
from dflbench.errors import UserError
from dflbench.methods.gossip.base import RoundMethod
from dflbench.methods.registry import register_method
from dflbench.registry import option


@dataclass(frozen=True)
class DisPFLOptions:
    density: float = option(0.5, "fraction of all parameters kept by the ERK masks, in (0, 1]")
    alpha: float = option(0.5, "initial prune-and-regrow rate alpha (DisPFL's anneal factor), in [0, 1)")
    anneal_rounds: int | None = option(None, "T_end: rounds over which the rate anneals to 0 (cosine); default "
                                       "max_updates, or the run's virtual-time budget")
    neighbors: int = option(4, "peers each device draws at random every round, >= 1")

    def __post_init__(self):
        if not 0 < self.density <= 1 or not 0 <= self.alpha < 1 or self.neighbors < 1 or (
                self.anneal_rounds is not None and self.anneal_rounds < 1):
            raise UserError(f"DisPFL needs density in (0, 1], alpha in [0, 1), neighbors >= 1 and anneal_rounds "
                            f">= 1 (or unset), got {self}")


def erk_densities(shapes: list[torch.Size], density: float) -> list[float]:
    """ERK densities d_l = min(1, eps (sum_i n_i / prod_i n_i)) with eps solving sum_l d_l numel_l = density *
    sum_l numel_l (tensors whose raw density exceeds 1 are made dense, largest first, and eps re-solved)."""
    numel = [math.prod(s) for s in shapes]
    raw = [sum(s) / n for s, n in zip(shapes, numel)]
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        budget = density * sum(numel) - sum(numel[i] for i in dense)
        eps = budget / sum(raw[i] * numel[i] for i in free)
        top = max(free, key=lambda i: raw[i])
        if eps * raw[top] <= 1 or len(free) == 1:
            return [1.0 if i in dense else min(1.0, eps * raw[i]) for i in range(len(shapes))]
        dense.update(i for i in free if raw[i] == raw[top])


@register_method("dispfl", options=DisPFLOptions, kind="decentralized",
                 paper="Dai et al. 2022 (AEDFL Table 1); reports personalized_accuracy (own-label test distribution)")
class DisPFL(RoundMethod):
    name = "dispfl"

    def __init__(self, options: DisPFLOptions = DisPFLOptions()):
        super().__init__(options)

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_common(sim)
        o = self.options
        self.T_end = o.anneal_rounds if o.anneal_rounds is not None else sim.cfg.max_updates
        if self.T_end is None and sim.cfg.time_budget is None:
            raise UserError("dispfl: set anneal_rounds (the rounds of its cosine-annealed mask updates) when the run "
                            "has neither max_updates nor a time budget")
        spec = sim.net.spec
        self.bounds = torch.tensor([0, *spec.numels]).cumsum(0).tolist()
        self.densities = erk_densities([torch.Size(s) for s in spec.shapes], o.density)
        mask = torch.zeros(sim.P, dtype=torch.bool)
        for layer, (a, b) in enumerate(zip(self.bounds[:-1], self.bounds[1:])):
            u = counter_uniform(sim.cfg.seed, STREAM_MASK, layer, torch.arange(b - a))
            mask[a + u.argsort()[:int(self.densities[layer] * (b - a))]] = True
        self.masks = mask.to(sim.dev).unsqueeze(0).repeat(sim.D, 1)
        sim.x *= self.masks
        self.round = 0
        sim.schedule(0.0, Kind.ROUND)

    def neighbours(self, sim: AsyncSimulator, alive: torch.Tensor, devs: torch.Tensor) -> torch.Tensor:
        """`[B, K]` peers drawn uniformly without replacement among the other alive devices (-1: too few alive)."""
        key = counter_uniform(sim.cfg.seed, STREAM_NEIGHBOR, devs.unsqueeze(1), self.round, torch.arange(sim.D))
        ok = sim.alive.unsqueeze(0) & (torch.arange(sim.D).unsqueeze(0) != devs.unsqueeze(1))
        key = torch.where(ok, key, -1.0)
        K = min(self.options.neighbors, sim.D - 1)
        val, idx = key.topk(K, dim=1)
        return torch.where(val >= 0, idx, -1)

    def round_step(self, sim: AsyncSimulator, alive: torch.Tensor, devs: torch.Tensor) -> torch.Tensor:
        """One DisPFL round of `devs`; their comm times plus the virtual time of the work beyond local SGD."""
        nb = self.neighbours(sim, alive, devs)
        ok = nb >= 0
        idx = torch.cat([devs.unsqueeze(1), torch.where(ok, nb, devs.unsqueeze(1))], 1)   # missing -> self
        valid = torch.cat([torch.ones_like(ok[:, :1]), ok], 1).unsqueeze(2).to(sim.dev)     # padding slots: no mask
        models = sim.outgoing(torch.arange(sim.D), sim.x, self.masks)[idx]
        models[:, 0] = sim.x[devs]                                                          # its own, honest
        agg = rules.dispfl_aggregate(models, self.masks[idx] & valid)
        x, loss, _ = sim.local_sgd(devs, agg, masks=self.masks[devs])
        xb, yb = sim.data.batch(devs.to(sim.dev), sim.t[devs].to(sim.dev), -1, sim.cfg.batch_size, sim.cfg.seed)
        _, g = sim.net.loss_and_grad(x, xb, yb)                     # dense gradient: it scores the regrowth
        sim.account(devs, updates=1, loss=loss)
        new_masks = self.prune_regrow(x, g, self.masks[devs], self.rate(sim))
        sim.x[devs] = x * new_masks
        self.masks[devs] = new_masks
        nbytes = sim.model_bytes(self.masks[0])
        sent = int(ok.sum())
        sim.account(messages=sent, nbytes=nbytes)
        sim.cost_fraction[devs] = (sim.model_mflops(new_masks) / self.dense_mflops).double().cpu()
        self.round += 1
        work = (gradient_macs(sim.dense_mfp, sim.cfg.batch_size)                   # the dense regrowth gradient
                + average_macs(ok.sum(1).double() + 1, sim.P, masked=True))         # the masked aggregation
        return (2 * sim.profiles.latency[devs] + nbytes * ok.sum(1).double() / sim.profiles.bandwidth[devs]
                + sim.work_time(devs, work))

    def rate(self, sim: AsyncSimulator) -> float:
        """a_r = alpha / 2 (1 + cos(pi min(r, T_end) / T_end)); over the time budget B when T_end is unset:
        r / T_end = now / B."""
        done = (min(self.round, self.T_end) / self.T_end if self.T_end is not None
                else min(sim.now, sim.cfg.time_budget) / sim.cfg.time_budget)
        return self.options.alpha / 2 * (1 + math.cos(math.pi * done))

    def prune_regrow(self, x: torch.Tensor, g: torch.Tensor, masks: torch.Tensor, rate: float) -> torch.Tensor:
        """Per tensor: drop the ceil(a_r nnz) kept entries of smallest |w| (a_r = `rate`), regrow as many pruned
        entries of largest |g| (DisPFL's fire_mask / regrow_mask); every device keeps its per-tensor counts."""
        new = masks.clone()
        for a, b in zip(self.bounds[:-1], self.bounds[1:]):
            m = masks[:, a:b]
            k = math.ceil(rate * int(m[0].sum()))
            if k == 0:
                continue
            drop = torch.where(m, x[:, a:b].abs(), torch.inf).topk(k, dim=1, largest=False).indices
            fired = m.clone().scatter_(1, drop, False)
            grow = torch.where(fired, -torch.inf, g[:, a:b].abs()).topk(k, dim=1).indices
            new[:, a:b] = fired.scatter_(1, grow, True)
        return new

    def personalized_accuracy(self, sim: AsyncSimulator) -> torch.Tensor:
        """`[D]`: device i's model on the test distribution of its own labels (module docstring)."""
        data = sim.data
        y_test = data.y_test
        C = int(max(int(data.y.max()), int(y_test.max()))) + 1
        labels = torch.stack([torch.bincount(data.y[data.parts[d, :int(data.sizes[d])]].cpu(), minlength=C)
                              for d in range(sim.D)]).double()
        acc = torch.zeros(sim.D, C, dtype=torch.float64)
        present = torch.zeros(C, dtype=torch.bool)
        for c in range(C):
            pick = y_test == c
            if bool(pick.any()):
                present[c] = True
                acc[:, c] = sim.net.accuracy_and_loss(sim.x, data.prepare(data.x_test[pick]), y_test[pick])[0].cpu()
        p = labels * present
        return (p * acc).sum(1) / p.sum(1).clamp(min=1e-12)

    def mflops(self, sim: AsyncSimulator) -> float:
        return float(sim.model_mflops(self.masks).mean())

    def eval_masks(self, sim: AsyncSimulator) -> torch.Tensor:
        """The devices' masks for the evaluation protocol (`engines.evaluation`)."""
        return self.masks
