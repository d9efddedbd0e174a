"""CUDA paths (skipped without a GPU): bf16 feature cache on the device and bf16-autocast per-node steps
agree with the float32 CPU reference."""

import pytest
import torch
from torch.utils.data import TensorDataset

from dflbench.vision import FeatureCache, NodeStack, split_for_cache

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_cuda_bf16_cache_and_node_step(make_model, family):
    model = make_model(family)
    prefix, trainable = split_for_cache(model, "last_block")
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(12, 3, 16, 16, generator=g), torch.randint(0, 5, (12,), generator=g)
    with torch.no_grad():
        ref_feats = prefix(images)
    stack_cpu = NodeStack(trainable)
    params = stack_cpu.init_params(3)
    ref_losses, ref_grads = stack_cpu.loss_and_grads(params, ref_feats.view(3, 4, *ref_feats.shape[1:]),
                                                     labels.view(3, 4))

    cache = FeatureCache(prefix, TensorDataset(images, labels), batch_size=5, device="cuda", progress=False)
    assert cache.features.dtype == torch.bfloat16 and cache.features.is_cuda
    torch.testing.assert_close(cache.features.float().cpu(), ref_feats, atol=0.1, rtol=0.05)
    feats, ys = cache.gather(torch.arange(12).view(3, 4))
    stack = NodeStack(trainable.cuda(), amp_dtype=torch.bfloat16)
    losses, grads = stack.loss_and_grads({k: v.cuda() for k, v in params.items()}, feats, ys)
    torch.testing.assert_close(losses.cpu(), ref_losses, atol=0.05, rtol=0.05)
    for name, g_ref in ref_grads.items():
        err = (grads[name].float().cpu() - g_ref).norm()
        assert err <= 0.1 * g_ref.norm() + 1e-4, name
