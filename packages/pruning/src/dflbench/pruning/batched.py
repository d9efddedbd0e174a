"""AEDFL's adaptive pruning (section 5) batched over devices: flat parameters with a leading device dimension [D, P].

For simulators that hold every device's model as one tensor (docs/ARCHITECTURE.md, stacked node state).
`loss_fn(flat, batch)` is the loss of ONE device's flat parameter vector `[P]` on its minibatch (`batch`: a tuple
of tensors); the functions below vmap this package's per-model functions over the device dimension (one batched
call, no loop):

- `device_curvature`: per device the loss, gradient g, Hutchinson diagonal h = mean_s z_s * H z_s
  (`curvature.probe_diagonal`) and the secant Lipschitz estimate L of the eigen-gap rule (`rates.secant_lipschitz`);
- `entry_scores`: 5.14 with every entry its own unit under H ~ diag(h) (`taylor.diagonal_impact`) inside 5.15
  (`taylor.aedfl_objective`, lambda_g from `taylor.exploration_weight`), `[D, P]`;
- `prune_lowest`: keep-masks pruning the floor(p_d * P) lowest-scoring entries of each device;
- `masked_mfp`: the MFP (millions of MACs, `flops.count_flops`) of every device's masked model, each layer's MACs
  scaled by its weight density (exact for unstructured masks that leave no input channel without kept weights
  and bias; `count_flops` with a device's masks also drops such dead channels).

The rates are vectorized over devices in `rates.py`: `eigengap_rates` (eigen-gap rule) and
`neighbor_weighted_rates` (5.16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from .curvature import HessianOperator, probe_diagonal
from .flops import count_flops
from .rates import check_moved, secant_lipschitz
from .taylor import aedfl_objective, diagonal_impact, exploration_weight

DeviceLoss = Callable[[Tensor, tuple], Tensor]


@dataclass(frozen=True)
class DeviceCurvature:
    """Per device: minibatch loss `[D]`, gradient `[D, P]`, Hessian diagonal `[D, P]`, Lipschitz estimate `[D]`."""

    loss: Tensor
    gradient: Tensor
    diagonal: Tensor
    lipschitz: Tensor


def device_curvature(loss_fn: DeviceLoss, params: Tensor, initial: Tensor, batch: tuple, probes: Tensor,
                     chunk_size: int | None = None) -> DeviceCurvature:
    """Curvature of every device's model `params [D, P]` on its minibatch (`batch` tensors `[D, ...]`).

    `initial` is m^o (`[P]` shared or `[D, P]`) for L, `probes [D, S, P]` the Rademacher vectors of the diagonal
    (drawn by the caller from its seeded generator, so the result does not depend on how devices are batched).
    """
    if params.ndim != 2 or probes.ndim != 3 or probes.shape[::2] != params.shape:
        raise ValueError(f"params must be [D, P] and probes [D, S, P], got {tuple(params.shape)} and "
                         f"{tuple(probes.shape)}")
    initial = initial.to(params).expand_as(params)
    delta = initial - params
    check_moved(delta.norm(dim=1))

    def one(flat: Tensor, delta: Tensor, batch: tuple, z: Tensor):
        g, loss = grad_and_value(loss_fn)(flat, batch)
        op = HessianOperator(lambda p: loss_fn(p["params"], batch), {"params": flat})
        return loss, g, probe_diagonal(op, z, chunk_size), secant_lipschitz(op, delta, gradient=g)

    loss, g, h, lip = vmap(one, randomness="different")(params, delta, tuple(batch), probes)
    return DeviceCurvature(loss, g, h, lip)


def entry_scores(params: Tensor, curvature: DeviceCurvature, max_grad_norm: Tensor, c: float,
                 damping: float = 1e-3) -> Tensor:
    """5.15 over 5.14 for every entry of every device, `[D, P]` (lower = prune first); `max_grad_norm [D]` is each
    device's largest gradient norm so far (this one included)."""
    grad_norm = curvature.gradient.norm(dim=1)
    lam = exploration_weight(grad_norm.double(), max_grad_norm.to(grad_norm.device), c)
    impact = diagonal_impact(params, curvature.gradient, curvature.diagonal, damping)
    return aedfl_objective(impact, curvature.loss.unsqueeze(1), grad_norm.unsqueeze(1), lam.unsqueeze(1))


def prune_lowest(scores: Tensor, rates: Tensor) -> Tensor:
    """Keep-masks `[D, P]` (True = kept): each device d prunes its floor(rates[d] * P) lowest-scoring entries."""
    if scores.ndim != 2 or rates.shape != scores.shape[:1]:
        raise ValueError(f"scores must be [D, P] with one rate per device, got {tuple(scores.shape)} and "
                         f"{tuple(rates.shape)}")
    if ((rates < 0) | (rates > 1)).any():
        raise ValueError(f"pruning rates must be in [0, 1], got {rates.min().item()}..{rates.max().item()}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    num = scores.shape[1]
    order = scores.argsort(dim=1, stable=True)                             # ascending: least important first
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(num, device=scores.device).expand_as(order))
    return ranks >= torch.floor(rates.double() * num).long().to(scores.device).unsqueeze(1)


def masked_mfp(model: nn.Module, inputs, masks: Tensor) -> Tensor:
    """MFP `[D]` (float64, millions of MACs per forward of `inputs`) of `model` under flat keep-masks `masks [D, P]`
    laid out as the concatenation of `model.named_parameters()`: each conv / linear layer's dense MACs
    (`count_flops`) times its weight's kept fraction on that device; attention matmuls count dense."""
    offsets, start = {}, 0
    for name, p in model.named_parameters():
        offsets[name] = (start, start + p.numel())
        start += p.numel()
    if masks.ndim != 2 or masks.shape[1] != start:
        raise ValueError(f"masks must be [D, {start}] (the model's flat parameters), got {tuple(masks.shape)}")
    total = torch.zeros(masks.shape[0], dtype=torch.float64, device=masks.device)
    for module, macs in count_flops(model, inputs).per_module.items():
        weight = f"{module}.weight" if module else "weight"
        if weight in offsets:
            a, b = offsets[weight]
            total += macs * masks[:, a:b].double().mean(dim=1)
        else:
            total += macs
    return total / 1e6
