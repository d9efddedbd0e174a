"""Pretraining the selection policy on synthetic data labelled by the paper's heuristics (AEDFL Sec. 4.1).

Candidate sets of M cached models get random features (aggregated with probability `p_aggregated`, staleness
uniform in [-2, max_staleness], loss uniform in [0.05, 3]). Heuristic label: select model m iff it was not
aggregated yet and it is fresh, staleness <= `fresh_staleness`. The default `fresh_staleness` is infinite, so the
label is AEDFL-0's rule (every cached model not aggregated yet, each once): before REINFORCE has data the policy
does what the ablation without RL does, and eq. 4.4 is what makes the two differ. The policy is fit by binary
cross-entropy on P(c_m | c_{m-1..1}) with the heuristic decisions as teacher-forced previous choices, towards the
soft targets `confidence` / 1 - `confidence` (default 0.99 / 0.01): a sampled selection then follows the rule in
99% of slot decisions (0.9 / 0.1 skipped 17% of fresh models and re-averaged aggregated copies 11% of the time in a
measured run, 5 points below AEDFL-0 with the policy frozen), while the sigmoid is not saturated (hard 0/1 targets
gave P = 0.998), so eq. 4.4 can still move it: a rare explored decision has log-probability gradient ~0.99.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.adam import adam

from .policy import SelectionPolicy


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 300
    batch_size: int = 64
    num_slots: int = 7
    lr: float = 0.01
    fresh_staleness: float = math.inf
    max_staleness: int = 12
    p_aggregated: float = 0.3
    confidence: float = 0.99

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.num_slots < 1 or not self.lr > 0:
            raise ValueError(f"PretrainConfig needs steps >= 0, batch_size >= 1, num_slots >= 1, lr > 0: {self}")
        if not 0.5 < self.confidence <= 1.0:
            raise ValueError(f"PretrainConfig.confidence must be in (0.5, 1], got {self.confidence}")
        if not 0.0 <= self.p_aggregated <= 1.0:
            raise ValueError(f"PretrainConfig.p_aggregated must be in [0, 1], got {self.p_aggregated}")


def synthetic_candidates(batch: int, num_slots: int, generator: torch.Generator,
                         config: PretrainConfig = PretrainConfig()) -> torch.Tensor:
    """Random `[batch, num_slots, 3]` features (aggregated, staleness, loss)."""
    aggregated = (torch.rand(batch, num_slots, generator=generator) < config.p_aggregated).float()
    stale = torch.randint(-2, config.max_staleness + 1, (batch, num_slots), generator=generator).float()
    loss = 0.05 + 2.95 * torch.rand(batch, num_slots, generator=generator)
    return torch.stack([aggregated, stale, loss], dim=-1)


def heuristic_selection(features: torch.Tensor, fresh_staleness: float = math.inf) -> torch.Tensor:
    """Select iff not already aggregated and staleness <= fresh_staleness: `[..., M, 3]` -> `[..., M]` bool."""
    return (features[..., 0] < 0.5) & (features[..., 1] <= fresh_staleness)


def pretrain_policy(policy: SelectionPolicy, generator: torch.Generator,
                    config: PretrainConfig = PretrainConfig()) -> list[float]:
    """Fit `policy` to the heuristic decisions with Adam; returns the loss of every step.

    The update is torch's functional Adam (`torch.optim.adam.adam`, the same arithmetic as `torch.optim.Adam` with
    its defaults: tested bit for bit). The Optimizer class imports torch._dynamo when it is built (~150 MB resident,
    ~900 modules), which nothing else in an AEDFL run loads."""
    params = [p for p in policy.parameters()]
    exp_avgs, exp_avg_sqs = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    steps = [torch.tensor(0.0) for _ in params]
    bce = torch.nn.BCELoss()
    losses = []
    for _ in range(config.steps):
        features = synthetic_candidates(config.batch_size, config.num_slots, generator, config)
        target = heuristic_selection(features, config.fresh_staleness)
        soft = torch.where(target, config.confidence, 1.0 - config.confidence)
        loss = bce(policy(features, target), soft)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            adam(params, list(grads), exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, beta1=0.9, beta2=0.999,
                 lr=config.lr, weight_decay=0.0, eps=1e-8, maximize=False)
        losses.append(loss.item())
    return losses
