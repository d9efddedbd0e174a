"""AD-PSGD (Lian et al. 2018, Algorithm 1), AEDFL Table 1: asynchronous gossip with stale reads and atomic pairwise
averaging that takes a transfer.

Device i, one local update:
  1. read x^_i (its model when the update starts) and compute the gradient at x^_i: `local_sgd` from the read,
     delta_i = local_sgd(x^_i) - x^_i = -lr g(x^_i) (with local_steps > 1, that many steps from the read);
  2. while it computes, x_i may change: a neighbour that averages with i replaces x_i (the stale read of step 1);
  3. at completion it picks a random out-neighbour j and the two exchange models (one `comm_time`, both directions
     at once); when the exchange arrives, atomically x_i, x_j <- (x_i + x_j) / 2 with the models of that moment
     (`rules.adpsgd_pairwise`: each side averages its model with the one the other put on the wire,
     `AsyncSimulator.outgoing`, so a harmful device sends noise and keeps its own honest average), then
     x_i <- x_i + delta_i, and i's next update starts (reading its new model).
A partner that had done its T updates (or is deemed dead) at step 3 is out: x_i <- x_i + delta_i at once, no
transfer. A partner that fails during the exchange is out as well; a device that fails during it drops the update
(its rejoin starts a new one from its model)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dflbench.aggregation import rules
from dflbench.engines.async_sim import AsyncSimulator, Message
from dflbench.engines.cost import average_macs
from dflbench.methods.gossip.base import DecentralizedMethod
from dflbench.methods.registry import register_method
from dflbench.registry import NoOptions


@dataclass(frozen=True)
class Exchange:
    """The pairwise exchange's message as the simulator carries it (i's side: the transfer's arrival at i): i's
    update `delta` and i's failure epoch when it left (an exchange i failed during is dropped)."""

    delta: torch.Tensor
    epoch: int


@register_method("ad-psgd", options=NoOptions, kind="decentralized", paper="Lian et al. 2018 (AEDFL Table 1)")
class ADPSGD(DecentralizedMethod):
    name = "ad-psgd"

    def __init__(self, options: NoOptions = NoOptions()):
        super().__init__(options)

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_common(sim)
        self.read = sim.x.clone()                                        # x^_i: read when i's update started
        sim.schedule_completions(torch.arange(sim.D), torch.zeros(sim.D, dtype=torch.float64))

    def on_complete(self, sim: AsyncSimulator, devs: torch.Tensor, times: torch.Tensor) -> None:
        open_ = sim.alive & sim.below_limit()                            # partners: alive, fewer than T updates
        x, loss, _ = sim.local_sgd(devs, self.read[devs])                # the gradient at the stale read
        delta = x - self.read[devs]
        sim.account(devs, loss=loss)
        partner = sim.random_out_neighbor(devs)
        nbytes = sim.model_bytes()
        for b, (i, j) in enumerate(zip(devs.tolist(), partner.tolist())):
            if j < 0 or not open_[j]:
                self._apply(sim, i, delta[b], float(times[b]))
                continue
            sim.send(j, i, Exchange(delta[b], int(sim.epoch[i])), nbytes, at=float(times[b]))
            sim.account(messages=1, nbytes=nbytes)                       # and x_i to j, over the same time

    def on_arrive(self, sim: AsyncSimulator, msg: Message) -> None:
        i, j, exchange = msg.dst, msg.src, msg.payload
        if exchange.epoch != int(sim.epoch[i]):                          # i failed during the exchange
            return
        at = sim.now
        if sim.alive[j]:
            pair = torch.tensor([i, j])
            x = sim.x[pair]
            both = torch.stack([x, sim.outgoing(pair, x).flip(0)], 1).flatten(0, 1)   # x_i, sent_j, x_j, sent_i
            sim.x[pair] = rules.adpsgd_pairwise(both, torch.tensor([[0, 1], [2, 3]]))[0::2]
            at += float(sim.work_time(torch.tensor([i]), average_macs(2, sim.P))[0])   # the average: engines.cost
        self._apply(sim, i, exchange.delta, at)

    def _apply(self, sim: AsyncSimulator, i: int, delta: torch.Tensor, at: float) -> None:
        """x_i <- x_i + delta_i; i's update counts and its next one starts at `at`, reading its model."""
        sim.x[i] += delta
        sim.account(i, updates=1)
        self.read[i] = sim.x[i]
        sim.schedule_completions(torch.tensor([i]), torch.tensor([at], dtype=torch.float64))

    def on_rejoin(self, sim: AsyncSimulator, dev: int) -> None:
        self.read[dev] = sim.x[dev]
        sim.schedule_completions(torch.tensor([dev]), torch.tensor([sim.now], dtype=torch.float64))
