"""Convergence to the known optimum of heterogeneous least squares (float64)."""

from __future__ import annotations

import pytest
import torch

from dflbench.mixing import DGD, DPSGD, GTDGD, Centralized, Local, PushPull, PushSum, run
from dflbench.topology import (
    column_stochastic,
    exponential,
    is_doubly_stochastic,
    metropolis_hastings,
    one_peer_exponential,
    ring,
    row_stochastic,
)

LR = 0.1
# push-pull on a directed ring mixes slowly: it needs a smaller step (and more steps) than on the exponential graph
PUSHPULL = {"exponential": (LR, 400), "ring": (0.03, 1000)}


@pytest.mark.parametrize("graph", ["exponential", "ring"])
def test_pushpull_converges_exactly_on_directed_graphs(graph, make_problem, random_weights):
    prob = make_problem(n=6)
    W = random_weights(graph, prob.n, seed=1)
    assert not is_doubly_stochastic(row_stochastic(W)) and not is_doubly_stochastic(column_stochastic(W))
    x0 = torch.zeros(prob.n, prob.q, dtype=torch.float64)
    lr, steps = PUSHPULL[graph]
    state = run(PushPull(row_stochastic(W), column_stochastic(W), lr), prob.grad_fn, x0, steps)
    assert prob.rel_error(state.params) < 1e-8
    # the tracker estimates the average gradient, which vanishes at x*
    assert state.tracker.abs().max() < 1e-8


@pytest.mark.parametrize("graph", ["exponential", "ring"])
def test_gtdgd_with_metropolis_converges_exactly(graph, make_problem):
    prob = make_problem(n=6)
    topo = exponential(prob.n) if graph == "exponential" else ring(prob.n, directed=True)
    x0 = torch.zeros(prob.n, prob.q, dtype=torch.float64)
    state = run(GTDGD(metropolis_hastings(topo), LR), prob.grad_fn, x0, 400)
    assert prob.rel_error(state.params) < 1e-8


@pytest.mark.parametrize("cls", [DGD, DPSGD])
def test_dgd_stalls_at_a_bias_that_shrinks_with_the_step(cls, make_problem):
    prob = make_problem(n=6)
    W = metropolis_hastings(exponential(prob.n))
    x0 = torch.zeros(prob.n, prob.q, dtype=torch.float64)
    errors = []
    for lr in (LR, LR / 2, LR / 4):
        state = run(cls(W, lr), prob.grad_fn, x0, int(300 * LR / lr))
        # at a fixed point: another 50 steps change nothing
        later = run(cls(W, lr), prob.grad_fn, state.params, 50)
        assert (later.params - state.params).abs().max() < 1e-9
        errors.append(prob.rel_error(state.params))
    assert errors[0] > 1e-3
    assert errors[1] < 0.7 * errors[0] and errors[2] < 0.7 * errors[1]


def test_pushsum_converges_on_a_column_stochastic_only_graph(make_problem, random_weights):
    W = random_weights("ring", 6, seed=2)
    B = column_stochastic(W)
    assert not torch.allclose(B.sum(dim=1), torch.ones(6, dtype=torch.float64))
    # (a) shared minimizer: exact convergence with a constant step
    prob = make_problem(n=6, common_minimizer=True)
    x0 = torch.randn(6, prob.q, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert prob.rel_error(run(PushSum(B, LR), prob.grad_fn, x0, 400).params) < 1e-8
    # (b) heterogeneous: a constant step leaves an O(lr) bias; a diminishing step drives it down
    prob = make_problem(n=6)
    x0 = torch.zeros(6, prob.q, dtype=torch.float64)
    e1 = prob.rel_error(run(PushSum(B, LR), prob.grad_fn, x0, 400).params)
    e2 = prob.rel_error(run(PushSum(B, LR / 2), prob.grad_fn, x0, 800).params)
    assert e1 > 1e-3 and e2 < 0.7 * e1
    decaying = PushSum(B, lambda t: LR * 50 / (t + 50))
    assert prob.rel_error(run(decaying, prob.grad_fn, x0, 2000).params) < 0.2 * e2


def test_pushsum_with_zero_step_reaches_the_exact_average(random_weights):
    """Push-sum's de-biasing: z_i -> (1/n) sum_j x_j^0 on a column-stochastic (not row-stochastic) graph."""
    B = column_stochastic(random_weights("exponential", 7, seed=4))
    x0 = torch.randn(7, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    state = run(PushSum(B, 0.0), lambda x: torch.zeros_like(x), x0, 300)
    assert torch.allclose(state.params, x0.mean(dim=0).expand(7, 3), atol=1e-12, rtol=0)


def test_centralized_is_gradient_descent_on_the_sum_and_local_finds_local_minimizers(make_problem):
    prob = make_problem(n=6)
    x0 = torch.randn(prob.n, prob.q, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    state = run(Centralized(LR), prob.grad_fn, x0, 400)
    assert prob.rel_error(state.params) < 1e-8
    local = run(Local(LR), prob.grad_fn, x0, 1500).params
    for i in range(prob.n):
        xi = torch.linalg.lstsq(prob.M[i], prob.b[i][:, None]).solution.flatten()
        assert torch.allclose(local[i], xi, atol=1e-8, rtol=0)


def test_pushpull_converges_on_a_time_varying_one_peer_graph(make_problem):
    prob = make_problem(n=8)
    x0 = torch.zeros(prob.n, prob.q, dtype=torch.float64)
    alg = PushPull(lambda t: row_stochastic(one_peer_exponential(8, t)),
                   lambda t: column_stochastic(one_peer_exponential(8, t)), LR)
    assert prob.rel_error(run(alg, prob.grad_fn, x0, 1000).params) < 1e-8
