"""GPU throughput of the P2P-FT model side (skipped without CUDA): ViT-S/16-224, DeiT-S and Swin-S at batch 256
in bf16 autocast, random init (throughput does not depend on the weights). Writes
.benchmarks/vision-gpu-<model>.json with images/s for: the frozen prefix, the cached last-block training step,
the uncached frozen-backbone training step, and `forward_nodes` for 4 nodes x 64 images (fold vs vmap).
Copy the numbers into bench/RESULTS.md with the machine name.
"""

import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dflbench.vision import NodeStack, create_model, split_for_cache

pytestmark = pytest.mark.gpu
RESULTS = Path(__file__).resolve().parent.parent / ".benchmarks"


def images_per_second(fn, n_images: int, device: torch.device, rounds: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n_images * rounds / (time.perf_counter() - start)


def measure(name: str, device: torch.device, batch: int = 256, nodes: int = 4, **kwargs) -> dict:
    """images/s of prefix, cached and uncached last-block steps, and forward_nodes per method for `name`."""
    torch.manual_seed(0)
    model = create_model(name, 100, **kwargs).to(device).eval()
    prefix, trainable = split_for_cache(model, "last_block")
    size = model.pretrained_cfg["input_size"][1:] if "img_size" not in kwargs else (kwargs["img_size"],) * 2
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, 3, *size, device=device, generator=g)
    labels = torch.randint(0, 100, (batch,), device=device, generator=g)
    amp = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    with torch.no_grad(), amp():
        feats = prefix(images)
    opt = torch.optim.SGD(trainable.parameters(), lr=1e-3)

    def step(forward):
        def run():
            opt.zero_grad(set_to_none=True)
            with amp():
                loss = F.cross_entropy(forward(), labels)
            loss.backward()
            opt.step()
        return run

    def run_prefix():
        with torch.inference_mode(), amp():
            prefix(images)

    record = {"model": name, "batch": batch, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "prefix_images_per_s": images_per_second(run_prefix, batch, device),
              "cached_train_images_per_s": images_per_second(step(lambda: trainable(feats)), batch, device),
              "uncached_train_images_per_s": images_per_second(step(lambda: model(images)), batch, device)}
    node_feats = feats[: batch - batch % nodes].view(nodes, -1, *feats.shape[1:])
    for method in ("fold", "vmap"):
        try:
            stack = NodeStack(trainable, method, amp_dtype=torch.bfloat16)
        except ValueError:  # fold supports ViT/DeiT tails only
            continue
        params = stack.init_params(nodes)

        def fwd(stack=stack, params=params):
            with torch.no_grad():
                stack.forward_nodes(params, node_feats)

        record[f"forward_nodes_{method}_images_per_s"] = images_per_second(fwd, node_feats.shape[:2].numel(), device)
    return record


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "deit_small_patch16_224",
                                  "swin_small_patch4_window7_224"])
def test_vision_gpu_throughput(name):
    record = measure(name, torch.device("cuda"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"vision-gpu-{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, path)
    print(json.dumps(record))
    assert record["cached_train_images_per_s"] > record["uncached_train_images_per_s"]
