"""Scoring rules over one candidate set (lower score = pruned first): AEDFL and the paper's pruning baselines.

- "aedfl": 5.15 with the Taylor terms of 5.14 (see `taylor`).
- "magnitude": mean |w| over the unit's entries (filter-norm pruning, Li et al.).
- "hrank": HRank [33], the average (over the batch) matrix rank of the unit's output feature map: a conv
  channel's H x W map (1d: L x 1), an attention head's tokens x head_dim output, a linear neuron's
  tokens x 1 activations (1 x 1 without a token axis, where the rank only tells dead neurons apart).
- "fedap": FedAP [62] (Zhang et al. 2022, FedDUAP) layer-adaptive pruning: each group's redundancy is read from
  the spectrum of the Hessian restricted to that layer's parameters (SLQ) and the target `rate` is shared out
  over the groups in proportion to it (`proportional_group_rates`); HRank scores rank the units inside a group.
- "hap": HAP [60], the Hessian-aware sensitivity tr(H_uu) / |u| * ||w_u||^2 with the Hutchinson diagonal.

A rule takes a `ScoringContext` and returns `Scores` (per-unit scores and optional per-group rates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .candidates import CandidateSet
from .curvature import HessianOperator, Loss
from .modules import stateless_buffers
from .rates import lossless_rate
from .taylor import aedfl_objective, exploration_weight, taylor_impact

if TYPE_CHECKING:
    from .prune import PruningConfig


@dataclass
class ScoringContext:
    """What a rule may use: the model, its candidates, the loss on a local batch, that batch's inputs and the
    requested pruning rate (layer-adaptive rules share it out over the groups)."""

    model: nn.Module
    candidates: CandidateSet
    loss_fn: Loss
    params: dict
    inputs: Tensor
    config: "PruningConfig"
    generator: torch.Generator
    max_grad_norm: float | None = None
    initial_params: dict | None = None
    rate: float = 0.0
    _op: HessianOperator | None = field(default=None, repr=False)

    @property
    def op(self) -> HessianOperator:
        if self._op is None:
            self._op = HessianOperator(self.loss_fn, self.params)
        return self._op

    def hessian_diagonal(self) -> Tensor:
        """Flat Hutchinson diagonal of H with `config.num_probes` Rademacher probes."""
        z = self.op.rademacher(self.config.num_probes, self.generator)
        return (z * self.op.matmat(z, self.config.chunk_size)).mean(dim=0)


@dataclass(frozen=True)
class Scores:
    """Per-unit scores [num_units] (lower = prune first) and, for layer-adaptive rules, per-group rates [groups]."""

    scores: Tensor
    group_rates: Tensor | None = None


Rule = Callable[[ScoringContext], Scores]
_RULES: dict[str, Rule] = {}


def register_scoring_rule(name: str) -> Callable[[Rule], Rule]:
    """Register a scoring rule under `name`; a name already taken is refused (a ValueError naming its holder)."""

    def deco(fn: Rule) -> Rule:
        if name in _RULES:
            raise ValueError(f"scoring rule {name!r} is already registered (by {_RULES[name].__module__}."
                             f"{_RULES[name].__qualname__}); registered: {', '.join(list_scoring_rules())}")
        _RULES[name] = fn
        return fn

    return deco


def list_scoring_rules() -> list[str]:
    return sorted(_RULES)


def get_scoring_rule(name: str) -> Rule:
    if name not in _RULES:
        raise ValueError(f"unknown scoring rule {name!r}; valid: {list_scoring_rules()}")
    return _RULES[name]


@register_scoring_rule("aedfl")
def aedfl_scores(ctx: ScoringContext) -> Scores:
    """5.15 per unit: (1 - lambda_g) |Delta F^C| / |F| + lambda_g ||Delta g|| / ||g||."""
    if ctx.max_grad_norm is None:
        raise ValueError("the aedfl rule needs max_grad_norm, the largest gradient norm seen so far in training "
                         "(lambda_g = ||g|| / (C ||g||_max), 5.15)")
    cfg = ctx.config
    g = ctx.op.flatten(ctx.op.gradient())
    impact = taylor_impact(ctx.op, ctx.candidates, ctx.hessian_diagonal(), approximation=cfg.approximation,
                           damping=cfg.damping, chunk_size=cfg.chunk_size, gradient=g)
    grad_norm = float(g.norm())
    lam = exploration_weight(grad_norm, ctx.max_grad_norm, cfg.c)
    return Scores(aedfl_objective(impact, float(ctx.op.loss()), grad_norm, lam))


@register_scoring_rule("magnitude")
def magnitude_scores(ctx: ScoringContext) -> Scores:
    """Mean absolute weight of the unit."""
    m = ctx.op.params_flat()
    return Scores(ctx.candidates.unit_sum(m.abs()) / ctx.candidates.unit_sizes.to(m.device))


def feature_maps(ctx: ScoringContext) -> dict[int, Tensor]:
    """Per group index: the units' output maps [batch, units, rows, cols] on the context's inputs."""
    modules = dict(ctx.model.named_modules())
    captured: dict[int, Tensor] = {}
    handles = []

    def keep(i: int, maps: Tensor) -> None:
        captured[i] = maps.detach()

    for i, group in enumerate(ctx.candidates.groups):
        mod = modules[group.module]
        if group.kind == "attention_head":
            heads = group.num_units

            def pre(m, inp, i=i, heads=heads):
                x = inp[0]
                keep(i, x.reshape(x.shape[0], -1, heads, x.shape[-1] // heads).permute(0, 2, 1, 3))

            handles.append(mod.proj.register_forward_pre_hook(pre))
        elif group.kind == "conv_channel":
            def hook(m, inp, out, i=i):
                maps = out.unsqueeze(-1) if out.ndim == 3 else out.flatten(3) if out.ndim == 5 else out
                keep(i, maps)

            handles.append(mod.register_forward_hook(hook))
        else:
            def hook(m, inp, out, i=i):
                x = out.reshape(out.shape[0], -1, out.shape[-1])  # [batch, tokens, units]
                keep(i, x.permute(0, 2, 1).unsqueeze(-1))

            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            functional_call(ctx.model, (ctx.params, stateless_buffers(ctx.model)), (ctx.inputs,), strict=False)
    finally:
        for h in handles:
            h.remove()
    return captured


@register_scoring_rule("hrank")
def hrank_scores(ctx: ScoringContext) -> Scores:
    """Average matrix rank of each unit's output feature map over the batch."""
    maps = feature_maps(ctx)
    parts = [torch.linalg.matrix_rank(maps[i].float()).float().mean(dim=0) for i in range(len(ctx.candidates.groups))]
    return Scores(torch.cat(parts).to(ctx.op.dtype))


def null_mass(nodes: Tensor, weights: Tensor, tol: float) -> float:
    """Fraction of the spectral mass (SLQ nodes and Gauss weights) at |lambda| <= tol * max|lambda|."""
    scale = nodes.abs().max()
    total = weights.sum()
    if scale == 0 or total == 0:
        return 1.0
    return float(weights[nodes.abs() <= tol * scale].sum() / total)


def proportional_group_rates(redundancy: Tensor, sizes: Tensor, rate: float) -> Tensor:
    """Per-group rates p_g = rate * r_g * sum_g n_g / sum_g n_g r_g (capped at 1), so that sum_g n_g p_g =
    rate * sum_g n_g units are pruned (less where a cap binds), group g's share following its redundancy r_g;
    uniform `rate` when every r_g is 0."""
    r, n = redundancy.double().cpu(), sizes.double().cpu()
    if r.shape != n.shape or (r < 0).any():
        raise ValueError(f"redundancy must be >= 0 with one value per group, got {r.tolist()} for sizes {n.tolist()}")
    weight = float((n * r).sum())
    if weight == 0:
        return torch.full_like(n, rate)
    return (rate * r * float(n.sum()) / weight).clamp(max=1.0)


@register_scoring_rule("fedap")
def fedap_scores(ctx: ScoringContext) -> Scores:
    """HRank scores within each layer; per-layer rates shared out in proportion to each layer's redundancy.

    Layer l's redundancy is r_l = max(p*_l, z_l): p*_l the eigen-gap lossless rate of the layer's Hessian block
    (`rates.lossless_rate`, SLQ and the layer's secant Lipschitz estimate) and z_l the near-null spectral mass of
    that block (`null_mass` at `config.null_tol`), the directions along which the local loss does not curve.
    Departure (stated): FedAP reads its layer rates from the Hessian eigenvalues on the server's shared data; here
    each device's local batch stands in for it (decentralized: there is no server), and because the 4 L gap almost
    never fires during training (p*_l = 0 on every LeNet-5 layer measured), the near-null mass z_l is what
    differentiates the layers and the configured rate fixes how much is pruned in total (FedAP's expected rate).
    """
    if ctx.initial_params is None:
        raise ValueError("the fedap rule needs initial_params (the model before training) for the layer-wise "
                         "Lipschitz estimates of the eigen-gap rule")
    cfg = ctx.config
    redundancy = []
    for group in ctx.candidates.groups:
        names = list(dict.fromkeys(s.name for s in group.slices))
        est = lossless_rate(ctx.loss_fn, ctx.params, ctx.initial_params, num_steps=cfg.slq_steps,
                            num_runs=cfg.slq_runs, names=names, zero_tol=cfg.zero_tol, generator=ctx.generator)
        redundancy.append(max(est.rate, null_mass(est.nodes, est.weights, cfg.null_tol)))
    sizes = torch.tensor([g.num_units for g in ctx.candidates.groups])
    return Scores(hrank_scores(ctx).scores,
                  proportional_group_rates(torch.tensor(redundancy, dtype=torch.float64), sizes, ctx.rate))


@register_scoring_rule("hap")
def hap_scores(ctx: ScoringContext) -> Scores:
    """HAP's second-order sensitivity of unit u, tr(H_uu) / |u| * ||w_u||^2 (Yu et al. 2022, the loss change of
    removing u under H_uu ~ (tr(H_uu) / |u|) I, without the constant 1/2, which does not change the ranking), with
    tr(H_uu) summed from the Hutchinson diagonal (`config.num_probes` Rademacher probes); units are ranked across
    the whole model (the sensitivity is a loss change, comparable between layers)."""
    m = ctx.op.params_flat()
    cand = ctx.candidates
    trace = cand.unit_sum(ctx.hessian_diagonal())
    return Scores(trace / cand.unit_sizes.to(m.device) * cand.unit_sum(m * m))
