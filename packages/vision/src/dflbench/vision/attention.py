"""Attention maps of ViT/DeiT (P2P-FT Fig. 2): the CLS token's attention and attention rollout.

timm's fused attention (SDPA) never materialises the weights, so `capture_attention` recomputes them from
each block's input with forward hooks: A = softmax(q k^T / sqrt(d_head)) from the block's own `qkv` (and
q/k norms). The model itself is not modified (no flag flipped, no weight touched); hooks are removed on exit,
also on exceptions.

Rollout (Abnar & Zuidema 2020, eq. "attention rollout"): per layer l, Ã_l = (mean_heads A_l + I) / 2, rows
renormalised to sum to 1; R = Ã_L Ã_{L-1} ... Ã_1. R is row-stochastic; the CLS row over the patch tokens is
the map.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from timm.layers.attention import Attention
from torch import nn

from .models import architecture_of, eval_mode


def _vit_only(model: nn.Module, what: str) -> None:
    if architecture_of(model) != "vit":
        raise ValueError(f"{what} needs global self-attention (ViT/DeiT); {type(model).__name__} uses windowed "
                         "attention: use a gradient method ('gradcam' or 'integrated_gradients') instead")


@contextmanager
def capture_attention(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward appends each block's attention weights [B, heads, T, T] (in block order)."""
    _vit_only(model, "capture_attention")
    maps: list[torch.Tensor] = []

    def hook(attn: Attention, args: tuple, _output: torch.Tensor) -> None:
        x = args[0]
        b, t, _ = x.shape
        q, k, _v = attn.qkv(x).reshape(b, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        maps.append(((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1).detach())

    handles = []
    try:
        for block in model.blocks:
            if type(block.attn) is not Attention:
                raise ValueError(f"cannot capture attention of {type(block.attn).__name__}; supported: timm "
                                 "Attention (ViT, DeiT)")
            handles.append(block.attn.register_forward_hook(hook))
        yield maps
    finally:
        for handle in handles:
            handle.remove()


def attention_weights(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Attention [B, heads, T, T] of every block for `images` (eval mode, no grad)."""
    with capture_attention(model) as maps, eval_mode(model), torch.no_grad():
        model(images)
    return maps


def _grid(model: nn.Module) -> tuple[int, int]:
    return tuple(model.patch_embed.grid_size)


def cls_attention(model: nn.Module, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Head-averaged attention of the CLS token to the patch tokens in block `layer`, [B, grid_h, grid_w]."""
    maps = attention_weights(model, images)
    if not -len(maps) <= layer < len(maps):
        raise ValueError(f"layer {layer} out of range for a model with {len(maps)} blocks")
    cls_row = maps[layer].mean(1)[:, 0, model.num_prefix_tokens:]
    return cls_row.reshape(len(images), *_grid(model))


def rollout(attentions: list[torch.Tensor]) -> torch.Tensor:
    """Rollout R = Ã_L ... Ã_1 with Ã_l = rownorm((mean_heads A_l + I) / 2); [B, T, T], rows sum to 1."""
    eye = torch.eye(attentions[0].shape[-1], dtype=attentions[0].dtype, device=attentions[0].device)
    result = eye.expand_as(attentions[0][:, 0])
    for attn in attentions:
        a = (attn.mean(1) + eye) / 2
        result = (a / a.sum(-1, keepdim=True)) @ result
    return result


def attention_rollout(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Rollout map of the CLS token over the patch tokens, [B, grid_h, grid_w]."""
    r = rollout(attention_weights(model, images))
    return r[:, 0, model.num_prefix_tokens:].reshape(len(images), *_grid(model))
