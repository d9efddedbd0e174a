"""FLOPs of one forward pass of a (masked) model: conv, linear and attention matmuls.

Counted as torch.utils.flop_counter counts them (2 FLOPs per multiply-accumulate; biases, norms, activations
and pooling are not counted). The paper's "MFP" column is millions of multiply-accumulates (LeNet-5 on 28 x 28
inputs: 0.283), reported here as `mfp`.

With masks, a weight counts only if it is kept and its input channel / feature is alive. Liveness is structural:
one float64 probe forward where every kept parameter entry is positive (1 / fan-in for weights, 1 for vectors),
every pruned entry is 0, float inputs are ones and BatchNorm uses mean 0 / variance 1. Kept paths then carry
positive values, so an input is all zero exactly when it is fed only by pruned units, not by chance (ReLU).
- conv: MACs = nnz(effective weight) * output positions * batch (groups respected);
- linear: MACs = nnz(effective weight) * rows of the input;
- timm-style attention (`qkv`, `proj`, `num_heads`): QK^T and AV, 2 * batch * alive_heads * T^2 * head_dim
  MACs, a head being alive when its slice of the input to `proj` is not all zero (its qkv linear and `proj`
  are counted as linears).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .candidates import CONV_TYPES, is_attention

UNSUPPORTED = (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


@dataclass(frozen=True)
class FlopCount:
    """MACs per module (name -> MACs) of one forward pass on the given inputs; `flops` = 2 * MACs."""

    per_module: dict

    @property
    def macs(self) -> int:
        return int(sum(self.per_module.values()))

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def mflops(self) -> float:
        return self.flops / 1e6

    @property
    def mfp(self) -> float:
        """The paper's MFP: millions of multiply-accumulates."""
        return self.macs / 1e6


def _alive_in(x: Tensor, channel_dim: int) -> Tensor:
    dims = [d for d in range(x.ndim) if d != channel_dim % x.ndim]
    return x.detach().abs().amax(dim=dims) > 0


def _probe_params(params: dict, masks: dict) -> dict[str, Tensor]:
    out = {}
    for n, p in params.items():
        value = 1.0 / (p[0].numel()) if p.ndim >= 2 else 1.0
        keep = masks[n].to(p.device) if n in masks else torch.ones(p.shape, dtype=torch.bool, device=p.device)
        out[n] = keep.to(torch.float64) * value
    return out


def _probe_buffers(model: nn.Module) -> dict[str, Tensor]:
    out = {}
    for n, b in model.named_buffers():
        if n.endswith("running_mean"):
            out[n] = torch.zeros_like(b, dtype=torch.float64)
        elif n.endswith("running_var"):
            out[n] = torch.ones_like(b, dtype=torch.float64)
        else:
            out[n] = b.double() if b.is_floating_point() else b
    return out


def _probe_inputs(inputs) -> tuple:
    args = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    return tuple(torch.ones_like(a, dtype=torch.float64) if a.is_floating_point() else a for a in args)


def _record(model: nn.Module, params: dict, buffers: dict, args: tuple) -> dict[str, tuple]:
    """(module, input, output) of each conv / linear / attention call (last call wins per module name)."""
    seen: dict[str, tuple] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, CONV_TYPES + (nn.Linear,)):
            handles.append(mod.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (m, i[0], o))))
        elif is_attention(mod):
            handles.append(mod.proj.register_forward_pre_hook(
                lambda m, i, name=name, attn=mod: seen.__setitem__(name, (attn, i[0], None))))
    try:
        with torch.no_grad():
            functional_call(model, (params, buffers), args, strict=False)
    finally:
        for h in handles:
            h.remove()
    return seen


def count_flops(model: nn.Module, inputs, masks: Mapping[str, Tensor] | None = None) -> FlopCount:
    """MACs / FLOPs of `model(inputs)` with `masks` (name -> bool, True = kept) applied; the model is unchanged.

    Modules called more than once per forward are counted once (their last call); the model runs in eval mode.
    """
    bad = [n for n, m in model.named_modules() if isinstance(m, UNSUPPORTED)]
    if bad:
        raise ValueError(f"FLOP counting does not support torch.nn attention modules {bad}; use timm-style "
                         "attention (qkv / proj / num_heads)")
    params = dict(model.named_parameters())
    masks = dict(masks or {})
    unknown = [n for n in masks if n not in params]
    if unknown:
        raise ValueError(f"masks name unknown parameters {unknown}")
    masked = {n: (p.detach() * masks[n].to(p.device, p.dtype) if n in masks else p.detach())
              for n, p in params.items()}
    was_training = model.training
    model.eval()
    try:
        calls = _record(model, _probe_params(params, masks), _probe_buffers(model), _probe_inputs(inputs))
    finally:
        model.train(was_training)
    if not calls:
        raise ValueError("the model has no conv, linear or attention layers to count")
    pre = {}
    for name, mod in model.named_modules():
        pre[id(mod)] = f"{name}." if name else ""
    out: dict[str, int] = {}
    for name, (mod, x, y) in calls.items():
        weight_name = pre[id(mod)] + "weight"
        if is_attention(mod):
            heads = mod.num_heads
            hd = x.shape[-1] // heads
            alive = x.reshape(-1, heads, hd).abs().amax(dim=(0, 2)) > 0
            tokens = x.shape[-2] if x.ndim == 3 else 1
            batch = x.numel() // (tokens * x.shape[-1])
            out[name] = int(2 * batch * int(alive.sum()) * tokens * tokens * hd)
            continue
        w = masked[weight_name] if weight_name in masked else mod.weight.detach()
        if isinstance(mod, nn.Linear):
            alive_in = _alive_in(x, -1)
            nnz = int(((w != 0) & alive_in.unsqueeze(0)).sum())
            out[name] = nnz * (x.numel() // x.shape[-1])
        else:
            alive_in = _alive_in(x, 1)
            groups = mod.groups
            cols = alive_in.reshape(groups, -1)[torch.arange(w.shape[0]) // (w.shape[0] // groups)]
            nnz = int(((w != 0) & cols.reshape(*cols.shape, *([1] * (w.ndim - 2)))).sum())
            out[name] = nnz * (y[0, 0].numel() * y.shape[0])
    return FlopCount(out)


def structured_mfp(model: nn.Module, inputs, masks: Tensor) -> Tensor:
    """MFP `[D]` (float64, millions of MACs per forward of `inputs`) of `model` under each row of the flat keep-masks
    `masks [D, P]` (laid out as the concatenation of `model.named_parameters()`), from `count_flops` with that row's
    masks: the structural count, where a pruned unit also removes the weights that read its dead output (a weight
    counts when kept and its input channel is alive). Devices with equal masks are counted once."""
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]
    if masks.ndim != 2 or masks.shape[1] != sum(sizes):
        raise ValueError(f"masks must be [D, {sum(sizes)}] (the model's flat parameters), got {tuple(masks.shape)}")
    unique, inverse = torch.unique(masks.detach().bool().cpu(), dim=0, return_inverse=True)
    mfp = torch.tensor([count_flops(model, inputs, {n: part.reshape(p.shape) for (n, p), part in
                                                    zip(named, torch.split(row, sizes))}).mfp for row in unique],
                       dtype=torch.float64)
    return mfp[inverse].to(masks.device)
