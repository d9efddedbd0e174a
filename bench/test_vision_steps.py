"""dflbench-vision CPU benchmarks (quick mode in CI): same-run ratios against the reference paths.

- cached-feature training step (last block + head on cached tokens) vs the uncached frozen-backbone step
  (whole tiny ViT forward, backward into the trainable part);
- per-node loss + gradients / logits for many nodes: `NodeStack` vmap and fold vs a per-node loop.
Torch runs single-threaded here: for these tiny models, OpenMP wake-ups on the shared 2-core machine cost
more than the ops (measured ~100x slower small-op latency with 2 threads under load).
"""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from dflbench.vision import NodeStack, create_model, node_params, split_for_cache

TINY_VIT = dict(img_size=32, patch_size=4, depth=4)  # the demo's tiny ViT: 65 tokens, dim 192


def test_vision_cached_step_vs_uncached(assert_ratio):
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", 10, **TINY_VIT).eval()
    prefix, trainable = split_for_cache(model, "last_block")
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    with torch.no_grad():
        feats = prefix(images)
    opt = torch.optim.SGD(trainable.parameters(), lr=1e-3)

    def step(forward):
        def run():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(forward(), labels).backward()
            opt.step()
        return run

    # ratio over 16 CI-mode runs (8 idle, 8 beside a CPU-bound process), 2-core CPU, 1 thread: min 1.84, median 2.0, max
    # 2.18
    assert_ratio(step(lambda: trainable(feats)), step(lambda: model(images)), at_least=1.4,
                 model="vit_tiny_patch16_224 img 32 patch 4 depth 4", batch=16, policy="last_block")


NODES, PER_NODE = 32, 2  # many nodes, small per-node batches: where the per-node loop's overhead shows


@pytest.fixture(scope="module")
def node_setup():
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", 10, img_size=32, patch_size=4, depth=2, embed_dim=64,
                         num_heads=1).eval()
    _, trainable = split_for_cache(model, "last_block")
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(NODES, PER_NODE, 65, 64, generator=g)
    labels = torch.randint(0, 10, (NODES, PER_NODE), generator=g)
    return trainable, NodeStack(trainable).init_params(NODES), feats, labels


def loop_grads(trainable, params, feats, labels):
    for i in range(NODES):
        p = {k: v.detach().requires_grad_(True) for k, v in node_params(params, i).items()}
        torch.autograd.grad(F.cross_entropy(functional_call(trainable, p, (feats[i],)), labels[i]), list(p.values()))


# ratio over 16 CI-mode runs (8 idle, 8 beside a CPU-bound process), 2-core CPU, 1 thread:
# vmap min 1.67, median 1.9, max 2.03; fold min 2.10, median 2.3, max 2.44. On the 2026-12-07 host (load average
# ~10; idle / beside a CPU-heavy / beside a memory-heavy process): vmap 1.42 / 1.42 / 1.36, fold 1.68 / 1.62 / 1.55
# (fold failed its 1.6 floor beside the memory-heavy process). Floors at 0.8 of the lowest, above 1.05 x the highest
# / 1.5 (bench/RESULTS.md, "Calibration").
GRAD_FLOORS = {"vmap": 1.1, "fold": 1.25}


@pytest.mark.parametrize("method", list(GRAD_FLOORS))
def test_vision_node_grads_vs_loop(assert_ratio, node_setup, method):
    trainable, params, feats, labels = node_setup
    stack = NodeStack(trainable, method)
    assert_ratio(lambda: stack.loss_and_grads(params, feats, labels),
                 lambda: loop_grads(trainable, params, feats, labels), at_least=GRAD_FLOORS[method],
                 nodes=NODES, per_node_batch=PER_NODE, method=method, what="per-node loss + grads")


# ratio over 16 CI-mode runs (8 idle, 8 beside a CPU-bound process), 2-core CPU, 1 thread:
# vmap min 1.80, median 1.9, max 2.03; fold min 2.11, median 2.3, max 2.56; beside four busy processes (11 runs) vmap
# min 1.32, fold min 2.15. On the 2026-12-07 host (idle / CPU-heavy / memory-heavy neighbour): vmap 1.50 / 1.41 /
# 1.36, fold 1.84 / 1.76 / 1.70. Floors at 0.8 of the lowest, above 1.05 x the highest / 1.5.
FORWARD_FLOORS = {"vmap": 1.1, "fold": 1.35}


@pytest.mark.parametrize("method", list(FORWARD_FLOORS))
def test_vision_forward_nodes_vs_loop(assert_ratio, node_setup, method):
    trainable, params, feats, _ = node_setup
    stack = NodeStack(trainable, method)

    def fast():
        with torch.no_grad():
            stack.forward_nodes(params, feats)

    def loop():
        with torch.no_grad():
            torch.stack([functional_call(trainable, node_params(params, i), (feats[i],)) for i in range(NODES)])

    assert_ratio(fast, loop, at_least=FORWARD_FLOORS[method], nodes=NODES, per_node_batch=PER_NODE, method=method,
                 what="forward_nodes logits")
