"""Convergence to the known optimum of heterogeneous least squares (float64)."""

from __future__ import annotations

import pytest
import torch

from dflbench.mixing import DGD, DPSGD, GTDGD, GTDGDATC, Centralized, DGDEq1, Local, PushPull, PushSum, run
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


def perron_weighted_solution(prob, A: torch.Tensor) -> torch.Tensor:
    """argmin_x sum_i pi_i f_i(x), pi^T A = pi^T, sum pi = 1: pi from the linear system [A^T - I; 1^T] pi = e_n+1,
    then the Perron-weighted normal equations sum_i pi_i M_i^T (M_i x - b_i) = 0."""
    n = A.shape[0]
    K = torch.cat([A.T - torch.eye(n, dtype=A.dtype), torch.ones(1, n, dtype=A.dtype)])
    e = torch.zeros(n + 1, 1, dtype=A.dtype)
    e[-1] = 1
    pi = torch.linalg.lstsq(K, e).solution.flatten()
    H = torch.einsum("n,nji,njk->ik", pi, prob.M, prob.M)
    return torch.linalg.solve(H, torch.einsum("n,nji,nj->i", pi, prob.M, prob.b))


def test_on_a_graph_that_is_not_weight_balanced_only_pushpull_finds_the_optimum(make_problem, random_weights):
    """P2P-FT's contrast (Sec. II-III): with the graph's row-stochastic A, DGD (any form, diminishing step) and
    GT-DGD (both forms, constant step) converge to the Perron-weighted optimum of sum_i pi_i f_i; push-pull with
    A and the column-stochastic B to x* = argmin sum_i f_i."""
    prob = make_problem(n=6)
    W = random_weights("exponential", prob.n, seed=1)
    A, B = row_stochastic(W), column_stochastic(W)
    assert not is_doubly_stochastic(A)
    x_pi, xs = perron_weighted_solution(prob, A), prob.x_star
    gap = float((x_pi - xs).norm() / xs.norm())
    assert gap > 0.03  # the biased point is measurably elsewhere

    def errors(alg, steps):
        x = run(alg, prob.grad_fn, torch.zeros(prob.n, prob.q, dtype=torch.float64), steps).params
        return (float((x - x_pi).norm(dim=1).max() / xs.norm()), prob.rel_error(x))

    to_pi, to_star = errors(PushPull(A, B, LR), 400)
    assert to_star < 1e-8 and to_pi > 0.9 * gap
    for cls in (GTDGD, GTDGDATC):
        to_pi, to_star = errors(cls(A, LR), 400)
        assert to_pi < 1e-8 and to_star > 0.9 * gap, cls.name
    for cls in (DGD, DPSGD, DGDEq1):  # a diminishing step removes DGD's O(step) error, not its bias
        to_pi, to_star = errors(cls(A, lambda t: LR * 50 / (t + 50)), 1500)  # to_pi / gap: 0.03-0.07 measured
        assert to_pi < 0.1 * gap and to_star > 0.9 * gap, (cls.name, to_pi, gap)


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
