"""SyncSimulator P2P-FT epoch (cached features, stacked nodes, one batched grad call) vs per-node loops.

Reference 1: the naive implementation, one module copy per node, the frozen prefix recomputed on every batch,
autograd per node, mixing as per-node weighted sums (P2P-FT Algorithm 1 written literally).
Reference 2: the same per-node loop on the cached features (isolates the stacked/batched evaluation).
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from dflbench.data import BatchTransform, ImageData, partition
from dflbench.engines import SyncConfig, SyncSimulator, TailInputs
from dflbench.mixing import PushPull
from dflbench.topology import column_stochastic, make_topology, row_stochastic
from dflbench.vision import create_model, split_for_cache

N, BATCH, PER_NODE, LR = 8, 8, 16, 0.05


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(8).repeat_interleave(N * PER_NODE // 8)
    data = ImageData("bench", torch.randint(0, 256, (len(y), 3, 16, 16), dtype=torch.uint8, generator=g), y,
                     torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=g), y[:32],
                     tuple(map(str, range(8))))
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", 8, img_size=16, patch_size=4, embed_dim=32, depth=4,
                         num_heads=2).eval()
    transform = BatchTransform.from_model(model)
    prefix, tail = split_for_cache(model, "last_block")
    cfg = SyncConfig(epochs=1, batch_size=BATCH, seed=0)
    inputs = TailInputs(prefix, transform, data, cfg)
    topo = make_topology("erdos_renyi", N, seed=1)
    A, B = row_stochastic(topo), column_stochastic(topo)
    part = partition(y.numpy(), N, "shards:2", seed=0)
    sim = SyncSimulator(tail, inputs, part.indices, PushPull(A, B, lr=LR), cfg)
    return data, model, prefix, tail, transform, inputs, sim, A, B


def _naive_epoch(setup, cached: bool):
    data, model, prefix, tail, transform, inputs, sim, A, B = setup
    tails = [copy.deepcopy(tail) for _ in range(N)]
    names = [k for k, _ in tail.named_parameters()]

    def grad(i, c):
        idx = sim.sampler.batch(c)[i]
        with torch.no_grad():
            feats = inputs.train_cache.features[idx] if cached else prefix(transform(data.x_train[idx]))
        for p in tails[i].parameters():
            p.grad = None
        F.cross_entropy(tails[i](feats), data.y_train[idx]).backward()
        return [p.grad.clone() for p in tails[i].parameters()]

    def run():
        tau = [grad(i, 0) for i in range(N)]
        g_old = tau
        for k in range(sim.sampler.steps_per_epoch):
            half = [[p.detach() - LR * t for p, t in zip(tails[j].parameters(), tau[j])] for j in range(N)]
            with torch.no_grad():
                for i in range(N):
                    for q, p in enumerate(tails[i].parameters()):
                        p.copy_(sum(A[i, j].item() * half[j][q] for j in range(N)))
            g_new = [grad(i, k + 1) for i in range(N)]
            pre = [[t + a - b for t, a, b in zip(tau[j], g_new[j], g_old[j])] for j in range(N)]
            tau = [[sum(B[i, j].item() * pre[j][q] for j in range(N)) for q in range(len(names))] for i in range(N)]
            g_old = g_new

    return run


def _sim_epoch(setup):
    sim = setup[6]

    def run():
        sim._calls = 0
        state = sim.algorithm.init(sim.stack.init_params(N), sim.grad_fn)
        for _ in range(sim.sampler.steps_per_epoch):
            state = sim.algorithm.step(state, sim.grad_fn)

    return run


def test_p2pft_epoch_vs_uncached_per_node_loop(setup, assert_ratio):
    # ratio over 16 CI-mode runs (8 idle, 8 beside a CPU-bound process), 2-core CPU, 1 thread: min 4.20, median 4.9, max
    # 6.79
    assert_ratio(_sim_epoch(setup), _naive_epoch(setup, cached=False), at_least=3.1, rounds=3, warmup=1,
                 nodes=N, batch=BATCH, steps=setup[6].sampler.steps_per_epoch, model="vit tiny d32 x4 blocks, 16px")


def test_p2pft_epoch_vs_cached_per_node_loop(setup, assert_ratio):
    # ratio over 16 CI-mode runs (8 idle, 8 beside a CPU-bound process), 2-core CPU, 1 thread: min 3.17, median 3.4, max
    # 3.56;
    # 11 runs beside four busy processes: min 2.45, median 3.2
    assert_ratio(_sim_epoch(setup), _naive_epoch(setup, cached=True), at_least=2.0, rounds=3, warmup=1,
                 nodes=N, batch=BATCH, steps=setup[6].sampler.steps_per_epoch, model="vit tiny d32 x4 blocks, 16px")
