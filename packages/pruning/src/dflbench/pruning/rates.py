"""AEDFL pruning rates: the Hessian eigen-gap rule (section 5, after [65]) and the neighbour-weighted rate (5.16).

Eigen-gap rule: sort the nonzero Hessian eigenvalues ascending, h_1 <= ... <= h_d (d = rank of H), take the first
p with h_{p+1} - h_p > 4 L and set p* = p / d (no such gap: p* = 0, nothing can be pruned losslessly).
L is the Lipschitz constant of the benchmark function F'(Delta) = H(m) Delta - grad F(m + Delta), estimated by its
secant between Delta = 0 and Delta m = m^o - m (the initial minus the current model):
    L = || H(m) Delta m - (grad F(m^o) - grad F(m)) || / || Delta m ||,
i.e. how far the gradient departs from its quadratic model along the training path (0 for a quadratic loss).

For a model too large for eigh, the spectrum comes from stochastic Lanczos quadrature: the pooled Ritz nodes
of all runs, each carrying its Gauss weight as the fraction of eigenvalues it stands for, so p / d becomes the
cumulative weight of the nodes up to the gap over the weight of the nonzero nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from .curvature import HessianOperator, Loss, eigenvalue_density, make_generator


def check_rate(rate: float, what: str = "pruning rate") -> float:
    """`rate` as a float, or ValueError unless it is in [0, 1]."""
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {rate}")
    return rate


def estimate_lipschitz(loss_fn: Loss, params: Mapping[str, Tensor], initial_params: Mapping[str, Tensor],
                       names: Iterable[str] | None = None) -> float:
    """Secant estimate of the Lipschitz constant L of F'(Delta) = H(m) Delta - grad F(m + Delta) (see module doc)."""
    op = HessianOperator(loss_fn, params, names)
    missing = [n for n in op.names if n not in initial_params]
    if missing:
        raise ValueError(f"initial_params lacks parameters {missing}")
    delta = op.flatten({n: initial_params[n].to(op.device, op.dtype) for n in op.names}) - op.params_flat()
    check_moved(delta.norm())
    return float(secant_lipschitz(op, delta))


def check_moved(delta_norm: Tensor) -> None:
    """ValueError when ||Delta m|| = 0 (any entry of a batch of norms): L needs a model that has trained."""
    if bool((delta_norm == 0).any()):
        raise ValueError("the model equals its initial model (Delta m = 0): the Lipschitz estimate needs a model "
                         "that has trained; pass the initial parameters m^o and the current ones")


def secant_lipschitz(op: HessianOperator, delta: Tensor, gradient: Tensor | None = None) -> Tensor:
    """|| H(m) Delta m - (grad F(m + Delta m) - grad F(m)) || / || Delta m || as a tensor (vmappable: no checks);
    0 when Delta m = 0 (the secant's limit: F' is differentiable with F''(0) = 0); `gradient` = grad F(m) flat when
    already computed."""
    g_now = op.flatten(op.gradient()) if gradient is None else gradient
    g_init = op.flatten(op.gradient(op.unflatten(op.params_flat() + delta)))
    return secant_residual(op.matvec(delta), g_init, g_now, delta)


def secant_residual(h_delta: Tensor, g_init: Tensor, g_now: Tensor, delta: Tensor) -> Tensor:
    """`secant_lipschitz` from its parts: || H Delta m - (g(m + Delta m) - g(m)) || / || Delta m ||, 0 for
    Delta m = 0."""
    norm = delta.norm()
    residual = (h_delta - (g_init - g_now)).norm()
    return torch.where(norm > 0, residual / norm.clamp(min=torch.finfo(norm.dtype).tiny), torch.zeros_like(norm))


def eigengap_rate(eigenvalues: Tensor, lipschitz: float, weights: Tensor | None = None,
                  zero_tol: float = 1e-6) -> float:
    """p* = p / d from the first gap h_{p+1} - h_p > 4 L among the nonzero eigenvalues (weighted: SLQ nodes).

    Eigenvalues with |h| <= zero_tol * max|h| are the null space and do not count towards the rank d.
    """
    h = eigenvalues.reshape(1, -1)
    w = None if weights is None else weights.reshape(1, -1)
    return float(eigengap_rates(h, torch.tensor([float(lipschitz)], dtype=torch.float64), w, zero_tol)[0])


def eigengap_rates(eigenvalues: Tensor, lipschitz: Tensor, weights: Tensor | None = None,
                   zero_tol: float = 1e-6) -> Tensor:
    """`eigengap_rate` row by row, vectorized: spectra `[B, n]` (e.g. each device's Hessian diagonal), L `[B]`,
    optional weights `[B, n]` -> p* `[B]` (float64)."""
    h = eigenvalues.double()
    lip = torch.as_tensor(lipschitz, dtype=torch.float64, device=h.device).reshape(-1)
    w = torch.ones_like(h) if weights is None else weights.to(h.device).double()
    if h.ndim != 2 or lip.shape != (h.shape[0],):
        raise ValueError(f"eigenvalues must be [B, n] with one Lipschitz constant per row, got "
                         f"{tuple(h.shape)} and {tuple(lip.shape)}")
    if (lip < 0).any():
        raise ValueError(f"the Lipschitz constant must be >= 0, got {lip.min().item()}")
    if w.shape != h.shape or (w < 0).any():
        raise ValueError("weights must be nonnegative with one weight per eigenvalue")
    if h.numel() == 0 or not torch.isfinite(h).all():
        raise ValueError("eigenvalues must be a nonempty finite vector")
    scale = h.abs().amax(dim=1, keepdim=True)
    keep = (h.abs() > zero_tol * scale) & (w > 0)
    if ((scale.squeeze(1) == 0) | ~keep.any(dim=1)).any():
        raise ValueError("the Hessian is numerically zero (rank 0): no eigen-gap rate exists")
    # null-space entries sort last (+inf), so the kept ones are the ascending prefix of each row
    h_sorted, order = torch.where(keep, h, torch.inf).sort(dim=1, stable=True)
    w_sorted = torch.where(keep, w, 0.0).gather(1, order)
    n_kept = keep.sum(dim=1, keepdim=True)
    idx = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
    gap = torch.cat([h_sorted[:, 1:] - h_sorted[:, :-1], torch.zeros_like(h_sorted[:, :1])], dim=1)
    big = (gap > 4.0 * lip.unsqueeze(1)) & (idx + 1 < n_kept)          # gap after entry idx, both kept
    p = torch.where(big.any(dim=1), big.double().argmax(dim=1) + 1, 0)
    mass = torch.where(idx < p.unsqueeze(1), w_sorted, 0.0)
    return mass.sum(dim=1) / w_sorted.sum(dim=1)


@dataclass(frozen=True)
class RateEstimate:
    """The local lossless rate p*, the Lipschitz estimate used, and the (SLQ) spectrum it was read from."""

    rate: float
    lipschitz: float
    nodes: Tensor
    weights: Tensor


def lossless_rate(loss_fn: Loss, params: Mapping[str, Tensor], initial_params: Mapping[str, Tensor], *,
                  num_steps: int = 32, num_runs: int = 4, names: Iterable[str] | None = None,
                  zero_tol: float = 1e-6, seed: int = 0, generator: torch.Generator | None = None) -> RateEstimate:
    """p* of the eigen-gap rule with the spectrum from SLQ and L from `estimate_lipschitz`."""
    names = None if names is None else list(names)
    lip = estimate_lipschitz(loss_fn, params, initial_params, names)
    gen = generator if generator is not None else make_generator(seed)
    nodes, weights = eigenvalue_density(loss_fn, params, num_steps=num_steps, num_runs=num_runs, names=names,
                                        generator=gen).pooled()
    return RateEstimate(eigengap_rate(nodes, lip, weights, zero_tol), lip, nodes, weights)


def neighbor_weighted_rate(own_rate: float, self_weight: float, neighbor_rates: Sequence[float],
                           neighbor_weights: Sequence[float]) -> float:
    """5.16: p_i = sum_j w_ij p_j + w_ii p_i^*, the weights of 4.7 (nonnegative, summing to 1)."""
    if len(neighbor_rates) != len(neighbor_weights):
        raise ValueError(f"{len(neighbor_rates)} neighbour rates but {len(neighbor_weights)} neighbour weights")

    def row(values):
        return torch.tensor([[float(v) for v in values]], dtype=torch.float64).reshape(1, len(values))

    return float(neighbor_weighted_rates(row([own_rate])[:, 0], row([self_weight])[:, 0], row(neighbor_rates),
                                         row(neighbor_weights))[0])


def neighbor_weighted_rates(own_rate: Tensor, self_weight: Tensor, neighbor_rates: Tensor,
                            neighbor_weights: Tensor, tol: float = 1e-6) -> Tensor:
    """5.16 for B devices at once: own p*_i `[B]`, w_ii `[B]`, neighbours' rates and weights `[B, K]` -> p_i `[B]`
    (clipped to [0, 1]); a neighbour slot with weight 0 (inactive) does not count."""
    own, w_self = own_rate.double(), self_weight.double()
    rates, weights = neighbor_rates.double(), neighbor_weights.double()
    if rates.shape != weights.shape:
        raise ValueError(f"neighbour rates {tuple(rates.shape)} but neighbour weights {tuple(weights.shape)}")
    if own.shape != w_self.shape or rates.ndim != 2 or own.shape != rates.shape[:1]:
        raise ValueError(f"own rates {tuple(own.shape)} and self weights {tuple(w_self.shape)} must be [B] for "
                         f"neighbour rates [B, K], got {tuple(rates.shape)}")
    for name, r in (("own rate", own), ("neighbour rate", rates)):
        if ((r < 0) | (r > 1)).any():
            raise ValueError(f"{name} must be in [0, 1], got {r.min().item()}..{r.max().item()}")
    total = w_self + weights.sum(dim=1)
    if (w_self < 0).any() or (weights < 0).any():
        raise ValueError("aggregation weights must be >= 0")
    if ((total - 1.0).abs() > tol).any():
        raise ValueError(f"aggregation weights (4.7) must sum to 1, got {total.tolist()}")
    return ((weights * rates).sum(dim=1) + w_self * own).clamp(0.0, 1.0)
