"""AEDFL (Liu et al. 2024, Sec. 3-5) as an AsyncSimulator method, with its ablations.

Per local update of device i (Algorithm 1), for all devices completing in one time slot at once:
  1. local SGD, eq. 4.5 (pruned entries held at zero);
  2. model selection (Sec. 4.1): an LSTM policy per device picks cached neighbor models (REINFORCE, eq. 4.4),
     otherwise every valid cache slot is used;
  3. weights (Sec. 4.2): dynamic staleness/loss-aware weights, eq. 4.6-4.8 (`dflbench.aggregation.DynamicWeights`),
     otherwise the static uniform weights of AEDFL-0;
  4. heterogeneous aggregation, eq. 4.11 (`masked_average`);
  5. adaptive pruning at scheduled updates (Sec. 5), eq. 5.14-5.16;
  6. the model goes to ONE random out-neighbor of the exponential graph (eq. 3.2); its arrival replaces the
     receiver's cache slot for the sender atomically. Sending overlaps the next local update.

Ablations (Sec. 6.1): aedfl-0 (none of the modules), aedfl-rl, aedfl-dwu, aedfl-p, aedfl-rl-dwu, aedfl (all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dflbench.aggregation import DynamicWeights, DynamicWeightsConfig, masked_average, staleness
from dflbench.engines.async_sim import AsyncSimulator, Message

from dflbench.methods.aedfl.selection import PolicySelector, SelectorConfig
from dflbench.methods.aedfl.pruning import AdaptivePruner, PruningConfig


@dataclass(frozen=True)
class AEDFLConfig:
    rl: bool = True
    dwu: bool = True
    prune: bool = True
    weights: DynamicWeightsConfig = DynamicWeightsConfig()
    policy: SelectorConfig = SelectorConfig()
    pruning: PruningConfig = PruningConfig()


class AEDFL:
    """The AEDFL method object for `AsyncSimulator` (see the module docstring)."""

    def __init__(self, name: str = "aedfl", config: AEDFLConfig = AEDFLConfig()):
        self.name, self.cfg = name, config

    # ---- setup -------------------------------------------------------------------------------------------
    def setup(self, sim: AsyncSimulator) -> None:
        D, P = sim.D, sim.P
        adj = sim.topology.adjacency.clone()
        adj.fill_diagonal_(False)
        deg = adj.sum(1)
        self.K = int(deg.max())
        # in_nbrs[i, k]: the k-th in-neighbor of i; slot_of[i, j]: cache slot of j on i (-1 if j does not send to i)
        self.slot_of = torch.full((D, D), -1, dtype=torch.long)
        rank = adj.long().cumsum(1) - 1
        self.slot_of[adj] = rank[adj]
        self.cache_x = torch.zeros(D, self.K, P, device=sim.dev)
        self.cache_mask = torch.ones(D, self.K, P, dtype=torch.bool, device=sim.dev)
        self.cache_stamp = torch.zeros(D, self.K, dtype=torch.long)
        self.cache_loss = torch.ones(D, self.K, dtype=torch.float64)
        self.cache_size = torch.zeros(D, self.K, dtype=torch.float64)
        self.cache_valid = torch.zeros(D, self.K, dtype=torch.bool)
        self.cache_aggregated = torch.zeros(D, self.K, dtype=torch.bool)
        self.masks = torch.ones(D, P, dtype=torch.bool, device=sim.dev)
        self.sizes = sim.data.sizes.double().cpu()
        self.dwu = DynamicWeights(D, self.K + 1, self.cfg.weights, device=sim.dev,
                                  dtype=torch.float64) if self.cfg.dwu else None
        self.policy = PolicySelector(D, self.K, self.cfg.policy, seed=sim.cfg.seed) if self.cfg.rl else None
        self.pruner = AdaptivePruner(sim, self.cfg.pruning) if self.cfg.prune else None
        self.dense_mflops = sim.model_mflops()
        sim.schedule_completions(torch.arange(D), torch.zeros(D, dtype=torch.float64))

    # ---- one local update for a batch of devices ------------------------------------------------------
    def on_complete(self, sim: AsyncSimulator, devs: torch.Tensor, times: torch.Tensor) -> None:
        masks = self.masks[devs] if self.pruner is not None else None
        x_half, loss, g = sim.local_sgd(devs, sim.x[devs], masks=masks)
        sim.t[devs] += 1
        sim.loss[devs] = loss
        t = sim.t[devs]

        valid = self.cache_valid[devs]
        stale = staleness(t, torch.cat([t.unsqueeze(1), self.cache_stamp[devs]], 1))
        slot_loss = torch.cat([loss.unsqueeze(1), self.cache_loss[devs]], 1)
        samples = torch.cat([self.sizes[devs].unsqueeze(1), self.cache_size[devs]], 1) * \
            torch.cat([torch.ones(len(devs), 1, dtype=torch.bool), valid], 1)
        if self.policy is not None:
            chosen = self.policy.select(devs, t, self.cache_aggregated[devs], stale[:, 1:], slot_loss[:, 1:], valid,
                                        reward=loss)
        else:
            chosen = valid
        active = torch.cat([torch.ones(len(devs), 1, dtype=torch.bool), chosen], 1)
        everyone = len(devs) == sim.D and bool((devs == torch.arange(sim.D)).all())
        cache = self.cache_x if everyone else self.cache_x[devs]                  # no gather when all devices
        if masks is not None or self.dwu is not None:
            models = torch.cat([x_half.unsqueeze(1), cache], 1)                   # [B, K+1, P]
        slot_masks = torch.cat([masks.unsqueeze(1), self.cache_mask[devs]], 1) if masks is not None else None
        dev = x_half.device
        if self.dwu is not None:
            w = self.dwu.step(models.double(), g.double(), samples.to(dev), stale.to(dev), slot_loss.to(dev),
                              masks=slot_masks, active=active.to(dev), devices=devs)
        else:
            w = active.double() / active.sum(1, keepdim=True)
        w = w.to(device=dev, dtype=x_half.dtype)
        if masks is not None:
            x_new = masked_average(models, w, slot_masks)                            # eq. 4.11
        else:                                                                       # eq. 4.9, without the stack
            x_new = w[:, :1] * x_half + torch.bmm(w[:, None, 1:], cache).squeeze(1)
        self.cache_aggregated[devs] |= chosen

        if self.pruner is not None:
            due = self.pruner.due(t)
            if due.any():
                pd = devs[due]
                new_masks, cost = self.pruner.prune(sim, pd, x_new[due], self.masks[pd], w[due].cpu(), active[due],
                                                    self.pruner.neighbor_rates(pd))
                self.masks[pd] = new_masks
                x_new[due] = x_new[due] * new_masks
                sim.cost_fraction[pd] = cost
        sim.x[devs] = x_new

        dst = sim.random_out_neighbor(devs)           # x_new is never written again: its rows are the snapshots sent
        for b, (d, j) in enumerate(zip(devs.tolist(), dst.tolist())):
            if j < 0:
                continue
            m = self.masks[d] if self.pruner is not None else None
            sim.send(d, j, {"x": x_new[b], "mask": None if m is None else m.clone(), "loss": float(loss[b]),
                            "size": float(self.sizes[d]), "t": int(t[b]),
                            "rate": None if self.pruner is None else float(self.pruner.rate[d])},
                     sim.model_bytes(m), at=float(times[b]))
        sim.schedule_completions(devs, times)

    # ---- messages, faults, metrics ---------------------------------------------------------------------
    def on_arrive(self, sim: AsyncSimulator, msg: Message) -> None:
        """Atomic replacement of cache slot (dst, src): model, mask, staleness stamp, loss, sample count."""
        i, k = msg.dst, int(self.slot_of[msg.dst, msg.src])
        p = msg.payload
        self.cache_x[i, k] = p["x"]
        if p["mask"] is not None:
            self.cache_mask[i, k] = p["mask"]
        self.cache_stamp[i, k] = sim.t[i]
        self.cache_loss[i, k] = p["loss"]
        self.cache_size[i, k] = p["size"]
        self.cache_valid[i, k] = True
        self.cache_aggregated[i, k] = False
        if self.pruner is not None and p["rate"] is not None:
            self.pruner.neighbor_rate[i, k] = p["rate"]

    def on_round(self, sim, payload) -> None:
        raise RuntimeError("AEDFL schedules no rounds")

    def on_rejoin(self, sim: AsyncSimulator, dev: int) -> None:
        sim.schedule_completions(torch.tensor([dev]), torch.tensor([sim.now], dtype=torch.float64))

    def eval_models(self, sim: AsyncSimulator) -> torch.Tensor:
        return sim.x

    def mflops(self, sim: AsyncSimulator) -> float:
        if self.pruner is None:
            return self.dense_mflops
        return float(self.pruner.mflops(sim, self.masks).mean())
