"""Bad input raises a ValueError saying what is wrong; NaN/Inf stops the run naming the nodes."""

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
    LocalCommunicator,
    MixingMatrix,
    NonFiniteError,
    PushPull,
    PushSum,
    run,
)
from dflbench.topology import (
    column_stochastic,
    exponential,
    metropolis_hastings,
    one_peer_exponential,
    ring,
    row_stochastic,
)

N = 5


def lsq_grad(x):
    return x - torch.arange(x.shape[0], dtype=x.dtype)[:, None]


@pytest.fixture
def skew():
    """Row stochastic but not column stochastic (random weights on a directed exponential graph)."""
    w = exponential(N).weights * (1 + torch.rand(N, N, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    return w


def test_stochasticity_is_checked_per_algorithm(skew):
    A, B = row_stochastic(skew), column_stochastic(skew)
    with pytest.raises(ValueError, match="pushpull A must be row stochastic.*row_stochastic"):
        PushPull(B, B, 0.1)
    with pytest.raises(ValueError, match="pushpull B must be column stochastic.*column_stochastic"):
        PushPull(A, A, 0.1)
    for cls in (DGD, DPSGD, DGDEq1, GTDGD, GTDGDATC):
        with pytest.raises(ValueError, match=f"{cls.name} W must be row stochastic.*row_stochastic"):
            cls(B, 0.1)
    with pytest.raises(ValueError, match="pushsum B must be column stochastic"):
        PushSum(A, 0.1)
    PushPull(A, B, 0.1), PushSum(B, 0.1), GTDGD(A, 0.1), DGD(metropolis_hastings(skew), 0.1)  # the right ones pass


def test_matrix_shape_and_entries():
    with pytest.raises(ValueError, match=r"must be square \[n, n\], got shape \(2, 3\)"):
        DGD(torch.full((2, 3), 1 / 3), 0.1)
    with pytest.raises(ValueError, match="negative weight"):
        DGD(torch.tensor([[1.5, -0.5], [-0.5, 1.5]]), 0.1)
    with pytest.raises(ValueError, match="non-finite"):
        DGD(torch.tensor([[float("nan"), 0.5], [0.5, 0.5]]), 0.1)
    alg = DGD(metropolis_hastings(ring(4)), 0.1)
    with pytest.raises(ValueError, match="dgd W is 4x4 but the parameters stack 5 nodes"):
        alg.init(torch.zeros(5, 3), lsq_grad)


def test_not_strongly_connected():
    w = torch.eye(4, dtype=torch.float64)
    w[1, 0] = w[0, 1] = 1.0  # {0, 1} and {2}, {3} isolated
    with pytest.raises(ValueError, match=r"not strongly connected: nodes \[2, 3\]"):
        PushPull(row_stochastic(w), column_stochastic(w), 0.1)
    # a one-sided link is not enough either: 2 reaches 0 but 0 never reaches 2
    w2 = torch.eye(3, dtype=torch.float64) + torch.tensor([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"nodes \[2\]"):
        PushPull(row_stochastic(w2), column_stochastic(w2), 0.1)


def test_time_varying_matrices_are_checked_when_used():
    bad_at_3 = lambda t: column_stochastic(one_peer_exponential(N, t)) * (2.0 if t == 3 else 1.0)  # noqa: E731
    alg = PushSum(bad_at_3, 0.1)
    state = alg.init(torch.zeros(N, 2), lsq_grad)
    for _ in range(3):
        state = alg.step(state, lsq_grad)
    with pytest.raises(ValueError, match="pushsum B at step 3 must be column stochastic"):
        alg.step(state, lsq_grad)
    grows = PushSum(lambda t: column_stochastic(one_peer_exponential(N + t, 0)), 0.1)
    state = grows.step(grows.init(torch.zeros(N, 2), lsq_grad), lsq_grad)  # step 0 -> 1 mixes with B(0)
    with pytest.raises(ValueError, match="at step 1 is 6x6 but the parameters stack 5 nodes"):
        grows.step(state, lsq_grad)


def test_hyperparameters():
    W = metropolis_hastings(ring(4))
    for kw, msg in [(dict(lr=-0.1), "lr must be a finite number >= 0"), (dict(lr=float("nan")), "lr must be"),
                    (dict(lr=0.1, momentum=1.0), r"momentum must lie in \[0, 1\)"),
                    (dict(lr=0.1, weight_decay=-1.0), "weight_decay must be"),
                    (dict(lr=0.1, comm="gloo"), "comm must be a dflbench.mixing.Communicator")]:
        with pytest.raises(ValueError, match=msg):
            DGD(W, **kw)
    alg = Local(lambda t: 0.1 if t < 2 else -1.0)
    with pytest.raises(ValueError, match="lr schedule at step 2"):
        run(alg, lsq_grad, torch.zeros(3, 2), 3)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        run(Local(0.1), lsq_grad, torch.zeros(3, 2), -1)
    with pytest.raises(ValueError, match="sparse must be None"):
        LocalCommunicator(sparse="yes")
    with pytest.raises(ValueError, match="unknown stochasticity kind"):
        MixingMatrix(W, "symmetric")


def test_parameters_and_gradients_are_checked():
    alg = Centralized(0.1)
    with pytest.raises(ValueError, match=r"disagree on the node dimension: leading sizes \[3, 4\]"):
        alg.init({"a": torch.zeros(3, 2), "b": torch.zeros(4)}, lsq_grad)
    with pytest.raises(ValueError, match="must be floating point"):
        alg.init(torch.zeros(3, 2, dtype=torch.long), lsq_grad)
    with pytest.raises(ValueError, match="leading node dimension"):
        alg.init(torch.tensor(1.0), lsq_grad)
    with pytest.raises(ValueError, match=r"grad_fn output has shape \(3, 1\) where the parameters have \(3, 2\)"):
        alg.init(torch.zeros(3, 2), lambda x: x[:, :1])
    with pytest.raises(ValueError, match=r"expected keys \['a', 'b'\], got \['a'\]"):
        alg.init({"a": torch.zeros(3, 2), "b": torch.zeros(3)}, lambda d: {"a": d["a"]})
    with pytest.raises(ValueError, match="grad_fn output has dtype torch.float64"):
        alg.init(torch.zeros(3, 2), lambda x: x.double())


@pytest.mark.parametrize("name", ["pushpull", "gtdgd", "pushsum", "local"])
def test_nan_stops_the_run_naming_the_nodes(name):
    n = 6
    topo = exponential(n)
    calls = []

    def grad(x):
        calls.append(1)
        g = lsq_grad(x)
        if len(calls) == 3:  # the gradient of step 2
            g = g.clone()
            g[4, 1] = float("nan")
            g[1, 0] = float("inf")
        return g

    alg = {"pushpull": lambda: PushPull(row_stochastic(topo), column_stochastic(topo), 0.1),
           "gtdgd": lambda: GTDGD(metropolis_hastings(topo), 0.1),
           "pushsum": lambda: PushSum(column_stochastic(topo), 0.1),
           "local": lambda: Local(0.1)}[name]()
    state = alg.step(alg.init(torch.zeros(n, 2), grad), grad)
    with pytest.raises(NonFiniteError, match=r"NaN/Inf in grads at step 2 on nodes \[1, 4\]"):
        alg.step(state, grad)


def test_nan_in_the_initial_parameters():
    x0 = torch.zeros(4, 2)
    x0[2, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"params at init on nodes \[2\]"):
        Local(0.1).init(x0, lambda x: torch.zeros_like(x))


def test_divergence_to_inf_is_caught():
    alg = DGD(metropolis_hastings(ring(4)), 1e30)
    with pytest.raises(NonFiniteError, match=r"on nodes \[0, 1, 2, 3\]"):
        run(alg, lambda x: x * 1e30 + 1, torch.ones(4, 2), 3)
