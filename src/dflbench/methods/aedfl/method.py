"""AEDFL (Liu et al. 2024, Sec. 3-5) as an AsyncSimulator method, with its ablations.

The device update is `AEDFLStep` (`step.py`, shared with the torch.distributed runtime). Here the simulator hosts
it: for the devices completing in one time slot, `on_complete` runs the step on them as one batch, then sends each
device's message to ONE random out-neighbor of the exponential graph (eq. 3.2), starting at its completion time
(sending overlaps the next local update), and schedules their next completions. `on_arrive` hands an arriving
message to the step, which replaces the receiver's cache slot for the sender atomically, stamped with the
receiver's update count. At each evaluation `on_evaluate` records what the modules did (`diagnostics.py`).

Ablations (Sec. 6.1): aedfl-0 (none of the modules), aedfl-rl, aedfl-dwu, aedfl-p, aedfl-rl-dwu, aedfl (all).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from dflbench.aggregation import DynamicWeightsConfig, PolicyConfig, in_neighbor_slots
from dflbench.aggregation.weights import STEP_RULES
from dflbench.engines.async_sim import AsyncSimulator, Message
from dflbench.errors import UserError
from dflbench.methods.aedfl.diagnostics import BUCKETS, per_sender_lambda
from dflbench.methods.aedfl.pruning import AdaptivePruningConfig
from dflbench.methods.aedfl.selection import REWARDS, SelectorConfig
from dflbench.methods.aedfl.step import AEDFLConfig, AEDFLStep
from dflbench.registry import option

__all__ = ["AEDFL", "AEDFLConfig", "AEDFLOptions", "AEDFLPruneOptions", "aedfl_config"]


@dataclass(frozen=True)
class AEDFLOptions:
    """The options of every AEDFL variant (`--method-opt aedfl.lambda_lr=0.2`)."""

    lambda_lr: float = option(DynamicWeightsConfig.lr, "eta_lambda of eq. 4.8 (normalized step: the largest "
                                                       "per-update change of a neighbour's lambda)")
    lambda_step: str = option(DynamicWeightsConfig.step_rule, "eq. 4.8 step rule: normalized | plain")
    policy_lr: float = option(PolicyConfig.lr, "eta' of eq. 4.4 (REINFORCE of the selection policy)")
    policy_reward: str = option("change", "eq. 4.4's reward R_t: change (the loss change the aggregation caused, "
                                          "ours) | loss (the local loss after it, the paper's as printed)")
    reuse_aggregated: bool = option(False, "without rl: aggregate every cached model at every update, not each "
                                           "one once (AEDFL-0's other reading)")

    def __post_init__(self):
        if (not (self.lambda_lr >= 0 and self.policy_lr > 0) or self.lambda_step not in STEP_RULES
                or self.policy_reward not in REWARDS):
            raise UserError(f"AEDFL options: lambda_lr >= 0, policy_lr > 0, lambda_step in {STEP_RULES} and "
                            f"policy_reward in {REWARDS}, got {self.lambda_lr}, {self.policy_lr}, "
                            f"{self.lambda_step!r}, {self.policy_reward!r}")


@dataclass(frozen=True)
class AEDFLPruneOptions(AdaptivePruningConfig, AEDFLOptions):
    """The options of the pruning variants: AEDFLOptions plus the adaptive-pruning options (Sec. 5)."""

    def __post_init__(self):
        AdaptivePruningConfig.__post_init__(self)
        AEDFLOptions.__post_init__(self)


def aedfl_config(rl: bool, dwu: bool, prune: bool, options: AEDFLOptions) -> AEDFLConfig:
    """The step configuration of one AEDFL variant from its options."""
    pruning = {f.name: getattr(options, f.name) for f in fields(AdaptivePruningConfig)} if prune else {}
    return AEDFLConfig(rl=rl, dwu=dwu, prune=prune, reuse_aggregated=options.reuse_aggregated,
                       weights=DynamicWeightsConfig(lr=options.lambda_lr, step_rule=options.lambda_step),
                       policy=SelectorConfig(policy=PolicyConfig(lr=options.policy_lr),
                                             reward=options.policy_reward),
                       pruning=AdaptivePruningConfig(**pruning))


class AEDFL:
    """The AEDFL method object for `AsyncSimulator` (see the module docstring)."""

    def __init__(self, name: str = "aedfl", config: AEDFLConfig = AEDFLConfig(), options=None):
        self.name, self.cfg, self.options = name, config, options

    # ---- setup -------------------------------------------------------------------------------------------
    def setup(self, sim: AsyncSimulator) -> None:
        self.step = AEDFLStep(self.cfg, sim, in_neighbor_slots(sim.topology.adjacency))
        self.dense_mflops = sim.model_mflops()
        self.diagnostics = {"time": [], "selection_probability": [], "lambda": [], "pruning_rate": [], "mflops": [],
                            "selection_by_bucket": {name: [] for name in BUCKETS}}
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
        sim.account(devs, loss=out.loss, steps=len(devs) * sim.cfg.local_steps)
        if len(out.pruned):
            sim.cost_fraction[out.pruned] = out.cost
        sim.x[devs] = out.x
        done = times + sim.work_time(devs, out.work)          # aggregation, curvature, policy: `engines.cost`
        dst = sim.random_out_neighbor(devs)
        messages = self._corrupt(sim, devs, out.messages)
        for b, (d, j) in enumerate(zip(devs.tolist(), dst.tolist())):
            if j >= 0:
                msg = messages[b]
                sim.send(d, j, msg, sim.model_bytes(msg.mask), at=float(done[b]))
        sim.schedule_completions(devs, done)

    @staticmethod
    def _corrupt(sim: AsyncSimulator, devs: torch.Tensor, messages: list) -> list:
        """The messages as they go on the wire (`AsyncSimulator.outgoing`): a noise-pushing device's model is its
        noise model (under its mask), announced with that noise's loss on its own minibatch (`own_losses`)."""
        bad = sim.noise_senders(devs).nonzero().squeeze(1).tolist()
        if not bad:
            return messages
        who = devs[bad]
        masks = None if messages[bad[0]].mask is None else torch.stack([messages[b].mask for b in bad])
        noise = sim.outgoing(who, torch.stack([messages[b].model for b in bad]), masks)
        losses = sim.own_losses(who, noise)
        messages = list(messages)
        for k, b in enumerate(bad):
            messages[b] = replace(messages[b], model=noise[k], loss=float(losses[k]))
        return messages

    # ---- messages, faults, metrics ---------------------------------------------------------------------
    def on_arrive(self, sim: AsyncSimulator, msg: Message) -> None:
        self.step.receive(msg.dst, msg.src, msg.payload, stamp=int(sim.t[msg.dst]))

    def on_round(self, sim, payload) -> None:
        raise RuntimeError("AEDFL schedules no rounds")

    def on_rejoin(self, sim: AsyncSimulator, dev: int) -> None:
        sim.schedule_completions(torch.tensor([dev]), torch.tensor([sim.now], dtype=torch.float64))

    def on_evaluate(self, sim: AsyncSimulator, record: dict) -> None:
        """Append this evaluation's module diagnostics (`diagnostics.py`) to `self.diagnostics`."""
        step, log = self.step, self.diagnostics
        neighbors = self.cache.slots.neighbors
        selection, buckets = step.stats.take(neighbors, sim.D)
        log["time"].append(record["time"])
        log["selection_probability"].append(selection)
        for name, value in buckets.items():
            log["selection_by_bucket"][name].append(value)
        if step.dwu is not None:
            log["lambda"].append(per_sender_lambda(step.dwu.lam, neighbors, sim.D))
        if step.pruner is not None:
            log["pruning_rate"].append([float(r) for r in step.pruner.rate.tolist()])
            log["mflops"].append([float(v) for v in step.pruner.mflops(sim, step.masks).tolist()])

    def eval_models(self, sim: AsyncSimulator) -> torch.Tensor:
        return sim.x

    def eval_masks(self, sim: AsyncSimulator) -> torch.Tensor | None:
        """The devices' masks for the evaluation protocol (`engines.evaluation`); None without pruning."""
        return self.step.masks if self.step.pruner is not None else None

    def mflops(self, sim: AsyncSimulator) -> float:
        return self.step.mflops(sim)
