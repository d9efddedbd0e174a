"""Bytes sent per node against a hand count, and the consensus distances against per-node loops."""

from __future__ import annotations

import pytest
import torch

from dflbench.mixing import (
    DGD,
    DPSGD,
    GTDGD,
    GTDGDATC,
    Centralized,
    DGDEq1,
    Local,
    PushPull,
    PushSum,
    consensus_distance,
    pairwise_consensus_distance,
    run,
    total_bytes,
)
from dflbench.topology import column_stochastic, from_adjacency, metropolis_hastings, row_stochastic

# directed graph on 4 nodes, edges src -> dst: 0->1, 1->2, 2->3, 3->0, 0->2
# out-degrees (self excluded): node 0: 2, node 1: 1, node 2: 1, node 3: 1
# undirected neighbours (Metropolis weights): 0: {1, 2, 3}, 1: {0, 2}, 2: {0, 1, 3}, 3: {0, 2}
ADJ = torch.zeros(4, 4)
for src, dst in [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]:
    ADJ[dst, src] = 1.0
TOPO = from_adjacency(ADJ)
OUT_DIRECTED = torch.tensor([2, 1, 1, 1])
OUT_UNDIRECTED = torch.tensor([3, 2, 3, 2])
STEPS = 3


def params32():
    """A float32 dict: 2*3 + 5 = 11 floats = 44 bytes per node."""
    return {"w": torch.zeros(4, 2, 3), "b": torch.zeros(4, 5)}


def grad(tree):
    return {k: torch.ones_like(v) for k, v in tree.items()}


@pytest.mark.parametrize("alg,per_step", [
    (PushPull(row_stochastic(TOPO), column_stochastic(TOPO), 0.1), OUT_DIRECTED * 44 * 2),  # theta and tau
    (GTDGD(row_stochastic(TOPO), 0.1), OUT_DIRECTED * 44 * 2),  # theta and tau
    (GTDGDATC(row_stochastic(TOPO), 0.1), OUT_DIRECTED * 44 * 2),
    (DGD(row_stochastic(TOPO), 0.1), OUT_DIRECTED * 44),
    (DGDEq1(row_stochastic(TOPO), 0.1), OUT_DIRECTED * 44),  # theta once; node i computes its gradients at them
    (DPSGD(row_stochastic(TOPO), 0.1), OUT_DIRECTED * 44),
    (DGD(metropolis_hastings(TOPO), 0.1), OUT_UNDIRECTED * 44),  # a symmetrised graph's W uses the reverse links
    (PushSum(column_stochastic(TOPO), 0.1), OUT_DIRECTED * (44 + 4)),  # y and the float32 weight w
    (Centralized(0.1), torch.full((4,), 44)),  # each node's gradient once
    (Local(0.1), torch.zeros(4, dtype=torch.long)),
], ids=["pushpull", "gtdgd", "gtdgd_atc", "dgd", "dgd_eq1", "dpsgd", "dgd-metropolis", "pushsum", "centralized",
        "local"])
def test_bytes_sent_matches_a_hand_count(alg, per_step):
    state = run(alg, grad, params32(), STEPS)
    assert state.bytes_sent.dtype == torch.int64
    assert torch.equal(state.bytes_sent, STEPS * per_step)
    assert total_bytes(state.bytes_sent) == STEPS * int(per_step.sum())


def test_bytes_count_the_dtype():
    state = run(PushPull(row_stochastic(TOPO), column_stochastic(TOPO), 0.1), lambda x: x,
                torch.ones(4, 7, dtype=torch.float64), 1)
    assert torch.equal(state.bytes_sent, OUT_DIRECTED * 7 * 8 * 2)


def test_consensus_distances_against_loops():
    g = torch.Generator().manual_seed(0)
    tree = {"a": torch.randn(5, 2, 3, generator=g, dtype=torch.float64),
            "b": torch.randn(5, 4, generator=g, dtype=torch.float64)}
    rows = [torch.cat([tree["a"][i].flatten(), tree["b"][i]]) for i in range(5)]
    mean = sum(rows) / 5
    expected = sum(float((r - mean).pow(2).sum()) for r in rows) / 5
    assert consensus_distance(tree).item() == pytest.approx(expected, rel=1e-12)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    assert pairwise_consensus_distance(tree).item() == pytest.approx(
        sum(float((rows[i] - rows[j]).norm()) for i, j in pairs) / len(pairs), rel=1e-12)
    squared = pairwise_consensus_distance(tree, squared=True).item()
    assert squared == pytest.approx(sum(float((rows[i] - rows[j]).pow(2).sum()) for i, j in pairs) / len(pairs),
                                    rel=1e-12)
    # identity: mean over pairs of ||x_i - x_j||^2 = 2 n / (n - 1) * consensus distance
    assert squared == pytest.approx(2 * 5 / 4 * expected, rel=1e-12)
    same = torch.ones(3, 4)
    assert consensus_distance(same).item() == 0.0 and pairwise_consensus_distance(same).item() == 0.0
    assert pairwise_consensus_distance(torch.ones(1, 4)).item() == 0.0


def test_masked_pairwise_consensus_distance_against_loop():
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(5, 40, generator=g) > 0.4
    x = torch.randn(5, 40, generator=g, dtype=torch.float64) * masks
    loop = [torch.linalg.vector_norm((x[i] - x[j]) * (masks[i] & masks[j])).item()
            for i in range(5) for j in range(i + 1, 5)]
    assert pairwise_consensus_distance(x, masks=masks).item() == pytest.approx(sum(loop) / len(loop), rel=1e-10)
    squared = pairwise_consensus_distance(x, squared=True, masks=masks).item()
    assert squared == pytest.approx(sum(v * v for v in loop) / len(loop), rel=1e-10)
    # models equal wherever both keep an entry: distance 0 whatever the masks
    same = torch.randn(40, generator=g, dtype=torch.float64) * masks
    assert pairwise_consensus_distance(same, masks=masks).item() == pytest.approx(0.0, abs=1e-12)
    assert pairwise_consensus_distance(same).item() > 1.0
