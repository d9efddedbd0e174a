"""AEDFL's RL model selection (Sec. 4.1, eq. 4.4) for the AEDFL step, on `dflbench.aggregation.PolicyBank`.

At a device's t-th update the policy samples a selection over its cache slots from their features (already
aggregated, staleness, announced loss). Sampling is slot by slot, c_m = [u_m < P(c_m = 1 | c_{m-1..1})]
(`PolicyBank.sample`), with counter-based uniforms u_m keyed by (device, t, m), so a device's choices depend neither
on which devices share its time slot nor on the host (simulator or a torch.distributed rank). The initial network is
pre-trained on the paper's heuristic, read as AEDFL-0's rule (select every model not aggregated yet, each once:
`pretrain_policy`, soft targets 0.99 / 0.01), and copied to every device: before eq. 4.4 has data, AEDFL with RL
selects as AEDFL-0 does.

The reward (`reward`, eq. 4.4 with the window baseline l_i) comes in the same update, once the step has aggregated
the selection: R_t = F_i(x_i^{t}; zeta) - F_i(m_i^{t-1/2}; zeta), the loss change the aggregation caused, on
zeta = zeta_{t+1, 0}, the minibatch of the device's next first SGD step (`AEDFLStep`, step 7). The first term is the
paper's reward, the local SGD loss F_i(w_i^{t_i}, zeta_i^{t_i}) of the next update at its first step, and the same
forward pass the step makes for that SGD step; the second is our baseline. Departure (stated): the paper rewards the
loss alone, which is dominated by minibatch noise and training progress; the difference on one minibatch isolates
what the selection did. zeta is drawn by a key no earlier step used, independently of both models, so R_t is an
unbiased estimate of the change of F_i, as the held-back minibatch it replaced (issue 27) was. `reward="loss"`
(`SelectorConfig.reward`) rewards the first term alone, the paper's R_t as printed. Measured with both
(docs/results/aedfl-reward-fmnist-lenet5, 16 devices, 2 seeds): both move the policy the same way, away from fresh
neighbour models towards entries already aggregated (a neighbour's model raises the local loss on a non-IID
split), ours faster (P(fresh) 0.01-0.07 against 0.10-0.17 after 30 virtual s), and both end below AEDFL-0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dflbench.aggregation import selection_features
from dflbench.aggregation.policy import PolicyBank, PolicyConfig, SelectionPolicy
from dflbench.aggregation.pretrain import PretrainConfig, pretrain_policy
from dflbench.engines.async_rng import STREAM_POLICY, counter_uniform

REWARDS = ("change", "loss")


@dataclass(frozen=True)
class SelectorConfig:
    """The policy network and eq. 4.4's settings, its pretraining, and the reward R_t (module docstring): "change"
    = F_i(x_i^t; zeta) - F_i(m_i^{t-1/2}; zeta), ours; "loss" = F_i(x_i^t; zeta), the paper's as printed."""

    policy: PolicyConfig = PolicyConfig()
    pretrain_steps: int = 100
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    reward: str = "change"

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"SelectorConfig.reward must be one of {REWARDS}, got {self.reward!r}")


class PolicySelector:
    """Stacked per-device selection policies plus each device's last (features, choices, valid) for eq. 4.4.

    Row r is device `ids[r]` (default: row r is device r), whose id keys its random stream. `probability [R, K]`
    holds each row's last P(c_m = 1 | c_{m-1..1}) per slot (0 for invalid slots)."""

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
        self.probability = torch.zeros(num_devices, num_slots)

    def select(self, devs: torch.Tensor, t: torch.Tensor, aggregated, stale, loss, valid) -> torch.Tensor:
        """Choices `[B, K]` of rows `devs` at update `t [B]` (uniforms keyed by (device id, t, slot)); the
        selection is kept for `reward`."""
        feats = selection_features(aggregated, stale, loss).float()
        u = counter_uniform(self.seed, STREAM_POLICY, self.ids[devs].view(-1, 1), t.view(-1, 1),
                            torch.arange(feats.shape[1]).view(1, -1))
        choices, probs = self.bank.sample(feats, valid, u, devices=devs)
        self.prev_feats[devs], self.prev_choice[devs], self.prev_valid[devs] = feats, choices, valid
        self.probability[devs] = probs
        return choices

    def reward(self, devs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """Eq. 4.4 for the selection `select` just made for `devs`, with the losses `rewards [B]` it led to (lower
        is better); returns the advantages."""
        return self.bank.reinforce(self.prev_feats[devs], self.prev_choice[devs], self.prev_valid[devs],
                                   rewards.float(), devices=devs)
