"""Graph generators, connectivity, registry and networkx round trips."""

import networkx as nx
import pytest
import torch

from dflbench.topology import (
    Topology,
    complete,
    erdos_renyi,
    exponential,
    from_adjacency,
    from_networkx,
    list_topologies,
    make_topology,
    one_peer_exponential,
    one_peer_exponential_period,
    ring,
    star,
    torus,
)


def eq_3_2_in_neighbors(n, i):
    """AEDFL eq. 3.2 written directly: j sends to i iff i == (j + 2**k) % n, 2**k < n."""
    hops, k = [], 0
    while 2**k < n:
        hops.append(2**k)
        k += 1
    return sorted({j for j in range(n) for h in hops if i == (j + h) % n and j != i})


@pytest.mark.parametrize("n", range(1, 65))
def test_exponential_matches_eq_3_2(n):
    topo = exponential(n)
    assert topo.n == n and topo.has_self_loops()
    for i in range(n):
        assert topo.in_neighbors(i) == eq_3_2_in_neighbors(n, i)
    assert topo.is_strongly_connected()


def test_one_peer_exponential_cycles_through_hops_and_unions_to_exponential():
    n = 16
    period = one_peer_exponential_period(n)
    assert period == 4
    union = torch.zeros(n, n, dtype=torch.bool)
    for t in range(period):
        topo = one_peer_exponential(n, t)
        for j in range(n):
            assert topo.out_neighbors(j) == [(j + 2 ** (t % period)) % n]
        union |= topo.adjacency
    assert torch.equal(union, exponential(n).adjacency)
    assert torch.equal(one_peer_exponential(n, period).adjacency, one_peer_exponential(n, 0).adjacency)


def test_ring_star_torus_complete_structure():
    assert ring(5, directed=True).out_neighbors(4) == [0]
    assert ring(5).in_neighbors(0) == [1, 4] and not ring(5).directed
    assert star(5).in_neighbors(0) == [1, 2, 3, 4] and star(5).in_neighbors(3) == [0]
    t = torus(rows=3, cols=4)
    assert t.n == 12 and all(len(t.in_neighbors(i)) == 4 for i in range(12))
    assert torus(12).n == 12
    assert complete(4).num_edges() == 12
    for topo in (ring(5, directed=True), star(5), t, complete(4)):
        assert topo.is_strongly_connected()


def test_erdos_renyi_seeded_and_strongly_connected():
    a, b = erdos_renyi(12, 0.3, seed=3), erdos_renyi(12, 0.3, seed=3)
    assert torch.equal(a.weights, b.weights) and a.is_strongly_connected()
    assert not torch.equal(a.weights, erdos_renyi(12, 0.3, seed=4).weights)
    assert not erdos_renyi(8, 0.5, directed=False, seed=1).directed


def test_erdos_renyi_gives_up_with_clear_error():
    with pytest.raises(ValueError, match="no strongly connected graph"):
        erdos_renyi(10, 0.0, max_tries=3)


def test_registry_lists_and_rejects():
    names = list_topologies()
    assert {"ring", "exponential", "complete", "star", "torus", "erdos_renyi", "one_peer_exponential"} <= set(names)
    assert make_topology("ring", 4, directed=True).directed
    with pytest.raises(ValueError, match="unknown topology 'moebius'.*exponential"):
        make_topology("moebius", 4)


def test_not_strongly_connected_names_the_nodes():
    # 0 -> 1 -> 2, nothing back
    adj = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.float64)
    topo = from_adjacency(adj, name="chain")
    assert not topo.is_strongly_connected()
    assert topo.unreachable() == {1: [0], 2: [0, 1]}
    with pytest.raises(ValueError,
                       match="not strongly connected: node 1 cannot reach \\[0\\]; node 2 cannot reach \\[0, 1\\]"):
        topo.check_strongly_connected()


@pytest.mark.parametrize("bad, message", [
    (torch.ones(2, 3), "must be square"),
    (torch.tensor([[1.0, -1.0], [0.0, 1.0]]), "negative weight -1 at \\[0, 1\\]"),
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "non-finite entry at \\[0, 1\\]"),
    (torch.zeros(0, 0), "empty"),
])
def test_bad_weight_matrices(bad, message):
    with pytest.raises(ValueError, match=message):
        Topology(bad)


def test_node_index_checked():
    with pytest.raises(ValueError, match="node 7 is out of range"):
        ring(4).in_neighbors(7)


@pytest.mark.parametrize("topo", [exponential(9), ring(6), star(5), erdos_renyi(7, 0.4, seed=2)])
def test_networkx_round_trip(topo):
    g = topo.to_networkx()
    assert isinstance(g, nx.DiGraph)
    assert g.number_of_edges() == topo.num_edges() + topo.n  # self-loops kept
    back = from_networkx(g)
    assert torch.equal(back.weights, topo.weights)


def test_from_networkx_undirected_goes_both_ways_and_needs_integer_labels():
    t = from_networkx(nx.path_graph(4))
    assert t.in_neighbors(1) == [0, 2] and not t.directed
    with pytest.raises(ValueError, match="labelled 0..n-1"):
        from_networkx(nx.relabel_nodes(nx.path_graph(3), {0: "a", 1: "b", 2: "c"}))


def test_from_adjacency_self_loops_policy():
    adj = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert from_adjacency(adj).has_self_loops()
    assert not from_adjacency(adj, self_loops=False).has_self_loops()


@pytest.mark.parametrize("n", [3, 4, 5, 8, 16])
def test_hub_ring_is_directed_strongly_connected_and_not_weight_balanced(n):
    from dflbench.topology import column_stochastic, hub_ring, row_stochastic

    topo = hub_ring(n).check_strongly_connected()
    expected = torch.eye(n, dtype=torch.float64)
    for j in range(n):
        expected[(j + 1) % n, j] = 1.0                 # the directed ring
        expected[j, 0] = 1.0                            # the hub sends to everyone
    assert torch.equal(topo.weights, expected)
    assert not torch.equal(topo.weights, topo.weights.T)
    a, b = row_stochastic(topo.weights), column_stochastic(topo.weights)
    assert (a - b).abs().max() > 0.1                    # push-pull's A and B differ: it is not gradient tracking
    # a regular graph makes them equal, which is why exponential(4) is not the P2P-FT default
    e = exponential(4).weights
    assert torch.allclose(row_stochastic(e), column_stochastic(e))


def test_hub_ring_refuses_two_nodes():
    from dflbench.topology import hub_ring

    with pytest.raises(ValueError, match="hub_ring needs an integer node count >= 3"):
        hub_ring(2)
