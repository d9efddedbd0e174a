"""AEDFL 5.12-5.15 vs exact quadratics, explicit Hessian matrices and actual loss changes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dflbench.pruning import (
    HessianOperator,
    aedfl_objective,
    exploration_weight,
    find_candidates,
    model_loss_fn,
    model_params,
    taylor_impact,
    taylor_loss_change,
)


def test_taylor_expansion_equals_explicit_quadratic_form(tiny_mlp):
    loss_fn, params, hessian = tiny_mlp()
    gen = torch.Generator().manual_seed(5)
    delta = {n: 1e-2 * torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in params.items()}
    op = HessianOperator(loss_fn, params)
    g, d = op.flatten(op.gradient()), op.flatten(delta)
    torch.testing.assert_close(taylor_loss_change(loss_fn, params, delta), g @ d + 0.5 * d @ hessian @ d,
                               atol=1e-12, rtol=0)


def test_taylor_prediction_matches_actual_loss_change_for_small_prunes(tiny_cnn):
    """Prune conv2 channel 2 after shrinking it by eps: the error of 5.12 is O(eps^3)."""
    model, batch = tiny_cnn(bn=False)
    loss_fn = model_loss_fn(model, F.cross_entropy, batch)
    base = model_params(model)
    errors = []
    for eps in (0.2, 0.1, 0.05):
        params = dict(base)
        w = params["conv2.weight"].clone()
        b = params["conv2.bias"].clone()
        w[2] *= eps
        b[2] *= eps
        params["conv2.weight"], params["conv2.bias"] = w, b
        delta = {n: torch.zeros_like(p) for n, p in params.items()}
        delta["conv2.weight"][2] = -w[2]
        delta["conv2.bias"][2] = -b[2]
        pruned = {n: params[n] + delta[n] for n in params}
        actual = loss_fn(pruned) - loss_fn(params)
        predicted = taylor_loss_change(loss_fn, params, delta)
        assert abs(float(predicted - actual)) < 0.05 * abs(float(actual))
        errors.append(abs(float(predicted - actual)))
    for big, small in zip(errors, errors[1:]):
        assert small / big < 0.25  # cubic remainder: halving eps divides the error by ~8


def _linear_model():
    torch.manual_seed(0)
    model = nn.Linear(3, 4).double()
    cand = find_candidates(model, torch.randn(2, 3, dtype=torch.float64), prune_last_linear=True)
    return model, cand


def _quadratic(a_matrix, b_vec, names):
    def loss_fn(p):
        x = torch.cat([p[n].reshape(-1) for n in names])
        return 0.5 * x @ a_matrix @ x + b_vec @ x + 3.0

    return loss_fn


def test_full_impact_is_exact_for_separable_quadratic():
    """H diagonal: 5.14 with the diagonal inverse is the exact loss change after optimal compensation."""
    model, cand = _linear_model()
    params = model_params(model)
    names = list(params)
    d = cand.dim
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(d, generator=gen, dtype=torch.float64) + 0.5
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    loss_fn = _quadratic(torch.diag(a), b, names)
    op = HessianOperator(loss_fn, params)
    m, g = op.params_flat(), op.flatten(op.gradient())
    for approximation in ("block", "diagonal"):
        impact = taylor_impact(op, cand, a.clone(), approximation=approximation, damping=0.0)
        for u in range(cand.num_units):
            in_p = cand.unit_ids == u
            delta = torch.where(in_p, -m, -g / a)  # Delta r = -H_rr^{-1} (g_r - H_rp m_p), H_rp = 0
            actual = op.loss(op.unflatten(m + delta)) - op.loss()
            torch.testing.assert_close(impact.full[u], actual, atol=1e-10, rtol=0)
            torch.testing.assert_close(impact.gradient_change[u], g[in_p].norm(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_block_impact_matches_formula_5_14_from_explicit_hessian(damping):
    model, cand = _linear_model()
    params = model_params(model)
    names = list(params)
    d = cand.dim
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(d, d, generator=gen, dtype=torch.float64)
    h = q @ q.T / d + torch.eye(d, dtype=torch.float64)
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    loss_fn = _quadratic(h, b, names)
    op = HessianOperator(loss_fn, params)
    m, g = op.params_flat(), op.flatten(op.gradient())
    diag = torch.diag(h)
    impact = taylor_impact(op, cand, diag, approximation="block", damping=damping, chunk_size=2)
    dinv_all = 1.0 / (diag.abs() + damping * diag.abs().mean())
    for u in range(cand.num_units):  # reference: literal 5.14 with (H^{r,r})^{-1} ~ diag(1 / (|D_r| + delta))
        p = cand.unit_ids == u
        r = ~p
        mp, gp, gr = m[p], g[p], g[r]
        hpp, hrp = h[p][:, p], h[r][:, p]
        dinv = torch.diag(dinv_all[r])
        full = (0.5 * mp @ hpp @ mp - gp @ mp - 0.5 * mp @ hrp.T @ dinv @ hrp @ mp
                - 0.5 * gr @ dinv @ gr + gr @ dinv @ hrp @ mp)
        torch.testing.assert_close(impact.full[u], full, atol=1e-10, rtol=0)
        dg = torch.sqrt(gp @ gp + (hrp @ mp) @ (hrp @ mp))
        torch.testing.assert_close(impact.gradient_change[u], dg, atol=1e-10, rtol=0)
    # the diagonal approximation drops H^{r,p} and uses D on H^{p,p}
    diag_imp = taylor_impact(op, cand, diag, approximation="diagonal", damping=damping)
    for u in range(cand.num_units):
        p = cand.unit_ids == u
        expected = (0.5 * (diag[p] * m[p] ** 2).sum() - g[p] @ m[p]
                    - 0.5 * (g[~p] ** 2 * dinv_all[~p]).sum())
        torch.testing.assert_close(diag_imp.full[u], expected, atol=1e-10, rtol=0)


def test_exploration_weight_and_objective():
    assert exploration_weight(2.0, 4.0, 2.0) == pytest.approx(0.25)
    assert exploration_weight(5.0, 4.0, 2.0) == pytest.approx(0.5)  # the max includes the current norm
    assert exploration_weight(0.0, 0.0, 3.0) == 0.0
    with pytest.raises(ValueError, match="C must be >= 1"):
        exploration_weight(1.0, 1.0, 0.5)
    model, cand = _linear_model()
    params = model_params(model)
    d = cand.dim
    loss_fn = _quadratic(torch.eye(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64), list(params))
    op = HessianOperator(loss_fn, params)
    impact = taylor_impact(op, cand, torch.ones(d, dtype=torch.float64))
    loss, gnorm = float(op.loss()), float(op.flatten(op.gradient()).norm())
    score = aedfl_objective(impact, loss, gnorm, 0.3)
    expected = 0.7 * impact.current.abs() / abs(loss) + 0.3 * impact.gradient_change / gnorm
    torch.testing.assert_close(score, expected)
    with pytest.raises(ValueError, match="lambda_g"):
        aedfl_objective(impact, loss, gnorm, 1.5)
    # zero loss: the documented rule |Delta F^C| / 1 (same order of units as any |F| > 0), no error
    torch.testing.assert_close(aedfl_objective(impact, 0.0, gnorm, 0.3),
                               0.7 * impact.current.abs() + 0.3 * impact.gradient_change / gnorm)
    # zero gradient: lambda_g = 0 and no exploration term (no 0 / 0)
    torch.testing.assert_close(aedfl_objective(impact, loss, 0.0, 0.0), impact.current.abs() / abs(loss))
    with pytest.raises(ValueError, match="unknown Hessian approximation"):
        taylor_impact(op, cand, torch.ones(d, dtype=torch.float64), approximation="kfac")
    partial = torch.ones(d, dtype=torch.float64)
    partial[0] = 0.0
    with pytest.raises(ValueError, match="damping > 0"):
        taylor_impact(op, cand, partial, damping=0.0)
    flat = taylor_impact(op, cand, torch.zeros(d, dtype=torch.float64), damping=0.0)   # no curvature: no Newton step
    assert float(flat.gradient_gain.abs().sum()) == 0.0 and float(flat.newton_gain) == 0.0
