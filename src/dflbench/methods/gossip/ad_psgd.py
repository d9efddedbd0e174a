"""AD-PSGD (Lian et al. 2018), AEDFL Table 1: asynchronous gossip. A device applies its gradient (computed at the
model it read when its update started, as AD-PSGD's stale reads) and atomically averages with one random
out-neighbor, x_i = x_j = (x_i + x_j) / 2 (`rules.adpsgd_pairwise`). Averagings of one time slot are applied in
event order, each atomic (the pairs of a slot need not be disjoint). A partner that had done its T updates before
the slot is out: no averaging that update."""

from __future__ import annotations

import torch

from dflbench.aggregation import rules
from dflbench.engines.async_sim import AsyncSimulator
from dflbench.methods.gossip.base import DecentralizedMethod
from dflbench.methods.registry import register_method
from dflbench.registry import NoOptions

PAIR = torch.tensor([[0, 1]])


@register_method("ad-psgd", options=NoOptions, kind="decentralized", paper="Lian et al. 2018 (AEDFL Table 1)")
class ADPSGD(DecentralizedMethod):
    name = "ad-psgd"

    def __init__(self, options: NoOptions = NoOptions()):
        super().__init__(options)

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
            pair = torch.tensor([i, j])
            sim.x[pair] = rules.adpsgd_pairwise(sim.x[pair], PAIR)     # one atomic pair, in event order
            sim.bytes_sent += 2 * nbytes
            sim.messages += 2
            start[b] += float(sim.profiles.comm_time(torch.tensor(i), torch.tensor(j), torch.tensor(nbytes)))
        sim.schedule_completions(devs, start)

    def on_rejoin(self, sim: AsyncSimulator, dev: int) -> None:
        sim.schedule_completions(torch.tensor([dev]), torch.tensor([sim.now], dtype=torch.float64))
