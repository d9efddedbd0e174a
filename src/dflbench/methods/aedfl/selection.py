"""AEDFL's RL model selection (Sec. 4.1, eq. 4.4) for the AEDFL step, on `dflbench.aggregation.PolicyBank`.

At a device's t-th update: first REINFORCE (eq. 4.4) for the selection it made at update t-1, rewarded with its
new local loss R_t (the loss that selection led to); then a fresh selection over its cache slots. Sampling is slot by
slot, c_m = [u_m < P(c_m = 1 | c_{m-1..1})] (`PolicyBank.sample`), with counter-based uniforms u_m keyed by
(device, t, m), so a device's choices depend neither on which devices share its time slot nor on the host (simulator
or a torch.distributed rank). The initial network is pre-trained on the paper's heuristic (select models not yet
aggregated and fresh) and copied to every device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dflbench.aggregation import selection_features
from dflbench.aggregation.policy import PolicyBank, PolicyConfig, SelectionPolicy
from dflbench.aggregation.pretrain import PretrainConfig, pretrain_policy
from dflbench.engines.async_rng import STREAM_POLICY, counter_uniform


@dataclass(frozen=True)
class SelectorConfig:
    policy: PolicyConfig = PolicyConfig()
    pretrain_steps: int = 100
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


class PolicySelector:
    """Stacked per-device selection policies plus each device's last (features, choices, valid) for eq. 4.4.

    Row r is device `ids[r]` (default: row r is device r), whose id keys its random stream."""

    def __init__(self, num_devices: int, num_slots: int, cfg: SelectorConfig = SelectorConfig(), seed: int = 0,
                 ids: torch.Tensor | None = None):
        gen = torch.Generator().manual_seed(seed)
        net = SelectionPolicy(cfg.policy.hidden, gen)
        pre = PretrainConfig(**{**cfg.pretrain.__dict__, "num_slots": num_slots, "steps": cfg.pretrain_steps})
        pretrain_policy(net, gen, pre)
        self.bank = PolicyBank(num_devices, cfg.policy, init=net)
        self.seed = seed
        self.ids = torch.arange(num_devices) if ids is None else torch.as_tensor(ids, dtype=torch.long).cpu()
        self.prev_feats = torch.zeros(num_devices, num_slots, 3)
        self.prev_choice = torch.zeros(num_devices, num_slots, dtype=torch.bool)
        self.prev_valid = torch.zeros(num_devices, num_slots, dtype=torch.bool)
        self.has_prev = torch.zeros(num_devices, dtype=torch.bool)

    def sample(self, devs: torch.Tensor, t: torch.Tensor, feats: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Choices `[B, K]` of rows `devs` at update `t [B]`, uniforms keyed by (device id, t, slot)."""
        u = counter_uniform(self.seed, STREAM_POLICY, self.ids[devs].view(-1, 1), t.view(-1, 1),
                            torch.arange(feats.shape[1]).view(1, -1))
        return self.bank.sample(feats, valid, u, devices=devs)[0]

    def select(self, devs, t, aggregated, stale, loss, valid, reward) -> torch.Tensor:
        """Eq. 4.4 for the previous selection of `devs` (reward = their current loss), then new choices `[B, K]`."""
        had = self.has_prev[devs]
        if had.any():
            d = devs[had]
            self.bank.reinforce(self.prev_feats[d], self.prev_choice[d], self.prev_valid[d],
                                reward[had].float(), devices=d)
        feats = selection_features(aggregated, stale, loss).float()
        choices = self.sample(devs, t, feats, valid)
        self.prev_feats[devs], self.prev_choice[devs], self.prev_valid[devs] = feats, choices, valid
        self.has_prev[devs] = True
        return choices
