"""Gradient attributions through captum, for every family (the only map for Swin's windowed attention).

- `gradcam`: captum `LayerGradCam` (Selvaraju et al.: relu(sum_c mean_xy(dy/dF_c) F_c)) on the last feature
  map: Swin's last-stage output, ViT/DeiT's patch tokens entering the last block (the last block's own patch
  outputs do not reach a CLS-token head). Token layouts are exposed channel-first through `ChannelsFirstProbe`.
- `integrated_gradients`: captum `IntegratedGradients` from a black image, |attribution| summed over channels.
Both explain the predicted class unless `target` is given.
"""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, LayerGradCam
from torch import nn

from .models import architecture_of, eval_mode


class ChannelsFirstProbe(nn.Module):
    """`model` re-run with its last feature map passing through `probe` as [B, C, h, w] (output unchanged)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.architecture = architecture_of(model)
        self.probe = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.architecture == "swin":
            f = m.layers(m.patch_embed(x))
            f = self.probe(f.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            return m.forward_head(m.norm(f))
        t = m.blocks[:-1](m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x)))))
        p = m.num_prefix_tokens
        patches = t[:, p:].transpose(1, 2).reshape(t.shape[0], t.shape[2], *m.patch_embed.grid_size)
        patches = self.probe(patches).flatten(2).transpose(1, 2)
        return m.forward_head(m.norm(m.blocks[-1](torch.cat([t[:, :p], patches], 1))))


def _targets(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int | None) -> torch.Tensor | int:
    if target is not None:
        return target
    with torch.no_grad():
        return model(images).argmax(-1)


def gradcam(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int | None = None) -> torch.Tensor:
    """Grad-CAM map [B, h, w] on the last feature map (patch grid for ViT, last-stage grid for Swin)."""
    wrapped = ChannelsFirstProbe(model)
    with eval_mode(model):
        cam = LayerGradCam(wrapped, wrapped.probe).attribute(
            images, target=_targets(model, images, target), relu_attributions=True)
    return cam[:, 0].detach()


def integrated_gradients(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int | None = None,
                         n_steps: int = 32) -> torch.Tensor:
    """Pixel map [B, H, W]: |IntegratedGradients| (black baseline, `n_steps`) summed over colour channels."""
    with eval_mode(model):
        attr = IntegratedGradients(model).attribute(images, target=_targets(model, images, target), n_steps=n_steps)
    return attr.abs().sum(1).detach()
