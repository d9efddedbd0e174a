"""What the decentralized baselines share: no server, every device's own model is evaluated, dense MFLOPs; and the
synchronous rounds of D-PSGD and DisPFL (`RoundMethod`)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from dflbench.engines.async_sim import AsyncSimulator, Kind


class DecentralizedMethod(ABC):
    """Sample counts and dense MFLOPs at setup; the devices' models are the run's models."""

    name: str

    def __init__(self, options):
        self.options = options

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


class RoundMethod(DecentralizedMethod):
    """Synchronous rounds: every alive device with fewer than T updates takes part (`round_step`, which returns the
    devices' comm times; finished devices neither train nor mix); the next round starts when the slowest finishes,
    or after a heartbeat while no device can take part."""

    @abstractmethod
    def round_step(self, sim: AsyncSimulator, alive: torch.Tensor, devs: torch.Tensor) -> torch.Tensor:
        """Train and mix the taking-part devices `devs` (`alive [D]`: alive and below T); their comm times `[B]`."""

    def on_round(self, sim: AsyncSimulator, payload) -> None:
        alive = sim.alive & sim.below_limit()
        devs = alive.nonzero().squeeze(1)
        if len(devs) == 0:
            sim.schedule(sim.now + sim.cfg.heartbeat_interval, Kind.ROUND)
            return
        comm = self.round_step(sim, alive, devs)
        sim.schedule(sim.now + float((sim.compute_time(devs) + comm).max()), Kind.ROUND)

    def on_complete(self, sim, devs, times) -> None:
        raise RuntimeError(f"{self.name} runs in rounds")

    def on_rejoin(self, sim, dev) -> None:
        """Nothing to set up: `on_round` takes every alive device below T, so a rejoined device takes part from the
        next round on, starting from the model it held when it failed (a round with no device able to take part
        waits a heartbeat and looks again; tests/engines_async/test_async_stop_per_device.py checks d-psgd and
        dispfl rejoiners finish their T updates)."""
        return None
