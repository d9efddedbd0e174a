"""`topology_from_spec`: a run's topology option (a generator's name, seeded where it draws, or adjacency:PATH)."""

import numpy as np
import pytest
import torch

from dflbench.topology import erdos_renyi, exponential, topology_from_spec


def test_a_name_builds_the_generator_and_a_drawing_one_gets_the_seed():
    assert torch.equal(topology_from_spec("exponential", 8).weights, exponential(8).weights)
    for seed in (0, 3):
        assert torch.equal(topology_from_spec("erdos_renyi", 6, seed).weights, erdos_renyi(6, seed=seed).weights)
    a, b = topology_from_spec("erdos_renyi", 6, 0), topology_from_spec("erdos_renyi", 6, 3)
    assert not torch.equal(a.weights, b.weights)


def test_an_adjacency_file_and_the_errors(tmp_path):
    ring = np.roll(np.eye(4), 1, axis=1)
    np.savetxt(tmp_path / "ring.txt", ring)
    topo = topology_from_spec(f"adjacency:{tmp_path / 'ring.txt'}", 4)
    assert topo.name == "ring" and topo.is_strongly_connected()
    with pytest.raises(ValueError, match="shape"):
        topology_from_spec(f"adjacency:{tmp_path / 'ring.txt'}", 5)
    with pytest.raises(FileNotFoundError, match="adjacency file"):
        topology_from_spec("adjacency:/nonexistent.npy", 4)
    with pytest.raises(ValueError, match="unknown topology 'moebius'; valid: .*exponential.*adjacency:PATH"):
        topology_from_spec("moebius", 4)
    np.savetxt(tmp_path / "cut.txt", np.eye(4))
    with pytest.raises(ValueError, match="strongly connected"):
        topology_from_spec(f"adjacency:{tmp_path / 'cut.txt'}", 4)


def test_a_second_generator_of_a_registered_name_is_refused():
    from dflbench.topology import list_topologies, register_topology

    def ring(n):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="topology 'ring' is already registered"):
        register_topology(ring)
    assert "ring" in list_topologies() and topology_from_spec("ring", 4).n == 4
