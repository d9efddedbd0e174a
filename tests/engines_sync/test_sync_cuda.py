"""CUDA path: bf16 feature cache + bf16 autocast, fp32 stacked params and mixing (skipped without CUDA)."""

import pytest
import torch

from dflbench.data import BatchTransform, partition
from dflbench.engines import SyncConfig, SyncSimulator, TailInputs
from dflbench.mixing import from_topology
from dflbench.topology import make_topology
from dflbench.vision import split_for_cache

pytestmark = pytest.mark.gpu


def _run(tiny_model, tiny_data, device):
    data, model = tiny_data(per_class=20), tiny_model()
    prefix, tail = split_for_cache(model, "last_block")
    cfg = SyncConfig(epochs=3, batch_size=8, seed=0, device=device)
    inputs = TailInputs(prefix, BatchTransform.from_model(model), data, cfg)
    part = partition(data.y_train.numpy(), 4, "classes")
    alg = from_topology("pushpull", make_topology("exponential", 4), 0.05)
    return inputs, SyncSimulator(tail, inputs, part.indices, alg, cfg).run()


def test_cuda_bf16_matches_cpu(tiny_model, tiny_data):
    inputs, gpu = _run(tiny_model, tiny_data, "cuda")
    assert inputs.train_cache.features.dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 and v.is_cuda for v in gpu.params.values())
    _, cpu = _run(tiny_model, tiny_data, "cpu")
    for k in cpu.params:
        torch.testing.assert_close(gpu.params[k].cpu(), cpu.params[k], atol=5e-2, rtol=5e-2)
    assert abs(gpu.mean_accuracy - cpu.mean_accuracy) <= 0.1
