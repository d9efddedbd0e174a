"""D-PSGD (Lian et al. 2017), the synchronous counterpart of AD-PSGD (not in AEDFL Table 1): in each round every
alive device takes its local steps, then x_i <- W_ii x_i + sum_{j != i} W_ij s_j with W the uniform row-stochastic
weights over in-neighbors and self (`dflbench.topology.uniform`), restricted to the alive devices still below T
updates and renormalised, and s_j the model j puts on the wire (`AsyncSimulator.outgoing`: x_j, or noise from a
harmful device, whose own row keeps its honest x_j); a round lasts as long as the slowest device."""

from __future__ import annotations

import torch

from dflbench.engines.async_sim import AsyncSimulator, Kind
from dflbench.engines.cost import average_macs
from dflbench.methods.gossip.base import RoundMethod
from dflbench.methods.registry import register_method
from dflbench.registry import NoOptions
from dflbench.topology import uniform


@register_method("d-psgd", options=NoOptions, kind="decentralized",
                 paper="Lian et al. 2017 (synchronous AD-PSGD; not in AEDFL Table 1)")
class GossipDPSGD(RoundMethod):
    name = "d-psgd"

    def __init__(self, options: NoOptions = NoOptions()):
        super().__init__(options)

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_common(sim)
        self.W = uniform(sim.topology).to(sim.x.dtype).to(sim.dev)
        self.out_deg = sim.out_adj.sum(1)
        sim.schedule(0.0, Kind.ROUND)

    def round_step(self, sim: AsyncSimulator, alive: torch.Tensor, devs: torch.Tensor) -> torch.Tensor:
        x, loss, _ = sim.local_sgd(devs, sim.x[devs])
        sim.x[devs] = x
        sim.account(devs, updates=1, loss=loss)
        W = self.W * alive.to(self.W.dtype).to(sim.dev).unsqueeze(0)
        W = W / W.sum(1, keepdim=True)
        sent = sim.outgoing(torch.arange(sim.D), sim.x)
        mixed = W @ sent
        if sent is not sim.x:                                             # a device mixes its own row, not its noise
            mixed += W.diagonal().unsqueeze(1) * (sim.x - sent)
        sim.x[devs] = mixed[devs]
        nbytes = sim.model_bytes()
        sim.account(messages=int(self.out_deg[devs].sum()), nbytes=nbytes)
        mixing = sim.work_time(devs, average_macs((W[devs] > 0).sum(1).double(), sim.P))   # engines.cost
        return (sim.profiles.latency[devs] * 2 + nbytes * self.out_deg[devs].double() / sim.profiles.bandwidth[devs]
                + mixing)
