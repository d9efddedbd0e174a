"""One pruning operation on one model (AEDFL section 5): the entry point the engines call.

Per pruning round on device i (the model holds the FULL structure: aggregated values in every entry):

    est = local_rate(model, criterion, batch, initial_params)                        # p_i^*, eigen-gap rule
    p_i = neighbor_weighted_rate(est.rate, w_ii, neighbour_rates, neighbour_weights)  # 5.16
    res = prune_model(model, criterion, batch, p_i, max_grad_norm=g_max)             # 5.12-5.15 + selection
    handle = apply_masks(model, res.masks, optimizer)     # or apply_flat_mask(model, res.flat_mask(model))

Every unit is scored on the whole model, so units pruned earlier can come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from .candidates import CandidateSet, find_candidates
from .curvature import make_generator
from .masks import flat_mask
from .modules import model_loss_fn, model_params
from .rates import RateEstimate, check_rate, lossless_rate
from .scoring import ScoringContext, get_scoring_rule
from .taylor import APPROXIMATIONS


@dataclass(frozen=True)
class PruningConfig:
    """Pruning hyper-parameters.

    rule: scoring rule (`list_scoring_rules()`); approximation: "block" (exact H^{p,p}, H^{r,p} by one HVP per
    unit) or "diagonal" (see `taylor`); num_probes: Hutchinson probes for diag(H); damping: relative damping of
    (H^{r,r})^{-1}; c: C of lambda_g (5.15, >= 1); min_units_kept: units every group keeps; max_group_rate: the most
    of a group's units a global selection prunes (HAP's per-layer limit, `select_units`); chunk_size: units /
    probes per vmapped HVP batch; slq_steps, slq_runs: SLQ for the eigen-gap rate; zero_tol: relative size under
    which an eigenvalue is null; skip, prune_last_linear: see `find_candidates`.
    """

    rule: str = "aedfl"
    approximation: str = "block"
    num_probes: int = 16
    damping: float = 1e-3
    c: float = 2.0
    min_units_kept: int = 1
    max_group_rate: float = 1.0
    chunk_size: int | None = 32
    slq_steps: int = 32
    slq_runs: int = 4
    zero_tol: float = 1e-6
    null_tol: float = 1e-3
    layerwise: bool = False
    skip: tuple[str, ...] = ()
    prune_last_linear: bool = False

    def __post_init__(self):
        get_scoring_rule(self.rule)
        if self.approximation not in APPROXIMATIONS:
            raise ValueError(f"unknown Hessian approximation {self.approximation!r}; valid: {list(APPROXIMATIONS)}")
        for name in ("num_probes", "slq_steps", "slq_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_units_kept < 0:
            raise ValueError(f"min_units_kept must be >= 0, got {self.min_units_kept}")
        if not 0 <= self.max_group_rate <= 1:
            raise ValueError(f"max_group_rate must be in [0, 1], got {self.max_group_rate}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {self.chunk_size}")
        if self.c < 1:
            raise ValueError(f"c (C in lambda_g = ||g|| / (C ||g||_max)) must be >= 1, got {self.c}")
        if self.damping < 0 or self.zero_tol < 0 or self.null_tol < 0:
            raise ValueError("damping, zero_tol and null_tol must be >= 0")


def select_units(scores: Tensor, candidates: CandidateSet, rate: float, *, min_units_kept: int = 1,
                 group_rates: Tensor | None = None, max_group_rate: float = 1.0) -> Tensor:
    """Keep-mask [num_units]: prune the floor(rate * num_units) lowest-scoring units globally, or with
    `group_rates` the floor(rate_g * size_g) lowest of each group; a group never drops below `min_units_kept`
    (its share of the global count goes to the next-lowest units of other groups). `max_group_rate` (global
    selection only) is HAP's per-layer limit (`prune_ratio_limit`, Yu et al. 2022): a group that the global
    selection would cut by more than floor(max_group_rate * size_g) units loses only its lowest that many, and the
    units it keeps are not pruned elsewhere (the overall rate ends below `rate`, as in HAP)."""
    rate = check_rate(rate)
    max_group_rate = check_rate(max_group_rate, "per-group pruning limit")
    if scores.shape != (candidates.num_units,):
        raise ValueError(f"scores have shape {tuple(scores.shape)}, expected ({candidates.num_units},)")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    scores = scores.detach().double().cpu()
    group = candidates.group_of_unit.cpu()
    sizes = torch.tensor([g.num_units for g in candidates.groups])
    starts = torch.tensor(candidates.group_offsets)
    by_score = torch.argsort(scores, stable=True)
    order = by_score[torch.argsort(group[by_score], stable=True)]  # grouped, ascending score inside each group
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel()) - starts[group[order]]
    prunable = (sizes - min_units_kept).clamp(min=0)
    if group_rates is not None:
        if group_rates.shape != (len(candidates.groups),):
            raise ValueError(f"group_rates has shape {tuple(group_rates.shape)}, expected ({len(candidates.groups)},)")
        for r in group_rates.tolist():
            check_rate(r, "group pruning rate")
        quota = torch.minimum(torch.floor(group_rates.cpu() * sizes).long(), prunable)
        return ~(rank < quota[group])
    eligible = rank < prunable[group]
    k = int(rate * candidates.num_units)
    masked = torch.where(eligible, scores, torch.full_like(scores, float("inf")))
    chosen = torch.argsort(masked, stable=True)[: min(k, int(eligible.sum()))]
    keep = torch.ones(candidates.num_units, dtype=torch.bool)
    keep[chosen] = False
    if max_group_rate < 1.0:
        cap = torch.floor(max_group_rate * sizes).long()
        keep |= rank >= cap[group]                                   # rank: within the group, by ascending score
    return keep


@dataclass(frozen=True)
class PruneResult:
    """The new unit keep-mask, per-parameter masks, scores and the requested / achieved unit rates."""

    keep_units: Tensor
    masks: dict
    scores: Tensor
    rate: float
    achieved_rate: float
    candidates: CandidateSet
    group_rates: Tensor | None = None       # the per-group rates the selection used (None: one global selection)

    def flat_mask(self, model: nn.Module) -> Tensor:
        """The mask as one vector aligned with `model.state_dict()` (see `masks.flat_mask`)."""
        return flat_mask(model, self.masks)


def _batch(batch) -> tuple[Tensor, Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError("batch must be an (inputs, targets) pair")
    return batch[0], batch[1]


def prune_model(model: nn.Module, criterion: Callable[[Tensor, Tensor], Tensor], batch, rate: float, *,
                config: PruningConfig = PruningConfig(), max_grad_norm: float | None = None,
                initial_params: Mapping[str, Tensor] | None = None, candidates: CandidateSet | None = None,
                seed: int = 0, group_rates: Tensor | None = None) -> PruneResult:
    """Score every candidate unit of `model` on the local `batch` with `config.rule` and keep the best.

    `rate` is the fraction of candidate units to prune (p_i of 5.16), over the whole model or, with
    `config.layerwise` or a layer-adaptive rule, per group; the model is not modified.
    `max_grad_norm` (rule "aedfl") is ||g||_max of 5.15; `initial_params` (rule "fedap") is m^o.
    `group_rates` `[groups]`: per-group rates that replace the rule's and `config.layerwise` (e.g. rates a layer-
    adaptive rule chose earlier, `PruneResult.group_rates`, now applied with another rule's scores).
    """
    rate = check_rate(rate)
    inputs, _ = _batch(batch)
    cand = find_candidates(model, inputs, skip=config.skip, prune_last_linear=config.prune_last_linear) \
        if candidates is None else candidates
    params = model_params(model)
    if cand.names != list(params):
        raise ValueError("the candidate set was built for different parameters than the model's trainable ones")
    ctx = ScoringContext(model, cand, model_loss_fn(model, criterion, batch), params, inputs, config,
                         make_generator(seed), max_grad_norm,
                         None if initial_params is None else dict(initial_params), rate)
    result = get_scoring_rule(config.rule)(ctx)
    if group_rates is None:
        group_rates = result.group_rates
    if group_rates is None and config.layerwise:
        group_rates = torch.full((len(cand.groups),), rate, dtype=torch.float64)
    keep = select_units(result.scores, cand, rate, min_units_kept=config.min_units_kept, group_rates=group_rates,
                        max_group_rate=config.max_group_rate)
    masks = {n: m.to(params[n].device) for n, m in cand.param_masks(keep).items()}
    achieved = float((~keep).sum()) / cand.num_units
    return PruneResult(keep, masks, result.scores, rate, achieved, cand, group_rates)


def local_rate(model: nn.Module, criterion: Callable[[Tensor, Tensor], Tensor], batch,
               initial_params: Mapping[str, Tensor], *, config: PruningConfig = PruningConfig(),
               seed: int = 0) -> RateEstimate:
    """p_i^* of the eigen-gap rule for `model` on `batch` (SLQ over all trainable parameters)."""
    _batch(batch)
    return lossless_rate(model_loss_fn(model, criterion, batch), model_params(model), initial_params,
                         num_steps=config.slq_steps, num_runs=config.slq_runs, zero_tol=config.zero_tol,
                         generator=make_generator(seed))
