"""How the engines call it: stacked module state + vmapped gradients, checked against per-node autograd."""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from dflbench.mixing import PushPull, run
from dflbench.topology import column_stochastic, exponential, row_stochastic


def test_pushpull_on_stacked_modules_matches_per_node_autograd():
    n, steps, lr = 4, 5, 0.1
    torch.manual_seed(0)
    models = [torch.nn.Linear(3, 2).double() for _ in range(n)]
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, 8, 3, generator=g, dtype=torch.float64)
    Y = torch.randn(n, 8, 2, generator=g, dtype=torch.float64)
    A, B = row_stochastic(exponential(n)), column_stochastic(exponential(n))
    params, _ = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p, x, y):
        return (functional_call(base, p, (x,)) - y).pow(2).mean()

    per_node = vmap(grad_and_value(loss))

    def grad_fn(p):
        grads, losses = per_node(p, X, Y)
        return grads, losses

    state = run(PushPull(A, B, lr), grad_fn, params, steps)
    assert set(state.params) == {"weight", "bias"} and state.params["weight"].shape == (n, 2, 3)

    # reference: each node's own module, autograd, Algorithm 1 written per node
    theta = [{k: v.detach().clone() for k, v in m.named_parameters()} for m in models]

    def node_grad(i, p):
        p = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        out = (torch.func.functional_call(models[i], p, (X[i],)) - Y[i]).pow(2).mean()
        return dict(zip(p, torch.autograd.grad(out, list(p.values()))))

    gr = [node_grad(i, theta[i]) for i in range(n)]
    tau = [dict(x) for x in gr]
    for _ in range(steps):
        new = [{k: sum(A[i, j] * (theta[j][k] - lr * tau[j][k]) for j in range(n)) for k in theta[0]} for i in range(n)]
        g_new = [node_grad(i, new[i]) for i in range(n)]
        tau = [{k: sum(B[i, j] * (tau[j][k] + g_new[j][k] - gr[j][k]) for j in range(n)) for k in theta[0]}
               for i in range(n)]
        theta, gr = new, g_new
    for k in ("weight", "bias"):
        assert torch.allclose(state.params[k], torch.stack([t[k] for t in theta]), atol=1e-12, rtol=0)
    assert torch.allclose(state.aux, torch.stack([loss({k: v[i] for k, v in state.params.items()}, X[i], Y[i])
                                                 for i in range(n)]), atol=1e-12)
