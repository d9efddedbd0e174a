"""GPU reproduction (issue 5): ViT-S/16-224, 4 nodes, 50,000 CIFAR-sized synthetic images, P2P-FT, 100 epochs.

Skipped without CUDA. Records wall times to .benchmarks/p2pft-gpu.json: the cached run end to end (feature cache
+ 100 epochs + per-epoch evaluation of every node on 10,000 test images) and one uncached epoch (the prefix
recomputed on every batch), and asserts the cached epoch is faster than the uncached one. Sizes shrink with
DFLBENCH_GPU_SMOKE=1 (a quick check of the script itself).
"""

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dflbench.data import BatchTransform, ImageData, partition
from dflbench.engines import SyncConfig, SyncSimulator, TailInputs
from dflbench.io import atomic_write_json
from dflbench.mixing import from_topology
from dflbench.topology import make_topology
from dflbench.vision import create_model, split_for_cache

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

SMOKE = os.environ.get("DFLBENCH_GPU_SMOKE") == "1"
TRAIN, TEST, EPOCHS = (2_000, 400, 2) if SMOKE else (50_000, 10_000, 100)


def _synthetic(seed=0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    y_tr, y_te = torch.arange(TRAIN) % 10, torch.arange(TEST) % 10
    x_tr = torch.randint(0, 256, (TRAIN, 3, 32, 32), dtype=torch.uint8, generator=g)
    x_te = torch.randint(0, 256, (TEST, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageData("synthetic-cifar", x_tr, y_tr, x_te, y_te, tuple(map(str, range(10))))


def _simulator(data, cache: bool, epochs: int):
    torch.manual_seed(0)
    model = create_model("vit_small_patch16_224", 10).eval()
    prefix, tail = split_for_cache(model, "last_block")
    cfg = SyncConfig(epochs=epochs, batch_size=32, seed=0, cache=cache, device="cuda")
    inputs = TailInputs(prefix, BatchTransform.from_model(model), data, cfg, progress=False)
    part = partition(data.y_train.numpy(), 4, "classes", dataset="cifar10")
    alg = from_topology("pushpull", make_topology("exponential", 4), 1e-3)
    return SyncSimulator(tail, inputs, part.indices, alg, cfg)


def _timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def test_p2pft_vit_small_gpu():
    data = _synthetic()
    cached, cached_s = _timed(lambda: _simulator(data, True, EPOCHS).run(progress=False))
    uncached_sim = _simulator(data, False, 1)
    uncached, uncached_s = _timed(lambda: uncached_sim.run(progress=False))
    cached_epoch_s = np.mean(np.diff([0.0] + [h["wall_time_s"] for h in cached.history[1:]]))
    uncached_epoch_s = uncached.history[-1]["wall_time_s"] - uncached.history[0]["wall_time_s"]
    record = {"model": "vit_small_patch16_224", "nodes": 4, "train": TRAIN, "test": TEST, "epochs": EPOCHS,
              "cached_end_to_end_s": cached_s, "cached_epoch_s": float(cached_epoch_s),
              "uncached_epoch_s": float(uncached_epoch_s), "uncached_one_epoch_end_to_end_s": uncached_s,
              "steps_per_epoch": uncached_sim.sampler.steps_per_epoch, "device": torch.cuda.get_device_name(),
              "final_mean_accuracy": cached.mean_accuracy}
    atomic_write_json(Path(__file__).resolve().parent.parent / ".benchmarks" / "p2pft-gpu.json", record)
    print(record)
    assert cached_epoch_s < uncached_epoch_s
