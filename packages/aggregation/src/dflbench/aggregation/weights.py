"""Dynamic, staleness- and loss-aware aggregation weights, AEDFL eq. 4.6-4.10.

Slot k = 0 is the local model, k >= 1 the cached neighbor models; `active[..., k]` says whether slot k takes part
(padding and the policy's selection switch slots off; slot 0 is always active). With the floors below,

    c_k   = s_k / sqrt(max(delta_t_k, staleness_floor) * max(loss_k, loss_floor))
    w'_k  = a_k * lambda_k * c_k                                                         (4.6)
    w_k   = w'_k / S,   S = sum_k w'_k                                                   (4.7)

Division-by-zero rule: the local model (delta_t = 0) and any model at least as new as the local one (delta_t <= 0)
count as staleness `staleness_floor` (default 1, the smallest positive staleness in local-update counts), and a loss
below `loss_floor` counts as `loss_floor`; above the floors eq. 4.6 is used as printed.

Gradient of the local loss w.r.t. lambda (4.8). Eq. 4.10 as printed keeps only part of the quotient rule; the
derivative implemented (and checked against autograd in the tests) is, with g the gradient of F_i at the
aggregated local model:

  plain average (4.9), mu = sum_k w_k m_k:         dF/dlambda_j = a_j c_j / S * g^T (m_j - mu)
  masked average (4.11), mu^p = sum_k w'_k o_k^p m_k^p / D^p,  D^p = sum_k w'_k o_k^p,  local model o_0 * mu:
                                                   dF/dlambda_j = a_j c_j * sum_p g^p o_0^p o_j^p (m_j^p - mu^p) / D^p
  (entries with D^p = 0 keep the local value and do not depend on lambda; with all masks 1, D^p = S and the two agree).
  `out_mask` replaces o_0 in the numerator where the local model's mask changes after the average (AEDFL re-prunes
  the full aggregate: x = o_new * mu, so dF/dlambda_j sums g^p o_new^p o_j^p (m_j^p - mu^p) / D^p; D^p keeps o_0).

The update (4.8) changes lambda_j for the neighbours j (Algorithm 1 line 4 loops over j in M): the weights are
invariant to scaling all lambdas, so the local lambda stays fixed as the scale. Two step rules (`step_rule`):

  "plain"       lambda_j <- lambda_j - eta_lambda * dF/dlambda_j                          (4.8 as printed)
  "normalized"  lambda_j <- lambda_j - eta_lambda * dF/dlambda_j / max_k |dF/dlambda_k|    (the default)

then clipped to [lambda_min, lambda_max] (lambda_min > 0 keeps the weights a distribution). Departure (stated):
the raw gradient is of the order of g^T (m_j - mu), which shrinks as training converges and as models agree, so
with any fixed eta_lambda the printed rule either never moves lambda (measured: lambda stayed in [0.957, 1.002] over
a whole run with eta_lambda = 0.01) or explodes early. The normalized step keeps eq. 4.8's direction and moves the
most sensitive neighbour's lambda by exactly eta_lambda per update (a sign/normalized-gradient step); a device whose
gradient is all zero keeps its lambdas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STEP_RULES = ("normalized", "plain")
# model values per device and block of `lambda_grad`: 4 devices x 8 LeNet-5 models in 2 MB blocks of float64 took
# 1.7 ms per device, 1.9 in 8 MB blocks, 6.7 in one pass (one CPU thread)
BLOCK_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class DynamicWeightsConfig:
    """eta_lambda (`lr`), the step rule of eq. 4.8 (module docstring), the initial lambda, the floors of the
    division-by-zero rule and the range of lambda."""

    lr: float = 0.1
    step_rule: str = "normalized"
    init_lambda: float = 1.0
    staleness_floor: float = 1.0
    loss_floor: float = 1e-6
    lambda_min: float = 1e-4
    lambda_max: float = 10.0

    def __post_init__(self):
        if self.step_rule not in STEP_RULES:
            raise ValueError(f"DynamicWeightsConfig.step_rule must be one of {STEP_RULES}, got {self.step_rule!r}")
        if not self.lambda_max >= self.init_lambda:
            raise ValueError("DynamicWeightsConfig.lambda_max must be >= init_lambda")
        for name in ("init_lambda", "staleness_floor", "loss_floor", "lambda_min"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DynamicWeightsConfig.{name} must be > 0, got {getattr(self, name)}")
        if not self.lr >= 0:
            raise ValueError(f"DynamicWeightsConfig.lr must be >= 0, got {self.lr}")
        if self.init_lambda < self.lambda_min:
            raise ValueError("DynamicWeightsConfig.init_lambda must be >= lambda_min")


def importance_scale(samples, delta_t, loss, config: DynamicWeightsConfig = DynamicWeightsConfig()) -> torch.Tensor:
    """c_k = s_k / sqrt(max(delta_t_k, floor) * max(loss_k, floor)): eq. 4.6 without lambda, shape `[..., K]`."""
    samples, delta_t, loss = _tensors(samples, delta_t, loss)
    if (samples < 0).any():
        raise ValueError("importance_scale: sample counts s_k must be >= 0")
    if not (torch.isfinite(delta_t).all() and torch.isfinite(loss).all()):
        raise ValueError("importance_scale: staleness and loss must be finite")
    return samples / torch.sqrt(delta_t.clamp_min(config.staleness_floor) * loss.clamp_min(config.loss_floor))


def dynamic_weights(lam, samples, delta_t, loss, active=None,
                    config: DynamicWeightsConfig = DynamicWeightsConfig()) -> torch.Tensor:
    """Eq. 4.6 + 4.7: weights `[..., K]` over the active slots, summing to 1 (inactive slots get 0)."""
    wp, _, _ = _importance(lam, samples, delta_t, loss, active, config)
    return wp / wp.sum(-1, keepdim=True)


def lambda_grad(lam, samples, delta_t, loss, models, grad, masks=None, active=None,
                config: DynamicWeightsConfig = DynamicWeightsConfig(), block_size: int | None = None,
                out_mask=None) -> torch.Tensor:
    """dF/dlambda `[..., K]` (module docstring) for models `[..., K, P]`, grad `[..., P]`, masks `[..., K, P]` and
    the local model's mask after the average `out_mask [..., P]` (default `masks[..., 0, :]`).

    Computed in the precision of lambda and the models together (float64 for float64 lambdas and float32 models:
    each block is converted as it is read), over `block_size` entries at a time (default: BLOCK_ELEMENTS values per
    device, BLOCK_ELEMENTS / K entries: a device's result does not depend on the others in its batch), so no
    `[..., K, P]` temporary is made: every term is a sum over entries."""
    wp, c, a = _importance(lam, samples, delta_t, loss, active, config)
    models = torch.as_tensor(models)
    grad = torch.as_tensor(grad)
    if tuple(models.shape[:-1]) != tuple(wp.shape) or tuple(grad.shape) != tuple(models.shape[:-2]) + models.shape[-1:]:
        raise ValueError(f"lambda_grad: models {tuple(models.shape)} must be [..., K, P] with K = {wp.shape[-1]} "
                         f"and grad {tuple(grad.shape)} must be [..., P]")
    if masks is not None and masks.shape != models.shape:
        raise ValueError(f"lambda_grad: masks shape {tuple(masks.shape)} must equal models shape "
                         f"{tuple(models.shape)}")
    if out_mask is not None and (masks is None or out_mask.shape != grad.shape):
        raise ValueError(f"lambda_grad: out_mask {tuple(out_mask.shape)} needs masks and the shape of grad "
                         f"{tuple(grad.shape)}")
    dtype = torch.promote_types(wp.dtype, models.dtype)
    wp = wp.to(dtype)
    p = models.shape[-1]
    block = block_size or max(1, BLOCK_ELEMENTS // wp.shape[-1])
    term = torch.zeros(wp.shape, dtype=dtype, device=models.device)
    for start in range(0, p, block):
        cols = slice(start, start + block)
        m, g = models[..., cols].to(dtype), grad[..., cols].to(dtype)
        if masks is None:
            term += (m @ g.unsqueeze(-1)).squeeze(-1)                     # g^T m_k
            continue
        o = masks[..., cols].to(dtype)
        om = m * o
        den = (wp.unsqueeze(-2) @ o).squeeze(-2)                          # D^p
        kept = den > 0
        safe = torch.where(kept, den, torch.ones_like(den))
        mu = torch.where(kept, (wp.unsqueeze(-2) @ om).squeeze(-2) / safe, m[..., 0, :])
        out = o[..., 0, :] if out_mask is None else out_mask[..., cols].to(dtype)
        r = torch.where(kept, g * out / safe, torch.zeros_like(den))
        term += (om @ r.unsqueeze(-1)).squeeze(-1) - (o @ (r * mu).unsqueeze(-1)).squeeze(-1)
    if masks is None:
        s = wp.sum(-1, keepdim=True)
        return (a * c).to(dtype) / s * (term - (wp / s * term).sum(-1, keepdim=True))     # g^T mu = sum_k w_k g^T m_k
    return (a * c).to(dtype) * term


class DynamicWeights:
    """The control parameters lambda `[num_devices, K]` of many devices and their eq. 4.8 updates.

    Every method takes `devices` (a LongTensor of distinct device indices, default all) and per-slot tensors with
    a leading `[len(devices)]` dimension, so devices whose events share a time slot update in one batched call.
    """

    def __init__(self, num_devices: int, num_slots: int, config: DynamicWeightsConfig = DynamicWeightsConfig(),
                 device=None, dtype: torch.dtype = torch.float32):
        if num_devices < 1 or num_slots < 1:
            raise ValueError(f"DynamicWeights needs num_devices >= 1 and num_slots >= 1, got {num_devices}, "
                             f"{num_slots}")
        self.config = config
        self.lam = torch.full((num_devices, num_slots), config.init_lambda, device=device, dtype=dtype)

    def _index(self, devices) -> torch.Tensor:
        if devices is None:
            return torch.arange(self.lam.shape[0], device=self.lam.device)
        devices = torch.as_tensor(devices, dtype=torch.long, device=self.lam.device).reshape(-1)
        if devices.numel() and (devices.min() < 0 or devices.max() >= self.lam.shape[0]):
            raise ValueError(f"DynamicWeights: device indices must be in [0, {self.lam.shape[0]})")
        if devices.unique().numel() != devices.numel():
            raise ValueError("DynamicWeights: device indices must be distinct within one call")
        return devices

    def weights(self, samples, delta_t, loss, active=None, devices=None) -> torch.Tensor:
        """Current weights (4.6, 4.7) of `devices`, `[D, K]`."""
        return dynamic_weights(self.lam[self._index(devices)], samples, delta_t, loss, active, self.config)

    def step(self, models, grad, samples, delta_t, loss, masks=None, active=None, devices=None,
             out_mask=None) -> torch.Tensor:
        """Eq. 4.8 for `devices` given the gradient `grad [D, P]` at their aggregated models; returns new weights.

        `models [D, K, P]` (slot 0 local) and `masks` are the ones the aggregate with the current weights was built
        from (eq. 4.9, or 4.11 when masks are given); `out_mask`: the local mask applied after it (`lambda_grad`).
        """
        idx = self._index(devices)
        lam = self.lam[idx]
        g = lambda_grad(lam, samples, delta_t, loss, models, grad, masks, active, self.config,
                        out_mask=out_mask).to(lam.dtype)
        g[..., 0] = 0.0
        if self.config.step_rule == "normalized":
            scale = g.abs().amax(-1, keepdim=True)
            g = torch.where(scale > 0, g / scale.clamp_min(torch.finfo(g.dtype).tiny), torch.zeros_like(g))
        self.lam[idx] = (lam - self.config.lr * g).clamp(self.config.lambda_min, self.config.lambda_max)
        return self.weights(samples, delta_t, loss, active, idx)


def _tensors(*xs):
    ts = [torch.as_tensor(x) for x in xs]
    dtype = torch.get_default_dtype()
    for t in ts:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    shape = ts[0].shape
    if any(t.shape != shape for t in ts):
        raise ValueError(f"per-slot tensors must share one shape [..., K], got {[tuple(t.shape) for t in ts]}")
    return [t.to(dtype) for t in ts]


def _importance(lam, samples, delta_t, loss, active, config):
    lam, samples, delta_t, loss = _tensors(lam, samples, delta_t, loss)
    c = importance_scale(samples, delta_t, loss, config)
    if active is None:
        a = torch.ones_like(c)
    else:
        active = torch.as_tensor(active, device=c.device)
        if active.shape != c.shape:
            raise ValueError(f"active shape {tuple(active.shape)} must equal the slot shape {tuple(c.shape)}")
        if not active[..., 0].all():
            raise ValueError("active[..., 0] (the local model) must be True: the local model always takes part")
        a = active.to(c.dtype)
    if (lam <= 0).any():
        raise ValueError("lambda must be > 0")
    wp = a * lam * c
    if (wp.sum(-1) <= 0).any():
        raise ValueError("all active importances are 0 (every active slot has s_k = 0); give the local model "
                         "its sample count")
    return wp, c, a


def static_weights(active, degree) -> torch.Tensor:
    """AEDFL-0's static topology weights `[..., K]` over slot 0 (local) and K neighbour slots: each active neighbour
    slot gets 1 / (degree + 1), the uniform weight of the device's row of the exponential graph's W (eq. 3.2, with
    `degree` [...] its in-neighbour count), and the local model keeps the rest, 1 - m / (degree + 1) for m active
    neighbours: a neighbour left out (not selected, not yet arrived) leaves its weight with the local model, as in
    asynchronous gossip. The weights are a distribution whenever m <= degree."""
    active = torch.as_tensor(active, dtype=torch.bool)
    degree = torch.as_tensor(degree, device=active.device)
    if not active[..., 0].all():
        raise ValueError("static_weights: active[..., 0] (the local model) must be True")
    m = active[..., 1:].sum(-1)
    if (m > degree).any():
        raise ValueError("static_weights: more active neighbour slots than in-neighbours")
    share = 1.0 / (degree.to(torch.float64) + 1.0)
    w = active[..., 1:].to(torch.float64) * share.unsqueeze(-1)
    return torch.cat([(1.0 - w.sum(-1, keepdim=True)), w], -1)
