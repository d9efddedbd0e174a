"""Attention capture, rollout and captum attributions against references; the model is left unchanged."""

import copy

import numpy as np
import pytest
import torch

from dflbench.vision import (
    ChannelsFirstProbe,
    attention_rollout,
    attention_weights,
    capture_attention,
    cls_attention,
    gradcam,
    integrated_gradients,
    rollout,
)


def timm_unfused_attention(model, images):
    """Reference: timm's own non-fused path, softmax weights read at `attn_drop` (identity in eval)."""
    ref_model = copy.deepcopy(model).eval()
    maps = []
    for block in ref_model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda m, a, out: maps.append(out.detach()))
    with torch.no_grad():
        ref_model(images)
    return maps


@pytest.mark.parametrize("family", ["vit", "deit"])
def test_captured_attention_equals_timm_softmax(make_model, images, family):
    model = make_model(family)
    got, ref = attention_weights(model, images), timm_unfused_attention(model, images)
    assert len(got) == len(model.blocks)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    cls = cls_attention(model, images, layer=1)
    p = model.num_prefix_tokens
    assert cls.shape == (4, 4, 4)
    torch.testing.assert_close(cls.flatten(1), ref[1].mean(1)[:, 0, p:])


def test_rollout_equals_equation_loop(make_model, images):
    """Abnar & Zuidema: Ã = rownorm((mean_h A + I)/2), R = Ã_L ... Ã_1; rows of R sum to 1."""
    model = make_model("deit")
    attns = attention_weights(model, images)
    r = rollout(attns)
    for b in range(len(images)):
        expected = np.eye(attns[0].shape[-1])
        for a in attns:
            layer = (a[b].mean(0).double().numpy() + np.eye(len(expected))) / 2
            expected = (layer / layer.sum(1, keepdims=True)) @ expected
        np.testing.assert_allclose(r[b].double().numpy(), expected, atol=1e-5)
    torch.testing.assert_close(r.sum(-1), torch.ones(r.shape[:2]))
    maps = attention_rollout(model, images)
    assert maps.shape == (4, *model.patch_embed.grid_size)
    torch.testing.assert_close(maps.flatten(1), r[:, 0, model.num_prefix_tokens:])


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(m.training, getattr(m, "fused_attn", None), len(m._forward_hooks)) for m in model.modules()])


def assert_unchanged(model, before):
    state, flags = snapshot(model)
    assert flags == before[1]
    assert all(torch.equal(state[k], v) for k, v in before[0].items())
    assert all(p.grad is None for p in model.parameters())


def test_model_unchanged_after_capture_even_on_error(make_model, images):
    model = make_model("vit").train()
    before = snapshot(model)
    attention_rollout(model, images)
    cls_attention(model, images)
    gradcam(model, images)
    assert_unchanged(model, before)
    with pytest.raises(KeyError):
        with capture_attention(model) as maps:
            model(images)
            assert len(maps) == len(model.blocks)
            raise KeyError("failure while the hooks are installed")
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="out of range"):
        cls_attention(model, images, layer=7)
    assert_unchanged(model, before)


def test_swin_has_no_global_attention(make_model, images):
    with pytest.raises(ValueError, match="windowed attention: use a gradient method"):
        attention_rollout(make_model("swin"), images)


def manual_gradcam(model, images, target, feature_module):
    """Grad-CAM from autograd on a module's output: relu(sum_c mean_xy(dy/dF) F), channel-last features."""
    feats = []
    handle = feature_module.register_forward_hook(lambda m, a, out: feats.append(out))
    logits = model(images)
    handle.remove()
    f = feats[0]
    grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), f)[0]
    return torch.relu((grads.mean(dim=(1, 2), keepdim=True) * f).sum(-1)).detach(), f


@pytest.mark.parametrize("family", ["swin", "vit"])
def test_gradcam_equals_autograd_reference(make_model, images, family):
    model = make_model(family)
    target = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(ChannelsFirstProbe(model)(images), model(images))
    cam = gradcam(model, images, target=target)
    if family == "swin":
        ref, f = manual_gradcam(model, images, target, model.layers[-1])
        assert cam.shape == (4, *f.shape[1:3])
    else:  # patch tokens entering the last block, as a [B, gh, gw, C] grid
        feats = []
        handle = model.blocks[-2].register_forward_hook(lambda m, a, out: feats.append(out))
        logits = model(images)
        handle.remove()
        g = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), feats[0])[0][:, 1:]
        f = feats[0][:, 1:]
        ref = torch.relu((g.mean(1, keepdim=True) * f).sum(-1)).detach().reshape(4, 4, 4)
    torch.testing.assert_close(cam, ref, atol=1e-6, rtol=1e-4)
    assert (cam >= 0).all()


def test_integrated_gradients_equals_riemann_reference(make_model, images):
    """IG_i = x_i * int_0^1 dF(a x)/dx_i da (black baseline), midpoint rule with 128 steps as the reference."""
    model = make_model("swin")
    target = torch.tensor([1, 0, 4, 2])
    got = integrated_gradients(model, images, target=target, n_steps=64)
    alphas = (torch.arange(128) + 0.5) / 128
    x = (alphas.view(-1, 1, 1, 1, 1) * images).flatten(0, 1).requires_grad_(True)
    logits = model(x).view(len(alphas), len(images), -1)
    grads = torch.autograd.grad(logits.gather(2, target.expand(len(alphas), -1)[..., None]).sum(), x)[0]
    total = grads.view(len(alphas), *images.shape).sum(0)
    ref = (images * total / len(alphas)).abs().sum(1)
    assert got.shape == (4, 16, 16)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=2e-2)
