"""Stochastic normalisations (properties over random strongly connected digraphs), spectra, Perron vectors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dflbench.topology import (
    Topology,
    column_stochastic,
    complete,
    erdos_renyi,
    from_adjacency,
    is_column_stochastic,
    is_doubly_stochastic,
    is_row_stochastic,
    metropolis_hastings,
    mixing_matrices,
    perron_vector,
    ring,
    row_stochastic,
    spectral_gap,
    uniform,
)


@st.composite
def weighted_digraphs(draw):
    n = draw(st.integers(2, 12))
    p = draw(st.floats(0.2, 0.9))
    seed = draw(st.integers(0, 10_000))
    topo = erdos_renyi(n, p, directed=True, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    w = topo.weights * (0.1 + torch.rand(n, n, generator=gen, dtype=torch.float64))
    return Topology(w, name="random")


@settings(max_examples=60, deadline=None)
@given(weighted_digraphs())
def test_a_row_b_column_with_w_pattern(topo):
    a, b = row_stochastic(topo), column_stochastic(topo)
    assert is_row_stochastic(a) and is_column_stochastic(b)
    assert torch.equal(a > 0, topo.adjacency) and torch.equal(b > 0, topo.adjacency)
    w = topo.weights
    assert torch.allclose(a, w / w.sum(1, keepdim=True)) and torch.allclose(b, w / w.sum(0, keepdim=True))


@settings(max_examples=60, deadline=None)
@given(weighted_digraphs())
def test_perron_vectors_are_fixed_points(topo):
    a, b = row_stochastic(topo), column_stochastic(topo)
    pi = perron_vector(a)
    assert torch.allclose(pi @ a, pi, atol=1e-10) and abs(pi.sum().item() - 1) < 1e-12 and (pi > 0).all()
    v = perron_vector(b)
    assert torch.allclose(b @ v, v, atol=1e-10) and abs(v.sum().item() - 1) < 1e-12 and (v > 0).all()


@settings(max_examples=40, deadline=None)
@given(weighted_digraphs())
def test_metropolis_is_symmetric_doubly_stochastic_on_undirected_pattern(topo):
    m = metropolis_hastings(topo)
    assert is_doubly_stochastic(m) and torch.allclose(m, m.T) and (m >= 0).all()
    und = topo.adjacency | topo.adjacency.T
    assert torch.equal(m > 0, und | torch.eye(topo.n, dtype=torch.bool))


def test_complete_uniform_gap_is_one():
    assert spectral_gap(uniform(complete(7))) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n", [3, 5, 8, 13])
def test_metropolis_ring_gap_closed_form(n):
    # every node has degree 2: w = 1/3 to each neighbour and itself -> eigenvalues (1 + 2 cos(2 pi k / n)) / 3
    m = metropolis_hastings(ring(n))
    expected = 1 - max(abs((1 + 2 * math.cos(2 * math.pi * k / n)) / 3) for k in range(1, n))
    assert spectral_gap(m) == pytest.approx(expected, abs=1e-12)


def test_uniform_on_regular_graph_is_doubly_stochastic():
    assert is_doubly_stochastic(uniform(ring(6)))
    assert is_row_stochastic(uniform(from_adjacency(torch.tensor([[1.0, 1.0, 0], [0, 1, 1], [1, 1, 1]]))))


def test_directed_ring_a_not_doubly_stochastic_for_unequal_weights():
    w = ring(4, directed=True).weights.clone()
    w[1, 0] = 3.0
    a = row_stochastic(w)
    assert is_row_stochastic(a) and not is_column_stochastic(a)


def test_single_node_gap():
    assert spectral_gap(torch.ones(1, 1)) == 1.0


@pytest.mark.parametrize("fn, message", [
    (row_stochastic, "rows \\[1\\] sum to 0"),
    (column_stochastic, "columns \\[1\\] sum to 0"),
])
def test_zero_sums(fn, message):
    w = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=message):
        fn(w)


def test_missing_self_loop_is_an_error_unless_allowed():
    w = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="nodes \\[0\\] have no self-loop"):
        row_stochastic(w)
    assert is_row_stochastic(row_stochastic(w, self_loops=False))


def test_perron_vector_needs_stochastic():
    with pytest.raises(ValueError, match="row- or column-stochastic"):
        perron_vector(torch.tensor([[2.0, 1.0], [1.0, 2.0]]))


def test_mixing_matrices_of_a_small_digraph_by_hand():
    """Node 0 hears 1 and 2, node 1 hears 0, node 2 hears 1 (plus self-loops): A, B and MH written out by hand."""
    topo = from_adjacency(torch.tensor([[0, 1, 1], [1, 0, 0], [0, 1, 0]], dtype=torch.float64))
    mats = mixing_matrices(topo)
    assert list(mats) == ["A", "B", "MH"]
    h, t = 1 / 2, 1 / 3
    expected = {"A": [[t, t, t], [h, h, 0], [0, h, h]],
                "B": [[h, t, h], [h, t, 0], [0, t, h]],
                "MH": [[t, t, t], [t, t, t], [t, t, t]]}  # undirected: a triangle, every degree 2
    for key, m in expected.items():
        torch.testing.assert_close(mats[key], torch.tensor(m, dtype=torch.float64), rtol=0, atol=1e-15)
