"""Parameter layouts, checkpoints, dense vs sparse mixing, autocast, registry."""

from __future__ import annotations

import pytest
import torch

from dflbench.mixing import (
    DGD,
    GTDGD,
    RENAMED,
    Algorithm,
    Local,
    LocalCommunicator,
    MixingMatrix,
    MixingState,
    PushPull,
    PushSum,
    canonical_algorithm,
    flatten_rows,
    from_topology,
    get_algorithm,
    list_algorithms,
    make_algorithm,
    register_algorithm,
    run,
)
from dflbench.topology import column_stochastic, exponential, metropolis_hastings, one_peer_exponential, row_stochastic

ALL = ["centralized", "dgd", "dgd_eq1", "dpsgd", "gtdgd", "gtdgd_atc", "local", "pushpull", "pushsum"]


def as_dict(x: torch.Tensor) -> dict:
    n = x.shape[0]
    return {"a": x[:, :6].reshape(n, 2, 3).clone(), "b": x[:, 6:].clone()}


@pytest.mark.parametrize("name", ALL)
def test_dict_of_stacked_tensors_equals_flat(name, make_problem):
    prob = make_problem(n=6, q=8, m=10, seed=3)
    x0 = torch.randn(6, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def grad_dict(d):
        g, loss = prob.grad_fn(flatten_rows(d))
        return as_dict(g), loss

    kw = dict(momentum=0.5, weight_decay=0.01)
    flat = run(from_topology(name, exponential(6), 0.05, **kw), prob.grad_fn, x0, 12)
    tree = run(from_topology(name, exponential(6), 0.05, **kw), grad_dict, as_dict(x0), 12)
    assert set(tree.params) == {"a", "b"} and tree.params["a"].shape == (6, 2, 3)
    assert torch.allclose(flatten_rows(tree.params), flat.params, atol=1e-14, rtol=0)
    assert torch.equal(tree.bytes_sent, flat.bytes_sent)
    if flat.tracker is not None:
        assert torch.allclose(flatten_rows(tree.tracker), flat.tracker, atol=1e-14, rtol=0)


@pytest.mark.parametrize("name", ["pushpull", "pushsum", "dgd", "dgd_eq1"])
def test_checkpoint_resumes_bit_exactly(name, make_problem, tmp_path):
    prob = make_problem(n=6, seed=5)
    x0 = torch.zeros(6, prob.q, dtype=torch.float64)

    def make():
        return from_topology(name, exponential(6), 0.05, momentum=0.9)

    straight = run(make(), prob.grad_fn, x0, 10)
    half = run(make(), prob.grad_fn, x0, 4)
    torch.save(half.to_dict(), tmp_path / "ckpt.pt")
    state = MixingState.from_dict(torch.load(tmp_path / "ckpt.pt"))
    alg = make()
    for _ in range(6):
        state = alg.step(state, prob.grad_fn)
    assert state.step == 10 and state.grad_calls == straight.grad_calls
    for key, value in straight.to_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(getattr(state, key), value), key
    with pytest.raises(ValueError, match="missing keys"):
        MixingState.from_dict({"params": x0})


def test_dense_and_sparse_mixing_agree(make_problem, random_weights):
    n = 64
    W = random_weights("exponential", n, seed=9)
    prob = make_problem(n=n, q=5, seed=2)
    x0 = torch.zeros(n, 5, dtype=torch.float64)
    runs = [run(PushPull(row_stochastic(W), column_stochastic(W), 0.05, comm=LocalCommunicator(sparse=s)),
                prob.grad_fn, x0, 20) for s in (False, True)]
    assert torch.allclose(runs[0].params, runs[1].params, atol=1e-12, rtol=0)
    assert torch.allclose(runs[0].tracker, runs[1].tracker, atol=1e-12, rtol=0)


def test_automatic_sparse_choice():
    comm = LocalCommunicator()
    f32 = torch.zeros(1, dtype=torch.float32)
    big = MixingMatrix(row_stochastic(exponential(128)), "row")  # density 8 / 128
    small = MixingMatrix(row_stochastic(exponential(8)), "row")
    assert comm.uses_sparse(big, f32) and not comm.uses_sparse(small, f32)
    assert not comm.uses_sparse(big, f32.bfloat16())  # no CPU CSR kernel for bf16
    assert LocalCommunicator(sparse=True).uses_sparse(small, f32)
    assert not LocalCommunicator(sparse=False).uses_sparse(big, f32)
    assert not LocalCommunicator(sparse_max_density=0.01).uses_sparse(big, f32)


@pytest.mark.parametrize("sparse", [False, True])
def test_mix_ignores_autocast(sparse):
    """Under bf16 autocast the mix still runs in the tensors' own dtype (exactly the same result)."""
    m = MixingMatrix(column_stochastic(exponential(16)), "column")
    x = torch.randn(16, 33, generator=torch.Generator().manual_seed(0))
    comm = LocalCommunicator(sparse=sparse)
    plain = comm.mix(m, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = comm.mix(m, x)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)
    assert torch.allclose(plain, m.weights.float() @ x, atol=1e-5)


def test_grad_fn_may_return_plain_gradients(make_problem):
    prob = make_problem(n=6)
    x0 = torch.zeros(6, prob.q, dtype=torch.float64)
    with_aux = run(GTDGD(metropolis_hastings(exponential(6)), 0.05), prob.grad_fn, x0, 5)
    plain = run(GTDGD(metropolis_hastings(exponential(6)), 0.05), lambda x: prob.grad_fn(x)[0], x0, 5)
    assert torch.equal(with_aux.params, plain.params) and plain.aux is None and with_aux.aux.shape == (6,)


def test_run_calls_back_each_step(make_problem):
    prob = make_problem(n=6)
    seen = []
    run(DGD(metropolis_hastings(exponential(6)), 0.05), prob.grad_fn, torch.zeros(6, prob.q, dtype=torch.float64),
        4, callback=lambda s: seen.append(s.step))
    assert seen == [1, 2, 3, 4]


def test_registry():
    assert list_algorithms() == ALL
    assert get_algorithm("pushsum") is PushSum
    with pytest.raises(ValueError, match="valid algorithms: centralized, dgd"):
        get_algorithm("adam")
    alg = make_algorithm("pushpull", row_stochastic(exponential(4)), column_stochastic(exponential(4)), 0.1)
    assert isinstance(alg, PushPull)


@pytest.mark.parametrize("name", list_algorithms())
def test_every_algorithm_states_its_metadata(name):
    """An entry's label and topology matrices are what from_topology builds it with; labels are distinct."""
    cls = get_algorithm(name)
    assert cls.name == name and cls.label and cls.label != Algorithm.label
    built = from_topology(name, exponential(5), 0.1)
    assert len(built.matrices()) == len(cls.topology_matrices)
    assert len({get_algorithm(n).label for n in list_algorithms()}) == len(list_algorithms())


def test_registry_refuses_a_taken_name_and_reads_former_names():
    class Again(Local):
        name = "local"

    class Former(Local):
        name = "p2pft"

    class Odd(Local):
        name, topology_matrices = "odd", ("diagonal",)

    for cls, says in ((Again, "'local' is already registered"), (Former, "'p2pft' is already registered"),
                      (Odd, "unknown topology_matrices")):
        with pytest.raises(ValueError, match=says):
            register_algorithm(cls)
    assert "odd" not in list_algorithms()
    assert {old: canonical_algorithm(old) for old in RENAMED} == RENAMED
    assert get_algorithm("p2pft") is PushPull and set(RENAMED.values()) <= set(list_algorithms())
    assert not set(RENAMED) & set(list_algorithms())


def test_from_topology_uses_the_papers_matrices():
    topo = exponential(6)
    pp = from_topology("pushpull", topo, 0.1)
    assert (torch.equal(pp.A.at(0).weights, row_stochastic(topo))
            and torch.equal(pp.B.at(0).weights, column_stochastic(topo)))
    for name in ("dgd", "dgd_eq1", "dpsgd", "gtdgd", "gtdgd_atc"):  # the directed graph's own row-stochastic A
        assert from_topology(name, topo, 0.1).matrices().keys() == {"W"}
        assert torch.equal(from_topology(name, topo, 0.1).matrices()["W"], row_stochastic(topo)), name
    assert pp.matrices().keys() == {"A", "B"} and torch.equal(pp.matrices()["B"], column_stochastic(topo))
    assert from_topology("local", topo, 0.1).matrices() == {}
    tv = from_topology("pushsum", lambda t: one_peer_exponential(6, t), 0.1)
    assert tv.B.time_varying and torch.equal(tv.B.at(1).weights, column_stochastic(one_peer_exponential(6, 1)))
    with pytest.raises(ValueError, match="Topology or a callable"):
        from_topology("local", "ring", 0.1)


@pytest.mark.parametrize("name,per_step", [("pushpull", 1), ("gtdgd", 1), ("dgd", 1), ("dgd_eq1", 4)])
def test_grad_calls_count_every_grad_fn_call(name, per_step, make_problem):
    """One grad_fn call per step, except DGD eq. 1: one per round of in-neighbours (exponential(8): 3) plus one at
    the new parameters."""
    prob = make_problem(n=8)
    calls = []

    def counted(x):
        calls.append(1)
        return prob.grad_fn(x)

    state = run(from_topology(name, exponential(8), 0.05), counted, torch.zeros(8, prob.q, dtype=torch.float64), 5)
    assert state.grad_calls == len(calls) == 1 + 5 * per_step


def test_neighbour_lists_for_a_distributed_communicator():
    """What a send/recv communicator needs from a matrix: who j sends to, who i hears from, out-degrees."""
    w = torch.eye(4, dtype=torch.float64)
    for src, dst in [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]:
        w[dst, src] = 1.0
    m = MixingMatrix(column_stochastic(w), "column")
    assert m.out_neighbors(0) == [1, 2] and m.out_neighbors(3) == [0]
    assert m.in_neighbors(2) == [0, 1] and m.in_neighbors(0) == [3]
    assert m.out_degree.tolist() == [2, 1, 1, 1]
    assert repr(m).startswith("MixingMatrix(") and m.n == 4
