"""AEDFL (Liu et al. 2024, Sec. 3-5) as an AsyncSimulator method, with its ablations.

The device update is `AEDFLStep` (`step.py`, shared with the torch.distributed runtime). Here the simulator hosts
it: for the devices completing in one time slot, `on_complete` runs the step on them as one batch, then sends each
device's message to ONE random out-neighbor of the exponential graph (eq. 3.2), starting at its completion time
(sending overlaps the next local update), and schedules their next completions. `on_arrive` hands an arriving
message to the step, which replaces the receiver's cache slot for the sender atomically, stamped with the
receiver's update count.

Ablations (Sec. 6.1): aedfl-0 (none of the modules), aedfl-rl, aedfl-dwu, aedfl-p, aedfl-rl-dwu, aedfl (all).
"""

from __future__ import annotations

import torch

from dflbench.aggregation import in_neighbor_slots
from dflbench.engines.async_sim import AsyncSimulator, Message
from dflbench.methods.aedfl.step import AEDFLConfig, AEDFLStep

__all__ = ["AEDFL", "AEDFLConfig"]


class AEDFL:
    """The AEDFL method object for `AsyncSimulator` (see the module docstring)."""

    def __init__(self, name: str = "aedfl", config: AEDFLConfig = AEDFLConfig()):
        self.name, self.cfg = name, config

    # ---- setup -------------------------------------------------------------------------------------------
    def setup(self, sim: AsyncSimulator) -> None:
        self.step = AEDFLStep(self.cfg, sim, in_neighbor_slots(sim.topology.adjacency))
        self.dense_mflops = sim.model_mflops()
        sim.schedule_completions(torch.arange(sim.D), torch.zeros(sim.D, dtype=torch.float64))

    @property
    def cache(self):
        return self.step.cache

    @property
    def masks(self) -> torch.Tensor:
        return self.step.masks

    @property
    def pruner(self):
        return self.step.pruner

    @pruner.setter
    def pruner(self, pruner) -> None:
        """A pruning rule for the step (the pruning baselines put theirs here after `setup`)."""
        self.step.pruner = pruner

    # ---- one local update for a batch of devices ------------------------------------------------------
    def on_complete(self, sim: AsyncSimulator, devs: torch.Tensor, times: torch.Tensor) -> None:
        out = self.step.update(sim, devs, sim.x[devs])
        sim.device_steps += len(devs) * sim.cfg.local_steps
        sim.loss[devs] = out.loss
        if len(out.pruned):
            sim.cost_fraction[out.pruned] = out.cost
        sim.x[devs] = out.x
        dst = sim.random_out_neighbor(devs)
        for b, (d, j) in enumerate(zip(devs.tolist(), dst.tolist())):
            if j >= 0:
                msg = out.messages[b]
                sim.send(d, j, msg, sim.model_bytes(msg.mask), at=float(times[b]))
        sim.schedule_completions(devs, times)

    # ---- messages, faults, metrics ---------------------------------------------------------------------
    def on_arrive(self, sim: AsyncSimulator, msg: Message) -> None:
        self.step.receive(msg.dst, msg.src, msg.payload, stamp=int(sim.t[msg.dst]))

    def on_round(self, sim, payload) -> None:
        raise RuntimeError("AEDFL schedules no rounds")

    def on_rejoin(self, sim: AsyncSimulator, dev: int) -> None:
        sim.schedule_completions(torch.tensor([dev]), torch.tensor([sim.now], dtype=torch.float64))

    def eval_models(self, sim: AsyncSimulator) -> torch.Tensor:
        return sim.x

    def mflops(self, sim: AsyncSimulator) -> float:
        return self.step.mflops(sim)
