"""Step-by-step equality (1e-12) of every algorithm with a per-node Python loop written from the papers' equations.

DGD and GT-DGD get the row-stochastic A of a directed graph with random weights (not doubly stochastic), as
`from_topology` gives them; GT-DGD's loop is P2P-FT eq. (1) with tau and eq. (2) exactly as printed, DGD eq. 1's
loop evaluates node i's gradient at every in-neighbour's parameters.
"""

from __future__ import annotations

import pytest
import torch

from dflbench.mixing import DGD, DPSGD, GTDGD, GTDGDATC, Centralized, DGDEq1, Local, PushPull, PushSum
from dflbench.topology import column_stochastic, is_doubly_stochastic, one_peer_exponential, row_stochastic

N, STEPS, LR = 8, 15, 0.07


def matrices(time_varying: bool, random_weights):
    """t -> {"A", "B", "W"}: row / column stochastic from a directed graph with random weights, W = A."""
    static = random_weights("exponential", N, seed=11)
    if time_varying:
        return lambda t: {"A": row_stochastic(one_peer_exponential(N, t)),
                          "B": column_stochastic(one_peer_exponential(N, t)),
                          "W": row_stochastic(one_peer_exponential(N, t))}
    mats = {"A": row_stochastic(static), "B": column_stochastic(static), "W": row_stochastic(static)}
    assert not is_doubly_stochastic(mats["W"])
    return lambda t: mats


def build(name: str, mats, time_varying: bool, momentum: float, wd: float):
    pick = (lambda key: (lambda t: mats(t)[key])) if time_varying else (lambda key: mats(0)[key])
    kw = dict(momentum=momentum, weight_decay=wd)
    return {
        "dgd": lambda: DGD(pick("W"), LR, **kw), "dpsgd": lambda: DPSGD(pick("W"), LR, **kw),
        "dgd_eq1": lambda: DGDEq1(pick("W"), LR, **kw), "gtdgd": lambda: GTDGD(pick("W"), LR, **kw),
        "gtdgd_atc": lambda: GTDGDATC(pick("W"), LR, **kw),
        "pushpull": lambda: PushPull(pick("A"), pick("B"), LR, **kw),
        "pushsum": lambda: PushSum(pick("B"), LR, **kw), "local": lambda: Local(LR, **kw),
        "centralized": lambda: Centralized(LR, **kw),
    }[name]()


def reference(name: str, prob, mats, x0: torch.Tensor, momentum: float, wd: float) -> list[list[torch.Tensor]]:
    """Per-node loops; returns the parameters of every node after each step (index 0: after init)."""
    n = prob.n

    def g(i, xi):
        return prob.node_grad(i, xi) + wd * xi

    x = [x0[i].clone() for i in range(n)]
    if name == "centralized":
        x = [sum(x) / n for _ in range(n)]
    u = [torch.zeros_like(x[0]) for _ in range(n)]
    tau = [g(i, x[i]) for i in range(n)]  # Algorithm 1 line 2 (push-pull, GT-DGD)
    y, w = [xi.clone() for xi in x], [1.0] * n  # push-sum
    history = [[xi.clone() for xi in x]]
    for t in range(STEPS):
        m = mats(t)
        if name in ("dgd", "dpsgd", "local", "pushsum"):
            z = [y[i] / w[i] for i in range(n)] if name == "pushsum" else x
            u = [momentum * u[i] + g(i, z[i]) for i in range(n)]
        if name == "dgd":  # adapt-then-combine: x_i <- sum_j w_ij (x_j - a g_j(x_j))
            x = [sum(m["W"][i, j] * (x[j] - LR * u[j]) for j in range(n)) for i in range(n)]
        elif name == "dgd_eq1" and momentum == 0:  # P2P-FT eq. 1 as printed: x_i <- sum_j w_ij (x_j - a g_i(x_j))
            x = [sum(m["W"][i, j] * (x[j] - LR * g(i, x[j])) for j in range(n) if m["W"][i, j] > 0)
                 for i in range(n)]
        elif name == "dgd_eq1":  # heavy-ball on d_i = sum_j w_ij g_i(x_j): x_i <- sum_j w_ij x_j - a u_i
            W = m["W"]
            u = [momentum * u[i] + sum(W[i, j] * g(i, x[j]) for j in range(n) if W[i, j] > 0) for i in range(n)]
            x = [sum(W[i, j] * x[j] for j in range(n)) - LR * u[i] for i in range(n)]
        elif name == "dpsgd":  # Lian et al. 2017: x_i <- sum_j w_ij x_j - a g_i(x_i)
            x = [sum(m["W"][i, j] * x[j] for j in range(n)) - LR * u[i] for i in range(n)]
        elif name == "local":
            x = [x[i] - LR * u[i] for i in range(n)]
        elif name == "pushsum":  # y_i <- sum_j b_ij (y_j - a g_j(z_j)); w_i <- sum_j b_ij w_j; z = y / w
            y = [sum(m["B"][i, j] * (y[j] - LR * u[j]) for j in range(n)) for i in range(n)]
            w = [sum(m["B"][i, j] * w[j] for j in range(n)) for i in range(n)]
            x = [y[i] / w[i] for i in range(n)]
        elif name == "gtdgd":  # P2P-FT eq. 1 with tau_i for the gradient, eq. 2 as printed (Qu & Li 2017)
            W = m["W"]
            u = [momentum * u[i] + tau[i] for i in range(n)]
            new = [sum(W[i, j] * (x[j] - LR * u[i]) for j in range(n)) for i in range(n)]
            tau = [sum(W[i, j] * (tau[j] + g(i, new[i]) - g(i, x[i])) for j in range(n)) for i in range(n)]
            x = new
        elif name in ("pushpull", "gtdgd_atc"):
            A, B = (m["A"], m["B"]) if name == "pushpull" else (m["W"], m["W"])
            u = [momentum * u[i] + tau[i] for i in range(n)]
            new = [sum(A[i, j] * (x[j] - LR * u[j]) for j in range(n)) for i in range(n)]  # line 4
            tau = [sum(B[i, j] * (tau[j] + g(j, new[j]) - g(j, x[j])) for j in range(n)) for i in range(n)]  # line 7
            x = new
        elif name == "centralized":
            avg = sum(g(i, x[i]) for i in range(n)) / n
            u = [momentum * u[0] + avg for _ in range(n)]
            x = [x[i] - LR * u[i] for i in range(n)]
        history.append([xi.clone() for xi in x])
    return history


CASES = [(name, tv) for name in ("dgd", "dpsgd", "dgd_eq1", "gtdgd", "gtdgd_atc", "pushpull", "pushsum")
         for tv in (False, True)] + \
        [("local", False), ("centralized", False)]


@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.8, 0.05)], ids=["plain", "momentum+wd"])
@pytest.mark.parametrize("name,time_varying", CASES, ids=[f"{n}-{'tv' if tv else 'static'}" for n, tv in CASES])
def test_matches_per_node_loop(name, momentum, wd, time_varying, make_problem, random_weights):
    prob = make_problem(n=N, q=3, seed=7)
    x0 = torch.randn(N, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    mats = matrices(time_varying, random_weights)
    expected = reference(name, prob, mats, x0, momentum, wd)
    alg = build(name, mats, time_varying, momentum, wd)
    state = alg.init(x0, prob.grad_fn)
    for t in range(STEPS + 1):
        if t:
            state = alg.step(state, prob.grad_fn)
        assert state.step == t
        assert torch.allclose(state.params, torch.stack(expected[t]), atol=1e-12, rtol=0), f"step {t}"
        # state.aux is the loss at state.params (gradients are evaluated at the new parameters)
        assert torch.allclose(state.aux, prob.grad_fn(state.params)[1], atol=1e-12, rtol=0)
    assert (state.params - x0).abs().max() > 1e-3  # it moved
