"""n per-node copies of the trainable tail as ONE stacked state, evaluated in one batched call.

Stacked state (docs/ARCHITECTURE.md, stacked node state): a dict name -> tensor [n, *shape], all from the same weights
(P2P-FT: all nodes fine-tune the same pretrained model). `forward_nodes(params, feats) -> logits [n, B, C]`
and `loss_and_grads(params, feats, labels) -> (loss [n], grads {name: [n, ...]})` compute all nodes at once:

- `vmap`: `torch.func.vmap` over `functional_call` of the tail (any architecture, Swin included), gradients
  from `vmap(grad_and_value(...))`.
- `fold`: the node dimension folded into the batch for the weight-free attention (one SDPA call over n*B
  sequences) and per-node `baddbmm` for every linear layer, per-node affine LayerNorm; gradients from one
  backward of the sum of per-node mean losses (nodes share no parameter, so it yields each node's gradient).
  Supported for timm ViT/DeiT blocks (`Block`, `Attention`, `Mlp`, `LayerScale`) and the `VitHead`.

Measured on the 2-core CPU (1 torch thread, min of 15 interleaved rounds, per-node loss + grads of the last
block + head, 65 tokens, ms): dim 64, 32 nodes x 2: fold 35.5, vmap 54.6, per-node loop 86.2; 8 x 4: fold 32.8,
vmap 41.6, loop 51.3; 16 x 8: fold 134, vmap 164, loop 157; dim 192 (tiny ViT), 8 x 8: fold 210, vmap 243,
loop 219; 4 x 32: fold 567, vmap 689, loop 548. Fold is the faster batched path everywhere (vmap pays the
per-node SDPA fallback: docs/ARCHITECTURE.md, stacked node state); both beat the loop where per-node batches are
small and tie with it where each node's matmuls alone fill the core. `method="auto"` (default) uses fold for
ViT/DeiT tails and vmap otherwise (Swin: windowed attention with relative-position tables).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerScale, Mlp, global_pool_nlc
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from .split import Tail, VitHead

Params = dict[str, torch.Tensor]
METHODS = ("auto", "vmap", "fold")
_PARAMLESS = (nn.Identity, nn.Dropout, nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh)


def stack_params(trainable: nn.Module, n_nodes: int) -> Params:
    """[n, *shape] copies of `trainable`'s parameters, identical at every node, detached."""
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
    return {k: p.detach().unsqueeze(0).repeat(n_nodes, *([1] * p.dim())) for k, p in trainable.named_parameters()}


def node_params(params: Params, i: int) -> Params:
    """Node i's parameters (views) from the stacked state, e.g. for `functional_call(trainable, ...)`."""
    return {k: v[i] for k, v in params.items()}


def load_node(trainable: nn.Module, params: Params, i: int) -> None:
    """Copy node i's stacked weights into `trainable` in place (and so into the model it was split from)."""
    own = dict(trainable.named_parameters())
    if set(own) != set(params):
        raise ValueError(f"stacked params do not match the module: missing {sorted(set(own) - set(params))[:5]}, "
                         f"extra {sorted(set(params) - set(own))[:5]}; stack them from this module")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(params[name][i])


def _fold_unsupported(module: nn.Module) -> str | None:
    """Why the fold path cannot evaluate `module` (None when it can)."""
    if isinstance(module, Tail):
        return next((r for r in map(_fold_unsupported, [*module.blocks, module.norm, module.head]) if r), None)
    if isinstance(module, Block):
        a = module.attn
        if type(a) is not Attention or not isinstance(a.q_norm, nn.Identity) or not isinstance(
                a.k_norm, nn.Identity) or not isinstance(a.norm, nn.Identity) or a.gate is not None:
            return f"attention {type(a).__name__} with qk/scale norm or gating"
        if type(module.mlp) is not Mlp or not isinstance(module.mlp.norm, nn.Identity):
            return f"mlp {type(module.mlp).__name__}"
        parts = [module.norm1, module.norm2, module.ls1, module.ls2, module.drop_path1, module.drop_path2,
                 module.mlp.act, module.mlp.drop1, module.mlp.drop2]
        return next((r for r in map(_fold_unsupported, parts) if r), None)
    if isinstance(module, VitHead):
        if module.attn_pool is not None:
            return "attention pooling head"
        return next((r for r in map(_fold_unsupported, [module.fc_norm, module.head_drop, module.head]) if r), None)
    if isinstance(module, (nn.Linear, nn.LayerNorm, LayerScale, DropPath, *_PARAMLESS)):
        return None
    return f"module {type(module).__name__}"


class _Fold:
    """Per-node evaluation of a ViT tail with stacked params; activations are [n, B, ...]."""

    def __init__(self, params: Params, names: dict[nn.Module, str]):
        self.p, self.names = params, names

    def _w(self, module: nn.Module, attr: str) -> torch.Tensor | None:
        return self.p.get(f"{self.names[module]}{attr}")

    def __call__(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if isinstance(m, nn.Linear):
            flat = x.reshape(n, -1, x.shape[-1])
            w, b = self._w(m, "weight"), self._w(m, "bias")
            y = (torch.bmm(flat, w.transpose(1, 2)) if b is None
                 else torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2)))
            return y.reshape(*x.shape[:-1], w.shape[1])
        bshape = (n,) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        if isinstance(m, nn.LayerNorm):
            y = F.layer_norm(x, m.normalized_shape, eps=m.eps)
            w, b = self._w(m, "weight"), self._w(m, "bias")
            y = y if w is None else y * w.view(bshape)
            return y if b is None else y + b.view(bshape)
        if isinstance(m, LayerScale):
            return x * self._w(m, "gamma").view(bshape)
        if isinstance(m, Tail):
            for block in m.blocks:
                x = self(block, x)
            return self(m.head, self(m.norm, x))
        if isinstance(m, Block):
            x = x + self._paramless(m.drop_path1, self(m.ls1, self._attention(m.attn, self(m.norm1, x))))
            h = self._paramless(m.mlp.drop1, self._paramless(m.mlp.act, self(m.mlp.fc1, self(m.norm2, x))))
            h = self(m.mlp.fc2, h)
            return x + self._paramless(m.drop_path2, self(m.ls2, self._paramless(m.mlp.drop2, h)))
        if isinstance(m, VitHead):
            if m.head_dist is not None:
                cls, dist = self._paramless(m.head_drop, x[:, :, 0]), self._paramless(m.head_drop, x[:, :, 1])
                return (self(m.head, cls) + self(m.head_dist, dist)) / 2
            pooled = global_pool_nlc(x.flatten(0, 1), pool_type=m.global_pool, num_prefix_tokens=m.num_prefix_tokens,
                                     reduce_include_prefix=m.pool_include_prefix)
            return self(m.head, self._paramless(m.head_drop, self(m.fc_norm, pooled.unflatten(0, x.shape[:2]))))
        return self._paramless(m, x)

    @staticmethod
    def _paramless(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def _attention(self, a: Attention, x: torch.Tensor) -> torch.Tensor:
        n, b, t, _ = x.shape
        qkv = self(a.qkv, x).reshape(n * b, t, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=a.attn_drop.p if a.training else 0.0)
        out = out.transpose(1, 2).reshape(n, b, t, a.attn_dim)
        return self._paramless(a.proj_drop, self(a.proj, out))


class NodeStack:
    """Evaluate n nodes' copies of `trainable` from stacked params in one batched call.

    `method`: 'fold' (ViT/DeiT tails; the faster), 'vmap' (any tail) or 'auto' (fold where supported).
    Buffers (e.g. Swin's attention masks) are shared by all nodes. `amp_dtype` (e.g. torch.bfloat16 on CUDA,
    matching `FeatureCache`'s bf16 features), or the caller's own `torch.autocast`, runs the tail under
    autocast: each batch of features is upcast to the parameters' dtype (the residual stream stays there;
    vmap's backward also needs it), matmuls and attention run in bf16; parameters and gradients keep their dtype.
    """

    def __init__(self, trainable: nn.Module, method: str = "auto", amp_dtype: torch.dtype | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
        reason = _fold_unsupported(trainable) if method != "vmap" else None
        if method == "fold" and reason:
            raise ValueError(f"method='fold' cannot evaluate this tail ({reason}); use method='vmap'")
        self.trainable = trainable
        self.method = ("vmap" if reason else "fold") if method == "auto" else method
        self.amp_dtype = amp_dtype
        self.buffers = dict(trainable.named_buffers())
        self._names = {m: (name + "." if name else "") for name, m in trainable.named_modules()}

    def init_params(self, n_nodes: int) -> Params:
        """Identical per-node copies of the tail's current weights, [n, *shape]."""
        return stack_params(self.trainable, n_nodes)

    def _autocast(self, params: Params, feats: torch.Tensor) -> tuple[AbstractContextManager, torch.Tensor]:
        """(autocast context, features in the parameters' dtype). Under `amp_dtype` or a caller's own
        `torch.autocast`, features of another dtype (bf16 cache) are upcast; without autocast a mismatch is an error."""
        dtype = next(iter(params.values())).dtype
        if self.amp_dtype is not None:
            return torch.autocast(feats.device.type, dtype=self.amp_dtype), feats.to(dtype)
        if torch.is_autocast_enabled(feats.device.type):
            return nullcontext(), feats.to(dtype)
        if feats.is_floating_point() and feats.dtype != dtype:
            raise ValueError(f"feats are {feats.dtype} but params are {dtype}: pass amp_dtype={feats.dtype} "
                             "to NodeStack, run under torch.autocast, or convert the features")
        return nullcontext(), feats

    def _single(self, p: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.trainable, (p, self.buffers), (x,))

    def forward_nodes(self, params: Params, feats: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Logits [n, B, C] of every node; `feats` is [n, B, ...] per node, or [B, ...] with `shared=True`
        (every node evaluates the same batch, e.g. the common test set)."""
        n = next(iter(params.values())).shape[0]
        if not shared and feats.shape[0] != n:
            raise ValueError(f"feats has {feats.shape[0]} rows in dim 0 but params stack {n} nodes; pass "
                             "per-node feats [n, B, ...] or shared=True for one batch [B, ...]")
        amp, feats = self._autocast(params, feats)
        with amp:
            if self.method == "vmap":
                return vmap(self._single, in_dims=(0, None if shared else 0), randomness="different")(params, feats)
            if shared:
                feats = feats.unsqueeze(0).expand(n, *feats.shape)
            return _Fold(params, self._names)(self.trainable, feats)

    def loss_and_grads(self, params: Params, feats: torch.Tensor, labels: torch.Tensor,
                       loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                       ) -> tuple[torch.Tensor, Params]:
        """Per-node mean loss [n] and gradients {name: [n, ...]} for per-node batches feats [n, B, ...],
        labels [n, B]."""
        if labels.shape[:2] != feats.shape[:2]:
            raise ValueError(f"labels {tuple(labels.shape)} must be [n, B] matching feats {tuple(feats.shape)}")
        if self.method == "vmap":
            def node_loss(p: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return loss_fn(self._single(p, x), y)
            amp, feats = self._autocast(params, feats)
            with amp:
                grads, losses = vmap(grad_and_value(node_loss), randomness="different")(params, feats, labels)
            return losses.detach(), grads
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            logits = self.forward_nodes(leaves, feats)
            losses = vmap(loss_fn)(logits.to(next(iter(params.values())).dtype), labels)
            grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        return losses.detach(), dict(zip(leaves, grads))


def forward_nodes(trainable: nn.Module, params: Params, feats: torch.Tensor, shared: bool = False,
                  method: str = "auto") -> torch.Tensor:
    """Functional form of `NodeStack(trainable, method).forward_nodes(params, feats, shared)`."""
    return NodeStack(trainable, method).forward_nodes(params, feats, shared)
