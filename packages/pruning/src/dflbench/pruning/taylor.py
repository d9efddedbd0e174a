"""AEDFL's pruning impact (section 5): second-order Taylor terms (5.12-5.14) and the exploration term (5.15).

Pruning a unit p sets Delta m^p = -m^p. With g = grad F and H the Hessian, 5.12 gives
    Delta F = g^T Delta m + 1/2 Delta m^T H Delta m,
and letting the remaining weights r compensate optimally, Delta m^r = -(H^{r,r})^{-1} (g^r - H^{r,p} m^p),
gives 5.14:
    Delta F^C = 1/2 m_p^T H^{p,p} m_p - g_p^T m_p - 1/2 m_p^T H^{p,r} (H^{r,r})^{-1} H^{r,p} m_p
                - 1/2 g_r^T (H^{r,r})^{-1} g_r + g_r^T (H^{r,r})^{-1} H^{r,p} m_p.

Tractable Hessian approximation (one unit is a conv channel / neuron / head, i.e. a small p):
- H^{p,p} m_p and H^{r,p} m_p are EXACT: one Hessian-vector product H [m_p; 0] per unit
  ("block", batched over units with vmap), or H ~ diag(D) everywhere ("diagonal", no per-unit HVP, so the
  coupling terms vanish).
- (H^{r,r})^{-1} ~ diag(1 / (|D_r| + delta)): D is the Hutchinson diagonal of H, delta = damping * mean|D|.
  Inverting the r-block exactly is a solve of the size of the whole model per unit; the diagonal is the
  standard tractable choice (OBD), and |D| + delta keeps it positive definite during training, where H
  is indefinite and the exact inverse may not exist.
- With a diagonal inverse, -1/2 g_r^T D_r^{-1} g_r = -1/2 g^T D^{-1} g + 1/2 g_p^T D_p^{-1} g_p: the first part
  (`newton_gain`) is the same for every unit (a Newton step the remaining weights could take anyway), so
  units are ranked by the unit-dependent part (`current`); `full` is 5.14 including it.

Exploration (5.15): Delta F = (1 - lambda_g) |Delta F^C| / |F| + lambda_g ||Delta g|| / ||g||, with
lambda_g = ||g|| / (C ||g||_max). Delta g is the first-order change of the masked gradient when the unit is
pruned: -g_p on the pruned entries and -H^{r,p} m_p on the others, so
||Delta g||^2 = ||g_p||^2 + ||H^{r,p} m_p||^2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import Tensor

from .candidates import CandidateSet
from .curvature import HessianOperator, Loss

APPROXIMATIONS = ("block", "diagonal")


def taylor_loss_change(loss_fn: Loss, params: Mapping[str, Tensor], delta: Mapping[str, Tensor],
                       names: Iterable[str] | None = None) -> Tensor:
    """5.12 without the cubic remainder: g^T Delta m + 1/2 Delta m^T H Delta m."""
    op = HessianOperator(loss_fn, params, names)
    d = op.flatten({n: delta[n] for n in op.names})
    return torch.dot(op.flatten(op.gradient()), d) + 0.5 * torch.dot(d, op.matvec(d))


@dataclass(frozen=True)
class TaylorImpact:
    """Per-unit terms [num_units] of 5.14 under the stated approximation, and ||Delta g|| per unit."""

    prune_quadratic: Tensor  # 1/2 m_p^T H^{p,p} m_p
    gradient: Tensor  # -g_p^T m_p
    coupling: Tensor  # -1/2 m_p^T H^{p,r} D_r^{-1} H^{r,p} m_p
    gradient_gain: Tensor  # +1/2 g_p^T D_p^{-1} g_p
    cross: Tensor  # g_r^T D_r^{-1} H^{r,p} m_p
    newton_gain: Tensor  # -1/2 g^T D^{-1} g (unit-independent)
    gradient_change: Tensor  # ||Delta g||

    @property
    def current(self) -> Tensor:
        """The unit-dependent part of Delta F^C (used for ranking)."""
        return self.prune_quadratic + self.gradient + self.coupling + self.gradient_gain + self.cross

    @property
    def full(self) -> Tensor:
        """Delta F^C of 5.14 (optimal diagonal-preconditioned compensation of the remaining weights)."""
        return self.current + self.newton_gain


def inverse_diagonal(diagonal: Tensor, damping: float) -> Tensor:
    """1 / (|D| + damping * mean|D|), the approximation of (H^{r,r})^{-1} on its diagonal (mean over the last
    dimension: a batch `[B, dim]` of diagonals is inverted row by row). A row whose diagonal is all zero (no
    curvature measured, e.g. at zero loss) has no Newton step: its inverse is 0."""
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    denom = diagonal.abs() + damping * diagonal.abs().mean(dim=-1, keepdim=True)
    flat = (diagonal == 0).all(dim=-1, keepdim=True)
    if ((denom == 0) & ~flat).any():
        raise ValueError("the Hessian diagonal has zero entries; use damping > 0 to invert it")
    return torch.where(flat, 0.0, 1.0 / torch.where(flat, 1.0, denom))


def diagonal_impact(params: Tensor, gradient: Tensor, diagonal: Tensor, damping: float = 1e-3) -> TaylorImpact:
    """5.14 with every ENTRY its own unit under H ~ diag(D) (the "diagonal" approximation): terms `[..., dim]`
    for params m, gradient g and diagonal D of shape `[..., dim]` (leading dimensions: e.g. devices); the coupling
    terms vanish, ||Delta g|| = |g_p|, and `newton_gain` is `[..., 1]`."""
    dinv = inverse_diagonal(diagonal, damping)
    zero = torch.zeros_like(params)
    return TaylorImpact(0.5 * diagonal * params * params, -gradient * params, zero, 0.5 * gradient * gradient * dinv,
                        zero, -0.5 * (gradient * gradient * dinv).sum(dim=-1, keepdim=True), gradient.abs())


def unit_diagonal_impact(entries: TaylorImpact, candidates: CandidateSet) -> TaylorImpact:
    """Per-unit 5.14 terms `[..., num_units]` under H ~ diag(D) from the entry terms of `diagonal_impact`
    (`[..., dim]`, leading dimensions e.g. devices): each term summed over the unit's entries (the coupling and
    cross terms vanish), ||Delta g|| = sqrt(sum of g_p^2) over the unit."""
    zero = torch.zeros_like(candidates.unit_sum(entries.gradient))
    return TaylorImpact(candidates.unit_sum(entries.prune_quadratic), candidates.unit_sum(entries.gradient), zero,
                        candidates.unit_sum(entries.gradient_gain), zero, entries.newton_gain,
                        candidates.unit_sum(entries.gradient_change ** 2).sqrt())


def taylor_impact(op: HessianOperator, candidates: CandidateSet, diagonal: Tensor, *, approximation: str = "block",
                  damping: float = 1e-3, chunk_size: int | None = 32, gradient: Tensor | None = None) -> TaylorImpact:
    """Per-unit 5.14 terms for every unit of `candidates`; `diagonal` is the flat Hessian diagonal D [dim]."""
    if approximation not in APPROXIMATIONS:
        raise ValueError(f"unknown Hessian approximation {approximation!r}; valid: {list(APPROXIMATIONS)}")
    if op.names != candidates.names:
        raise ValueError("the Hessian operator and the candidate set use different parameter layouts; build both "
                         "from the same trainable parameters (names=None)")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    m = op.params_flat()
    g = op.flatten(op.gradient()) if gradient is None else gradient
    entry = diagonal_impact(m, g, diagonal, damping)
    dinv = inverse_diagonal(diagonal, damping)
    gradient_term = candidates.unit_sum(entry.gradient)
    gain = candidates.unit_sum(entry.gradient_gain)
    newton = entry.newton_gain[0]
    g_sq = candidates.unit_sum(entry.gradient_change ** 2)
    if approximation == "diagonal":
        units = unit_diagonal_impact(entry, candidates)
        return TaylorImpact(units.prune_quadratic, units.gradient, units.coupling, units.gradient_gain, units.cross,
                            newton, units.gradient_change)
    quad, coupling, cross, off_sq = (torch.empty_like(gain) for _ in range(4))
    ids = candidates.unit_ids.to(m.device)
    step = candidates.num_units if chunk_size is None else chunk_size
    for start in range(0, candidates.num_units, step):
        stop = min(start + step, candidates.num_units)
        vectors = candidates.unit_vectors(m, start, stop)
        hv = op.matmat(vectors, chunk_size)
        outside = (ids.unsqueeze(0) != torch.arange(start, stop, device=m.device).unsqueeze(1)).to(m.dtype)
        h_r = hv * outside
        quad[start:stop] = 0.5 * (vectors * hv).sum(dim=1)
        coupling[start:stop] = -0.5 * (h_r * h_r * dinv).sum(dim=1)
        cross[start:stop] = (h_r * (g * dinv)).sum(dim=1)
        off_sq[start:stop] = (h_r * h_r).sum(dim=1)
    return TaylorImpact(quad, gradient_term, coupling, gain, cross, newton, (g_sq + off_sq).sqrt())


def exploration_weight(grad_norm, max_grad_norm, c: float):
    """lambda_g = ||g|| / (C ||g||_max) (5.15), ||g||_max the largest gradient norm seen so far (this one included).

    Floats give a float; tensors (e.g. one norm per device `[B]`) give a tensor, elementwise."""
    if c < 1:
        raise ValueError(f"C must be >= 1 so that lambda_g <= 1, got {c}")
    g, g_max = torch.as_tensor(grad_norm, dtype=torch.float64), torch.as_tensor(max_grad_norm, dtype=torch.float64)
    if (g < 0).any() or (g_max < 0).any():
        raise ValueError("gradient norms must be >= 0")
    peak = torch.maximum(g, g_max.to(g.device))
    lam = torch.where(peak == 0, 0.0, g / (c * peak.clamp(min=torch.finfo(torch.float64).tiny)))
    return lam if isinstance(grad_norm, Tensor) or isinstance(max_grad_norm, Tensor) else float(lam)


def aedfl_objective(impact: TaylorImpact, loss_value, grad_norm, lambda_g) -> Tensor:
    """5.15: (1 - lambda_g) |Delta F^C| / |F| + lambda_g ||Delta g|| / ||g|| per unit (lower = prune first).

    `loss_value`, `grad_norm`, `lambda_g` are floats, or tensors broadcasting against the unit terms (e.g. `[B, 1]`
    for a batch of devices' entries `[B, dim]`). Where F = 0 (a batch fitted exactly, as float32 cross-entropy can
    reach) the ratio |Delta F^C| / |F| is undefined: the term is |Delta F^C| (denominator 1), which orders a device's
    units as the ratio does for any |F| > 0 (|F| is shared by all its units). Where g = 0, lambda_g = 0 and the
    exploration term is 0."""
    current = impact.current
    lam = torch.as_tensor(lambda_g, dtype=current.dtype, device=current.device)
    loss = torch.as_tensor(loss_value, dtype=current.dtype, device=current.device)
    if ((lam < 0) | (lam > 1)).any():
        raise ValueError(f"lambda_g must be in [0, 1], got {lambda_g}")
    gn = torch.as_tensor(grad_norm, dtype=current.dtype, device=current.device)
    explore = torch.where(lam > 0, lam * impact.gradient_change / torch.where(gn > 0, gn, 1.0), 0.0)
    return (1.0 - lam) * current.abs() / torch.where(loss == 0, 1.0, loss.abs()) + explore
