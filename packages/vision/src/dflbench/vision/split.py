"""Split a model at the freezing cut: `trainable(prefix(x)) == model(x)` (P2P-FT trains only the tail).

The frozen prefix gives the same features every epoch (without random augmentation), so it runs once
(`FeatureCache`) and training runs on the tail only. Both parts share the model's modules (no copies):
training the tail trains the model.

ViT/DeiT prefix: patch embedding, class (and distillation) token + position embedding, blocks before the cut;
tail: the trailing blocks, final norm, pooling and head (distilled DeiT: the mean of `head` on the class token
and `head_dist` on the distillation token, timm's inference/fine-tuning output).
Swin prefix: patch embedding, stages up to the cut; tail: the trailing blocks (with any patch merging between
them), final norm, `ClassifierHead` (global average pool + linear).
"""

from __future__ import annotations

import torch
from timm.layers import global_pool_nlc
from torch import nn

from .policies import FreezingPolicy, apply_policy, layout, parse_policy


class VitPrefix(nn.Module):
    """Frozen ViT/DeiT front: tokens [B, T, D] after the blocks before the cut (and the final norm if it is frozen).

    Registers the whole model (its embedding code lives in model methods), so `.to()` moves all of it.
    """

    def __init__(self, model: nn.Module, blocks: tuple[nn.Module, ...], norm: nn.Module):
        super().__init__()
        self.model = model
        self.blocks = nn.Sequential(*blocks)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        return self.norm(self.blocks(x))


class VitHead(nn.Module):
    """timm VisionTransformer(.Distilled).forward_head as a standalone module over tokens [B, T, D]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.attn_pool = getattr(model, "attn_pool", None)
        self.fc_norm = model.fc_norm
        self.head_drop = model.head_drop
        self.head = model.head
        self.head_dist = getattr(model, "head_dist", None)
        self.global_pool = model.global_pool
        self.num_prefix_tokens = model.num_prefix_tokens
        self.pool_include_prefix = getattr(model, "pool_include_prefix", False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_dist is not None:
            cls, dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
            return (self.head(cls) + self.head_dist(dist)) / 2
        if self.attn_pool is not None:
            x = self.attn_pool(x if self.pool_include_prefix else x[:, self.num_prefix_tokens:])
        else:
            x = global_pool_nlc(x, pool_type=self.global_pool, num_prefix_tokens=self.num_prefix_tokens,
                                reduce_include_prefix=self.pool_include_prefix)
        return self.head(self.head_drop(self.fc_norm(x)))


class Tail(nn.Module):
    """Trainable back: `head(norm(blocks(features)))`; its parameters are exactly the policy's trainable ones."""

    def __init__(self, blocks: tuple[nn.Module, ...], norm: nn.Module, head: nn.Module):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.norm = norm
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(x)))


def split_for_cache(model: nn.Module, policy: str | FreezingPolicy = "last_block") -> tuple[nn.Module, nn.Module]:
    """(prefix, trainable) with `trainable(prefix(x)) == model(x)`; the 'full' policy gives (Identity, model).

    Applies the policy's `requires_grad` flags too (see `apply_policy`).
    """
    policy = parse_policy(policy)
    apply_policy(model, policy)
    if policy.blocks is None:
        return nn.Identity(), model
    lay = layout(model, policy)
    prefix_norm = nn.Identity() if lay.norm_trains else model.norm
    tail_norm = model.norm if lay.norm_trains else nn.Identity()
    if lay.architecture == "vit":
        return VitPrefix(model, lay.prefix_ops, prefix_norm), Tail(lay.tail_ops, tail_norm, VitHead(model))
    prefix = nn.Sequential(model.patch_embed, *lay.prefix_ops, prefix_norm)
    return prefix, Tail(lay.tail_ops, tail_norm, model.head)
