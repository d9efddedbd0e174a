"""AEDFL's adaptive pruning (section 5) batched over devices: flat parameters with a leading device dimension [D, P].

For simulators that hold every device's model as one tensor (docs/ARCHITECTURE.md, stacked node state).
`loss_fn(flat, batch)` is the loss of ONE device's flat parameter vector `[P]` on its minibatch (`batch`: a tuple
of tensors); the functions below vmap this package's per-model functions over the device dimension (one batched
call; the curvature loops over devices where that measures faster, `device_curvature`):

- `device_curvature`: per device the loss, gradient g, the secant Lipschitz estimate L of the eigen-gap rule
  (`rates.secant_lipschitz`), the SLQ spectrum of the Hessian restricted to the prunable entries
  (`curvature.lanczos`; what `rates.eigengap_rates` reads) and the Hutchinson diagonal from the same Lanczos runs;
- `unit_scores`: 5.15 over 5.14 per structured unit (`candidates.CandidateSet`) with H ~ diag(h), `[D, U]`;
- `select_device_units`: flat keep-masks `[D, P]` pruning each device's lowest-scoring units (`prune.select_units`);

The 5.16 rates are vectorized over devices in `rates.py` (`neighbor_weighted_rates`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from .candidates import CandidateSet
from .curvature import HessianOperator, LanczosResult, lanczos
from .prune import select_units
from .rates import secant_lipschitz, secant_residual
from .taylor import aedfl_objective, diagonal_impact, exploration_weight, unit_diagonal_impact

DeviceLoss = Callable[[Tensor, tuple], Tensor]
CURVATURE_PATHS = ("auto", "loop", "stacked", "vmap")


@dataclass(frozen=True)
class DeviceCurvature:
    """Per device: minibatch loss `[D]`, gradient `[D, P]`, Hessian diagonal `[D, P]` (0 off the support), Lipschitz
    estimate `[D]`, and the SLQ spectrum of the Hessian on the support: Ritz nodes and Gauss weights `[D, R * m]`."""

    loss: Tensor
    gradient: Tensor
    diagonal: Tensor
    lipschitz: Tensor
    nodes: Tensor
    weights: Tensor


def device_curvature(loss_fn: DeviceLoss, params: Tensor, initial: Tensor, batch: tuple, starts: Tensor,
                     num_steps: int, support: Tensor | None = None, path: str = "auto") -> DeviceCurvature:
    """Curvature of every device's model `params [D, P]` on its minibatch (`batch` tensors `[D, ...]`).

    - loss, gradient g and L = `secant_lipschitz` along Delta = m^o - m (`initial`: m^o, `[P]` shared or `[D, P]`;
      L = 0 where m^o = m);
    - stochastic Lanczos quadrature (PyHessian's `density`, `curvature.eigenvalue_density`) of the Hessian restricted
      to the entries `support [P]` (bool, default all), H_S = S H S with S = diag(support): `num_steps` Lanczos steps
      (`curvature.lanczos`, full re-orthogonalization) from the Rademacher vectors `starts [D, R, P]` (drawn by the
      caller from its seeded generator, so the result does not depend on how devices are batched), all D * R runs at
      once, each step one Hessian-matrix product over devices (`path`). Per device the pooled Ritz nodes and their
      Gauss weights (first components of the Ritz vectors squared, over R; they sum to 1, `SpectralDensity.pooled`);
      a run that reaches an invariant subspace early leaves zero-weight nodes;
    - the Hutchinson diagonal h = mean_r z_r * H_S z_r with the same R vectors, read from each run's first Lanczos
      step (H_S q_0 = alpha_0 q_0 + beta_0 q_1 for q_0 = z / ||z||): no extra Hessian product.

    `path` (same numbers to float rounding): "vmap", one vmapped forward-over-reverse product over all devices per
    Lanczos step; "loop", per device one gradient graph built once (`create_graph`) and every Hessian product
    (the Lanczos steps' and the secant's) a backward pass through it (reverse-over-reverse); "stacked", the loop's
    reverse-over-reverse products for all devices at once: one graph over the vmapped forward of every device, each
    Hessian product one backward pass of `[D, P]` vectors (the devices' losses are independent, so row d is
    H_d v_d); "auto": "loop" on CPU, "vmap" elsewhere. Measured (LeNet-5, batch 32, 4 devices, 6 steps, one CPU
    thread): the whole call 51-55 ms per device with vmap, the loop's Lanczos 21 ms (one gradient: 1.8 ms).
    Stacked against loop, the whole call per device (28x28, batch 32, 6 steps, one CPU thread, load 2-4, alternated):
    1 device 47-48 / 44-47 ms, 2: 43 / 40-42, 4: 38 / 42, 8: 32 / 42-44; AEDFL's slots prune 1-3 devices at once
    (100 devices: 63, 17 and 1 calls of 1, 2 and 3), so "auto" stays "loop" on CPU.
    """
    if params.ndim != 2 or starts.ndim != 3 or starts.shape[::2] != params.shape:
        raise ValueError(f"params must be [D, P] and starts [D, R, P], got {tuple(params.shape)} and "
                         f"{tuple(starts.shape)}")
    D, R, P = starts.shape
    keep = torch.ones(P, dtype=params.dtype, device=params.device) if support is None else support.to(params)
    if keep.shape != (P,) or not bool(keep.any()) or num_steps < 2:
        raise ValueError(f"support must be a nonempty [{P}] mask and num_steps >= 2, got {tuple(keep.shape)} and "
                         f"{num_steps}")
    if path not in CURVATURE_PATHS:
        raise ValueError(f"path must be one of {', '.join(map(repr, CURVATURE_PATHS))}, got {path!r}")
    delta = initial.to(params).expand_as(params) - params
    z = starts.to(params) * keep
    steps = min(num_steps, int(keep.sum()))
    if path == "loop" or (path == "auto" and params.device.type == "cpu"):
        loss, g, lip, res = _curvature_loop(loss_fn, params, delta, batch, z, steps, keep)
    elif path == "stacked":
        loss, g, lip, res = _curvature_stacked(loss_fn, params, delta, batch, z, steps, keep)
    else:
        loss, g, lip, res = _curvature_vmap(loss_fn, params, delta, batch, z, steps, keep)
    q0 = res.basis[:, 0]
    h_q0 = res.alpha[:, :1] * q0 + (res.beta[:, :1] * res.basis[:, 1] if res.basis.shape[1] > 1 else 0.0)
    norms = z.reshape(D * R, P).norm(dim=1, keepdim=True)
    diagonal = (norms * q0 * norms * h_q0).view(D, R, P).mean(dim=1)
    t = torch.diag_embed(res.alpha) + torch.diag_embed(res.beta, 1) + torch.diag_embed(res.beta, -1)
    theta, vectors = torch.linalg.eigh(t)                                     # [D * R, m], [D * R, m, m]
    return DeviceCurvature(loss, g, diagonal, lip, theta.reshape(D, -1), (vectors[:, 0, :] ** 2 / R).reshape(D, -1))


def _curvature_vmap(loss_fn: DeviceLoss, params: Tensor, delta: Tensor, batch: tuple, z: Tensor, steps: int,
                    keep: Tensor):
    """(loss, gradient, L, Lanczos runs) of `device_curvature`, vmapped over devices."""
    D, R, P = z.shape

    def first(flat: Tensor, delta: Tensor, batch: tuple):
        g, loss = grad_and_value(loss_fn)(flat, batch)
        op = HessianOperator(lambda p: loss_fn(p["params"], batch), {"params": flat})
        return loss, g, secant_lipschitz(op, delta, gradient=g)

    loss, g, lip = vmap(first, randomness="different")(params, delta, tuple(batch))

    def hmm(flat: Tensor, batch: tuple, vectors: Tensor) -> Tensor:
        return HessianOperator(lambda p: loss_fn(p["params"], batch), {"params": flat}).matmat(vectors)

    batched = vmap(hmm, randomness="different")

    def matmat(q: Tensor) -> Tensor:
        return (batched(params, tuple(batch), (q * keep).view(D, R, P)) * keep).view(D * R, P)

    return loss, g, lip, lanczos(matmat, z.reshape(D * R, P), steps)


def _curvature_loop(loss_fn: DeviceLoss, params: Tensor, delta: Tensor, batch: tuple, z: Tensor, steps: int,
                    keep: Tensor):
    """(loss, gradient, L, Lanczos runs) of `device_curvature`, device by device: Hessian products are backward
    passes through the device's gradient graph, built once."""
    losses, grads, lips, runs = [], [], [], []
    for d in range(params.shape[0]):
        b = tuple(t[d] for t in batch)
        p = params[d].detach().requires_grad_(True)
        m_o = (params[d] + delta[d]).detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(p, b)
            (g,) = torch.autograd.grad(loss, p, create_graph=True)
            (g_init,) = torch.autograd.grad(loss_fn(m_o, b), m_o)

        def hvp(v: Tensor, g=g, p=p) -> Tensor:
            return torch.autograd.grad(g, p, v, retain_graph=True)[0]

        losses.append(loss.detach())
        grads.append(g.detach())
        lips.append(secant_residual(hvp(delta[d]), g_init, g.detach(), delta[d]))
        runs.append(lanczos(lambda q: torch.stack([hvp(v * keep) for v in q]) * keep, z[d], steps))
    res = LanczosResult(*(torch.cat([getattr(r, f) for r in runs]) for f in ("alpha", "beta", "basis", "steps")))
    return torch.stack(losses), torch.stack(grads), torch.stack(lips), res


def _curvature_stacked(loss_fn: DeviceLoss, params: Tensor, delta: Tensor, batch: tuple, z: Tensor, steps: int,
                       keep: Tensor):
    """(loss, gradient, L, Lanczos runs) of `device_curvature`, all devices in one gradient graph (the vmapped
    forward, built once): a Hessian product of every device is one backward pass through it."""
    D, R, P = z.shape
    losses = vmap(loss_fn, randomness="different")
    p = params.detach().requires_grad_(True)
    m_o = (params + delta).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = losses(p, tuple(batch))
        (g,) = torch.autograd.grad(loss.sum(), p, create_graph=True)
        (g_init,) = torch.autograd.grad(losses(m_o, tuple(batch)).sum(), m_o)

    def hvp(v: Tensor) -> Tensor:                                   # [D, P] -> row d: H_d v_d
        return torch.autograd.grad(g, p, v, retain_graph=True)[0]

    def matmat(q: Tensor) -> Tensor:
        q = (q * keep).view(D, R, P)
        return (torch.stack([hvp(q[:, r]) for r in range(R)], dim=1) * keep).view(D * R, P)

    lip = vmap(secant_residual)(hvp(delta), g_init, g.detach(), delta)
    return loss.detach(), g.detach(), lip, lanczos(matmat, z.reshape(D * R, P), steps)


def unit_scores(params: Tensor, curvature: DeviceCurvature, candidates: CandidateSet, max_grad_norm: Tensor,
                c: float, damping: float = 1e-3) -> Tensor:
    """5.15 over 5.14 for every structured unit (conv channel, neuron, head) of every device, `[D, U]` (lower =
    prune first). H ~ diag(h) (`taylor.diagonal_impact`), so a unit's Delta F^C is the sum of its entries' terms
    and ||Delta g|| the norm of its entries' gradients (`taylor.unit_diagonal_impact`); lambda_g =
    ||g|| / (C ||g||_max) with `max_grad_norm [D]` each device's largest gradient norm so far."""
    grad_norm = curvature.gradient.norm(dim=1)
    lam = exploration_weight(grad_norm.double(), max_grad_norm.to(grad_norm.device), c)
    entries = diagonal_impact(params, curvature.gradient, curvature.diagonal, damping)
    impact = unit_diagonal_impact(entries, candidates)
    return aedfl_objective(impact, curvature.loss.unsqueeze(1), grad_norm.unsqueeze(1), lam.unsqueeze(1))


def select_device_units(scores: Tensor, candidates: CandidateSet, rates: Tensor, min_units_kept: int = 1) -> Tensor:
    """Flat keep-masks `[D, P]`: device d prunes its floor(rates[d] * U) lowest-scoring units (`prune.select_units`,
    never below `min_units_kept` units in any layer); entries outside every unit are kept."""
    if scores.ndim != 2 or rates.shape != scores.shape[:1]:
        raise ValueError(f"scores must be [D, U] with one rate per device, got {tuple(scores.shape)} and "
                         f"{tuple(rates.shape)}")
    keep = [candidates.flat_keep(select_units(s, candidates, float(r), min_units_kept=min_units_kept))
            for s, r in zip(scores, rates.tolist())]
    return torch.stack(keep).to(scores.device)
