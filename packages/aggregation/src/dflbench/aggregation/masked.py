"""Heterogeneous (masked) model aggregation, AEDFL eq. 4.11.

For every entry p of the full (unpruned) model, with o_j^p = 1 iff model j keeps p:

    mu_i^p = sum_j w_j o_j^p mu_j^p / sum_j w_j o_j^p                                   (4.11)

over the local model (index 0) and the neighbor models. An entry kept by nobody (zero denominator) keeps the local
value. The local model is the result times the local mask o_0 (`remask=True`); `remask=False` returns the full
model, whose pruned entries still carry the neighbors' values (AEDFL Sec. 5 prunes from the full model).

All shapes carry a leading device batch: models `[..., K, P]`, weights `[..., K]`, masks `[..., K, P]`; the
result is `[..., P]`. Two batched matrix products over K, no loop over entries, models or devices. On CPU and
without autograd, the entries go in cache-sized blocks (`block_size`, default CPU_BLOCK entries of 8 models: fewer
entries per block for a device batch, no fewer than 1,024) through preallocated
buffers: the temporaries stay in cache and no fresh memory is faulted in per call, about 2x faster than one pass
over [K, P] temporaries (bench/test_aggregation_masked.py). With autograd (e.g. differentiating w.r.t. the
weights) or on GPU, one pass over all entries.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .flat import FlatSpec, flatten_state, unflatten

WEIGHT_SUM_TOL = 1e-4
CPU_BLOCK = 1 << 16


def masked_average(models, weights, masks=None, *, remask: bool = True, block_size: int | None = None):
    """Eq. 4.11. `models[..., 0, :]` / `masks[..., 0, :]` are the local model and mask; `weights` sum to 1 over K.

    `models` is a `[..., K, P]` tensor, a sequence of K flat `[P]` tensors, or a sequence of K state dicts with the
    same keys (then the masks are state dicts too and a state dict is returned). `masks` holds bools or 0/1 values;
    None means every model keeps every entry (plain weighted average, eq. 4.9). `block_size`: entries per block
    (default: all at once on GPU, CPU_BLOCK on CPU).
    """
    if isinstance(models, Sequence) and models and isinstance(models[0], Mapping):
        spec = FlatSpec.from_state_dict(models[0])
        flat = torch.stack([flatten_state(m, spec) for m in models])
        flat_masks = None if masks is None else torch.stack([flatten_state(_as_float(m), _float_spec(spec))
                                                              for m in masks])
        out = masked_average(flat, weights, flat_masks, remask=remask, block_size=block_size)
        return {k: v.clone() for k, v in unflatten(out, spec).items()}
    models = _stack(models, "models")
    masks = None if masks is None else _stack(masks, "masks")
    weights = torch.as_tensor(weights, device=models.device)
    _check(models, weights, masks)
    w = weights.to(models.dtype).unsqueeze(-2)                      # [..., 1, K]
    if block_size is not None and block_size < 1:
        raise ValueError(f"masked_average: block_size must be >= 1, got {block_size}")
    if masks is None:
        return (w @ models).squeeze(-2)                             # eq. 4.9
    p = models.shape[-1]
    needs_grad = torch.is_grad_enabled() and (models.requires_grad or w.requires_grad)
    if block_size is None:                                          # CPU: CPU_BLOCK entries of K = 8 models
        block_size = p if models.is_cuda else max(1024, 8 * CPU_BLOCK // max(1, w.numel()))
    if needs_grad or block_size >= p:
        return _eq_4_11(models, w, masks, remask)
    return _eq_4_11_blocked(models, w, masks, remask, block_size)


def _eq_4_11(models: torch.Tensor, w: torch.Tensor, masks: torch.Tensor, remask: bool) -> torch.Tensor:
    m = masks.to(models.dtype)
    num = (w @ (models * m)).squeeze(-2)                            # sum_j w_j o_j mu_j
    den = (w @ m).squeeze(-2)                                       # sum_j w_j o_j
    kept = den > 0
    out = torch.where(kept, num / torch.where(kept, den, torch.ones_like(den)), models[..., 0, :])
    return out * m[..., 0, :] if remask else out


def _eq_4_11_blocked(models: torch.Tensor, w: torch.Tensor, masks: torch.Tensor, remask: bool,
                     block: int) -> torch.Tensor:
    """_eq_4_11 over blocks of `block` entries, reusing four buffers (no autograd)."""
    p = models.shape[-1]
    lead = models.shape[:-1]                                        # [..., K]
    out = models.new_empty(lead[:-1] + (p,))
    m_buf = models.new_empty(lead + (block,))
    prod_buf = models.new_empty(lead + (block,))
    num_buf = models.new_empty(lead[:-1] + (1, block))
    den_buf = models.new_empty(lead[:-1] + (1, block))
    for start in range(0, p, block):
        n = min(block, p - start)
        cols = slice(start, start + n)
        m, prod, num, den = m_buf[..., :n], prod_buf[..., :n], num_buf[..., :n], den_buf[..., :n]
        m.copy_(masks[..., cols])
        torch.mul(models[..., cols], m, out=prod)
        torch.matmul(w, prod, out=num)
        torch.matmul(w, m, out=den)
        kept = den > 0
        num.div_(den.masked_fill_(~kept, 1.0))
        o = out[..., cols]
        torch.where(kept.squeeze(-2), num.squeeze(-2), models[..., 0, cols], out=o)
        if remask:
            o.mul_(m[..., 0, :])
    return out


def _stack(x, what: str) -> torch.Tensor:
    if torch.is_tensor(x):
        return x
    if isinstance(x, Sequence) and x and all(torch.is_tensor(t) for t in x):
        return torch.stack(list(x))
    raise ValueError(f"masked_average: {what} must be a [..., K, P] tensor or a non-empty sequence of tensors")


def _check(models: torch.Tensor, weights: torch.Tensor, masks: torch.Tensor | None) -> None:
    if models.dim() < 2:
        raise ValueError(f"masked_average: models must be [..., K, P], got shape {tuple(models.shape)}")
    if not models.is_floating_point():
        raise ValueError(f"masked_average: models must be floating point, got {models.dtype}")
    if tuple(weights.shape) != tuple(models.shape[:-1]):
        raise ValueError(f"masked_average: weights shape {tuple(weights.shape)} must be models.shape[:-1] = "
                         f"{tuple(models.shape[:-1])}")
    if masks is not None and masks.shape != models.shape:
        raise ValueError(f"masked_average: masks shape {tuple(masks.shape)} must equal models shape "
                         f"{tuple(models.shape)}")
    if (weights < 0).any():
        raise ValueError("masked_average: weights must be non-negative")
    sums = weights.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=WEIGHT_SUM_TOL, rtol=0):
        raise ValueError(f"masked_average: weights must sum to 1 over the K models (got sums "
                         f"{sums.flatten()[:4].tolist()}...); normalise them, e.g. with dynamic_weights()")


def _as_float(mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.float32) for k, v in mask.items()}


def _float_spec(spec: FlatSpec) -> FlatSpec:
    return FlatSpec(spec.names, spec.shapes, tuple(torch.float32 for _ in spec.names))
