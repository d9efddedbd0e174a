"""Aggregation rules of the AEDFL baselines as pure functions over flat models.

Shapes: a model is `[P]`; K models stack to `[K, P]`; per-model scalars (samples, staleness, steps) are `[K]`.
Each rule states its formula; p_k = s_k / sum_j s_j are sample weights.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from .masked import masked_average
from .staleness_discounts import StalenessFn, bounded, inverse_sqrt, lag


def sample_weights(samples) -> torch.Tensor:
    """p_k = s_k / sum_j s_j over the last dimension."""
    samples = torch.as_tensor(samples).to(torch.get_default_dtype())
    if (samples < 0).any() or (samples.sum(-1) <= 0).any():
        raise ValueError("sample counts must be >= 0 with a positive total")
    return samples / samples.sum(-1, keepdim=True)


def fedavg(models: torch.Tensor, samples) -> torch.Tensor:
    """FedAvg (McMahan et al. 2017): x = sum_k p_k x_k, for `[..., K, P]` models and `[..., K]` samples."""
    p = sample_weights(samples).to(device=models.device, dtype=models.dtype)
    return (p.unsqueeze(-2) @ models).squeeze(-2)


def fedprox_term(params: Iterable[torch.Tensor] | torch.Tensor, anchor: Iterable[torch.Tensor] | torch.Tensor,
                 mu: float) -> torch.Tensor:
    """FedProx (Li et al. 2020) proximal term (mu / 2) ||w - w^t||^2, added to the local loss (differentiable in w).

    `params` and `anchor` are flat tensors or matching iterables of tensors (e.g. model.parameters() and the
    global model's tensors); the anchor is treated as a constant.
    """
    if mu < 0:
        raise ValueError(f"FedProx mu must be >= 0, got {mu}")
    params = [params] if torch.is_tensor(params) else list(params)
    anchor = [anchor] if torch.is_tensor(anchor) else list(anchor)
    if len(params) != len(anchor) or any(p.shape != a.shape for p, a in zip(params, anchor)):
        raise ValueError("fedprox_term: params and anchor must have matching tensors and shapes")
    return 0.5 * mu * sum(((p - a.detach()) ** 2).sum() for p, a in zip(params, anchor))


def fednova(global_model: torch.Tensor, local_models: torch.Tensor, samples, local_steps,
            momentum: float = 0.0) -> torch.Tensor:
    """FedNova (Wang et al. 2020) normalized averaging.

    ||a_k||_1 = tau_k for SGD, (tau_k - rho (1 - rho^tau_k) / (1 - rho)) / (1 - rho) with momentum rho;
    d_k = (x - x_k) / ||a_k||_1;  tau_eff = sum_k p_k ||a_k||_1;  x <- x - tau_eff sum_k p_k d_k.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"FedNova momentum must be in [0, 1), got {momentum}")
    steps = torch.as_tensor(local_steps, device=local_models.device).to(local_models.dtype)
    if (steps < 1).any():
        raise ValueError("FedNova local_steps must be >= 1")
    if momentum:
        a_norm = (steps - momentum * (1 - momentum ** steps) / (1 - momentum)) / (1 - momentum)
    else:
        a_norm = steps
    p = sample_weights(samples).to(device=local_models.device, dtype=local_models.dtype)
    d = (global_model - local_models) / a_norm.unsqueeze(-1)
    tau_eff = (p * a_norm).sum()
    return global_model - tau_eff * (p @ d)


def fedbuff(global_model: torch.Tensor, deltas: torch.Tensor, staleness, server_lr: float = 1.0,
            discount: StalenessFn = inverse_sqrt()) -> torch.Tensor:
    """FedBuff (Nguyen et al. 2022): x <- x + eta_g / K sum_k s(tau_k) Delta_k over a buffer of K client deltas
    Delta_k = x_k(end) - x_k(start), with s(tau) = 1 / sqrt(1 + tau) by default."""
    s = discount(staleness).to(device=deltas.device, dtype=deltas.dtype)
    return global_model + server_lr / deltas.shape[0] * (s @ deltas)


def fedasync(global_model: torch.Tensor, local_model: torch.Tensor, staleness, alpha: float,
             discount: StalenessFn) -> torch.Tensor:
    """FedAsync (Xie et al. 2019): x <- (1 - alpha_t) x + alpha_t x_new, alpha_t = alpha s(t - tau).

    Batched: `[..., P]` models with `[...]` staleness.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"FedAsync alpha must be in (0, 1], got {alpha}")
    a = (alpha * discount(staleness)).to(device=local_model.device, dtype=local_model.dtype).unsqueeze(-1)
    return (1 - a) * global_model + a * local_model


def safa_aggregate(global_model: torch.Tensor, cache: torch.Tensor, samples, staleness,
                   lag_tolerance: float) -> torch.Tensor:
    """SAFA (Wu et al. 2020): W = sum_k p_k w*_k over the model cache, where deprecated entries (staleness above
    the lag tolerance) are replaced by the previous global model before aggregating."""
    keep = lag(lag_tolerance)(staleness).to(device=cache.device, dtype=torch.bool)
    effective = torch.where(keep.unsqueeze(-1), cache, global_model.unsqueeze(0))
    return fedavg(effective, samples)


def fedsa_aggregate(models: torch.Tensor, samples, staleness, tau0: float) -> torch.Tensor:
    """FedSA (Chen et al. 2021) server step: sample-weighted average of the buffered updates whose staleness is at
    most tau_0 (staler ones are dropped)."""
    keep = lag(tau0)(staleness).to(models.device)
    if not keep.any():
        raise ValueError(f"fedsa_aggregate: every buffered update is staler than tau0={tau0}; raise tau0")
    return fedavg(models, torch.as_tensor(samples).to(keep) * keep)


def fedsa_learning_rates(base_lr: float, participation_counts, bound: float = math.inf) -> torch.Tensor:
    """FedSA's frequency-compensated client learning rates eta_i = eta clamp(1 / (N f_i), 1 / bound, bound),
    f_i = c_i / sum_j c_j the participation frequency (a client that never took part counts as c_i = 1): rare
    clients step larger, frequent ones smaller, by at most the factor `bound` >= 1 (inf: the unbounded rule)."""
    if not bound >= 1:
        raise ValueError(f"FedSA learning-rate bound must be >= 1, got {bound}")
    c = torch.as_tensor(participation_counts).to(torch.get_default_dtype()).clamp_min(1.0)
    f = c / c.sum()
    return base_lr * (1 / (c.numel() * f)).clamp(1 / bound, bound)


def asofed_update(global_model: torch.Tensor, local_model: torch.Tensor, samples: float,
                  total_samples: float) -> torch.Tensor:
    """ASO-Fed (Chen et al. 2020) server step on one arrival: x <- x + (s_k / s) (x_k - x)."""
    if not 0 < samples <= total_samples:
        raise ValueError(f"ASO-Fed needs 0 < samples <= total_samples, got {samples}, {total_samples}")
    return global_model + samples / total_samples * (local_model - global_model)


def asofed_step_scale(mean_staleness) -> torch.Tensor:
    """ASO-Fed's dynamic step size factor r_k = max(1, log(mean staleness d_k)) (natural log): stragglers take
    larger local steps."""
    d = torch.as_tensor(mean_staleness).to(torch.get_default_dtype())
    if (d < 0).any():
        raise ValueError("ASO-Fed mean staleness must be >= 0")
    return torch.log(d.clamp_min(math.e))


def port_weights(samples, staleness, similarity, bound: float = 10.0, similarity_weight: float = 1.0,
                 staleness_weight: float = 1.0) -> torch.Tensor:
    """Port (Su & Li 2022): w_k proportional to p_k ((cos_k + 1) / 2 * beta_sim + bound / (tau_k + bound) * beta_st),
    normalized to sum 1; cos_k = cosine similarity of update k with the global model's drift since its version
    (torch.nn.functional.cosine_similarity)."""
    p = sample_weights(samples)
    sim = torch.as_tensor(similarity).to(p.dtype)
    if ((sim < -1 - 1e-6) | (sim > 1 + 1e-6)).any():
        raise ValueError("Port similarity must be a cosine in [-1, 1]")
    raw = p * ((sim + 1) / 2 * similarity_weight + bounded(bound)(staleness).to(p.dtype) * staleness_weight)
    return raw / raw.sum(-1, keepdim=True)


def dispfl_aggregate(models: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """DisPFL (Dai et al. 2022): each entry is the plain mean over the models whose mask keeps it (mask-count
    averaging), re-masked with the local mask (slot 0): eq. 4.11 with uniform weights."""
    k = models.shape[-2]
    w = torch.full(models.shape[:-1], 1.0 / k, dtype=models.dtype, device=models.device)
    return masked_average(models, w, masks)


def adpsgd_pairwise(states: torch.Tensor, pairs) -> torch.Tensor:
    """AD-PSGD (Lian et al. 2018) gossip: for each pair (i, j), x_i = x_j = (x_i + x_j) / 2, on stacked `[n, P]`
    states; the pairs of one call must be disjoint (a matching). Returns a new tensor."""
    pairs = torch.as_tensor(pairs, dtype=torch.long, device=states.device).reshape(-1, 2)
    flat = pairs.flatten()
    if flat.numel() and (flat.min() < 0 or flat.max() >= states.shape[0]):
        raise ValueError(f"adpsgd_pairwise: node indices must be in [0, {states.shape[0]})")
    if flat.unique().numel() != flat.numel():
        raise ValueError("adpsgd_pairwise: pairs must be disjoint (no node in two pairs, no self pair)")
    out = states.clone()
    mean = 0.5 * (states[pairs[:, 0]] + states[pairs[:, 1]])
    out[pairs[:, 0]] = mean
    out[pairs[:, 1]] = mean
    return out
