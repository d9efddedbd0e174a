"""dflbench.pruning.batched and the vectorized rates: equal to a loop of the per-model functions over devices,
and the AEDFL engine's pruner is exactly that composition (no formula of its own)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dflbench.pruning import (
    HessianOperator,
    count_flops,
    device_curvature,
    eigengap_rate,
    eigengap_rates,
    estimate_lipschitz,
    exploration_weight,
    find_candidates,
    make_generator,
    neighbor_weighted_rate,
    neighbor_weighted_rates,
    select_device_units,
    select_units,
    structured_mfp,
    unit_scores,
)

D, S = 3, 4


def _mlp_problem(dtype=torch.float64, device="cpu"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(dtype)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    numels = [p.numel() for _, p in model.named_parameters()]

    def as_dict(flat):
        return {n: part.reshape(s) for n, part, s in zip(names, torch.split(flat, numels), shapes)}

    def loss_fn(flat, batch):
        return F.cross_entropy(functional_call(model, as_dict(flat), (batch[0],)), batch[1])

    gen = torch.Generator().manual_seed(1)
    P = sum(numels)
    init = torch.randn(P, generator=gen, dtype=dtype)
    params = init + 0.3 * torch.randn(D, P, generator=gen, dtype=dtype)
    batch = (torch.randn(D, 6, 3, generator=gen, dtype=dtype), torch.randint(0, 2, (D, 6), generator=gen))
    probes = torch.stack([HessianOperator(lambda p: p["params"].sum(), {"params": init}).rademacher(
        S, make_generator(10 + d)) for d in range(D)])
    def to(t):
        return t.to(device)

    return loss_fn, to(params), to(init), (to(batch[0]), to(batch[1])), to(probes)


def _support(P):
    support = torch.ones(P, dtype=torch.bool)
    support[-7:] = False                                            # e.g. the classifier: not prunable
    return support


@pytest.mark.parametrize("path", ["vmap", "loop", "stacked"])
def test_device_curvature_equals_per_model_functions_and_autograd(path):
    loss_fn, params, init, batch, probes = _mlp_problem()
    P = params.shape[1]
    support = _support(P)
    s = support.double()
    steps = int(support.sum())                                      # a full Lanczos run: the exact spectrum
    curv = device_curvature(loss_fn, params, init, batch, probes, steps, support, path=path)
    assert curv.nodes.shape == curv.weights.shape == (D, S * steps)
    for d in range(D):
        one = (batch[0][d], batch[1][d])
        f = lambda p, one=one: loss_fn(p["params"], one)                    # noqa: E731
        op = HessianOperator(f, {"params": params[d]})
        torch.testing.assert_close(curv.loss[d], op.loss(), atol=1e-6, rtol=0)
        torch.testing.assert_close(curv.gradient[d], op.gradient()["params"], atol=1e-6, rtol=0)
        lip = estimate_lipschitz(f, {"params": params[d]}, {"params": init})
        assert float(curv.lipschitz[d]) == pytest.approx(lip, abs=1e-6)
        # independent reference: the dense Hessian and gradients from torch.autograd
        h = torch.autograd.functional.hessian(lambda v, one=one: loss_fn(v, one), params[d])
        h_s = s[:, None] * h * s[None, :]                               # S H S
        z = probes[d] * s
        torch.testing.assert_close(curv.diagonal[d], (z * (z @ h_s)).mean(0), atol=1e-6, rtol=0)
        gfun = lambda v, one=one: torch.autograd.functional.jacobian(lambda u: loss_fn(u, one), v)  # noqa: E731
        delta = init - params[d]
        lip_ref = (h @ delta - (gfun(init) - gfun(params[d]))).norm() / delta.norm()
        torch.testing.assert_close(curv.lipschitz[d], lip_ref, atol=1e-6, rtol=0)
        # SLQ with as many steps as the support has entries: the nodes are the eigenvalues of H_SS, the weights
        # (v . z / ||z||)^2 over the runs
        vals, vecs = torch.linalg.eigh(h[support][:, support])
        nodes = curv.nodes[d].view(S, steps)
        weights = curv.weights[d].view(S, steps)
        for r in range(S):
            torch.testing.assert_close(nodes[r], vals, atol=1e-6, rtol=0)
            zr = probes[d, r][support]
            ref_w = (vecs.T @ (zr / zr.norm())) ** 2 / S
            distinct = torch.cat([vals[1:] - vals[:-1], torch.ones(1, dtype=vals.dtype)]).abs() > 1e-6
            distinct &= torch.cat([torch.ones(1, dtype=torch.bool), distinct[:-1]])
            torch.testing.assert_close(weights[r][distinct], ref_w[distinct], atol=1e-6, rtol=0)
        assert float(curv.weights[d].sum()) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"starts \[D, R, P\]"):
        device_curvature(loss_fn, params, init, batch, probes[:, 0], 4)
    with pytest.raises(ValueError, match="num_steps >= 2"):
        device_curvature(loss_fn, params, init, batch, probes, 1)
    with pytest.raises(ValueError, match="path must be"):
        device_curvature(loss_fn, params, init, batch, probes, 4, path="jit")


def _lenet5_problem(devices: int, seed: int):
    """(loss_fn, params [D, P], init, batch, starts [D, 2, P], support) for float32 LeNet-5 on 16x16 inputs."""
    from dflbench.aggregation.flat import FlatSpec, unflatten
    from dflbench.models import make_model

    torch.manual_seed(0)
    model = make_model("lenet5", 10, 1, 16)
    spec = FlatSpec.from_state_dict(dict(model.named_parameters()))
    init = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_fn(flat, batch):
        return F.cross_entropy(functional_call(model, unflatten(flat, spec), (batch[0],)), batch[1])

    gen = torch.Generator().manual_seed(seed)
    params = init + 0.05 * torch.randn(devices, init.numel(), generator=gen)
    batch = (torch.randn(devices, 8, 1, 16, 16, generator=gen), torch.randint(0, 10, (devices, 8), generator=gen))
    starts = torch.where(torch.rand(devices, 2, init.numel(), generator=gen) < 0.5, -1.0, 1.0)
    support = torch.rand(init.numel(), generator=gen) < 0.9
    return loss_fn, params, init, batch, starts, support


def test_device_curvature_paths_agree_on_lenet5():
    """The per-device reverse-over-reverse path gives the vmapped forward-over-reverse numbers (float32 LeNet-5,
    a short Lanczos run as AEDFL's pruning makes it)."""
    loss_fn, params, init, batch, starts, support = _lenet5_problem(devices=3, seed=2)
    a, b = (device_curvature(loss_fn, params, init, batch, starts, 6, support, path=p) for p in ("vmap", "loop"))
    for name in ("loss", "gradient", "diagonal", "lipschitz", "nodes", "weights"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=2e-4, rtol=2e-3)


def test_stacked_curvature_equals_each_device_alone_and_the_exact_hessian():
    """The slot-batched path (one graph over all devices) gives each device what the one-device computation gives
    (float32 LeNet-5, AEDFL's 6 steps, 2 probes), and on a float64 MLP the Hessian products of torch.func.hessian."""
    loss_fn, params, init, batch, starts, support = _lenet5_problem(devices=4, seed=3)
    both = device_curvature(loss_fn, params, init, batch, starts, 6, support, path="stacked")
    for d in range(4):
        alone = device_curvature(loss_fn, params[d:d + 1], init, tuple(t[d:d + 1] for t in batch), starts[d:d + 1],
                                 6, support, path="loop")
        for name in ("loss", "gradient", "diagonal", "lipschitz", "nodes", "weights"):
            torch.testing.assert_close(getattr(both, name)[d], getattr(alone, name)[0], atol=2e-5, rtol=1e-4)

    loss_fn, params, init, batch, probes = _mlp_problem()
    curv = device_curvature(loss_fn, params, init, batch, probes, 2, path="stacked")
    for d in range(D):
        h = torch.func.hessian(loss_fn)(params[d], (batch[0][d], batch[1][d]))
        z = probes[d]
        torch.testing.assert_close(curv.diagonal[d], (z * (z @ h)).mean(0), atol=1e-10, rtol=0)
        q = z / z.norm(dim=1, keepdim=True)                         # the first Lanczos step: alpha_0 = q^T H q
        alpha0 = curv.nodes[d].view(S, 2) * curv.weights[d].view(S, 2) * S
        torch.testing.assert_close(alpha0.sum(dim=1), ((q @ h) * q).sum(dim=1), atol=1e-10, rtol=0)


def test_device_curvature_lipschitz_is_zero_at_the_initial_model():
    """Delta m = 0 (a device that has not moved): L = 0, the secant's limit, not an error."""
    loss_fn, params, init, batch, probes = _mlp_problem()
    curv = device_curvature(loss_fn, torch.cat([params[:1], init[None]]), init, tuple(b[:2] for b in batch),
                            probes[:2], 4)
    assert float(curv.lipschitz[1]) == 0.0 and float(curv.lipschitz[0]) > 0


def _planted(eigenvalues, c=0.3):
    """F(m) = 1/2 m^T A m + c sum cos(m), A diagonal: H(0) = A - c I has the planted `eigenvalues`, and along
    Delta m = m^o the nonlinear part is N(Delta) = c (sin Delta - Delta), so L = c ||sin m^o - m^o|| / ||m^o||."""
    lam = torch.tensor(eigenvalues, dtype=torch.float64)
    a = lam + c

    def loss_fn(flat, batch):
        return 0.5 * (a * flat * flat).sum() + c * torch.cos(flat).sum() + 0.0 * batch[0].sum()

    return loss_fn, lam


def test_eigengap_rule_on_a_planted_spectrum_returns_the_gaps_index():
    """Bulk 0.5..0.8 (gaps 0.1), a null eigenvalue, outliers 3.0, 3.05 and 6.0: with 4 L between the bulk's gaps
    and the bulk-outlier gap the first qualifying gap is after the 4 bulk eigenvalues, p* = 4 / 7 (the null one
    does not count towards the rank); with a smaller L the first 0.1 gap qualifies (p* = 1 / 7); with a larger one
    only the 3.05 -> 6.0 gap (p* = 6 / 7); larger still, none (0)."""
    loss_fn, lam = _planted([0.5, 0.6, 0.7, 0.8, 0.0, 3.0, 3.05, 6.0])
    P, c = lam.numel(), 0.3
    m0 = torch.full((P,), 1.0, dtype=torch.float64)
    lip_ref = c * (torch.sin(m0) - m0).norm() / m0.norm()
    params = torch.zeros(1, P, dtype=torch.float64)
    starts = torch.where(torch.rand(1, 1, P, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0).double()
    curv = device_curvature(loss_fn, params, m0, (torch.zeros(1, 1),), starts, P)
    loop = device_curvature(loss_fn, params, m0, (torch.zeros(1, 1),), starts, P, path="loop")
    torch.testing.assert_close(loop.nodes, curv.nodes, atol=1e-9, rtol=0)
    torch.testing.assert_close(curv.lipschitz, lip_ref.reshape(1), atol=1e-12, rtol=0)
    assert 0.1 < 4 * float(lip_ref) < 2.2                                          # between the planted gaps
    torch.testing.assert_close(curv.nodes[0], lam.sort().values, atol=1e-9, rtol=0)
    torch.testing.assert_close(curv.weights[0], torch.full((P,), 1.0 / P, dtype=torch.float64))  # A diagonal
    assert float(eigengap_rates(curv.nodes, curv.lipschitz, curv.weights)[0]) == pytest.approx(4 / 7)
    for lip, rate in ((0.02, 1 / 7), (0.6, 6 / 7), (1.0, 0.0)):
        assert float(eigengap_rates(curv.nodes, torch.tensor([lip], dtype=torch.float64),
                                    curv.weights)[0]) == pytest.approx(rate)


@pytest.mark.gpu
def test_device_curvature_cuda_matches_cpu():
    cpu = device_curvature(*_mlp_problem(), 4)
    gpu = device_curvature(*_mlp_problem(device="cuda"), 4)
    for a, b in ((cpu.gradient, gpu.gradient), (cpu.diagonal, gpu.diagonal), (cpu.lipschitz, gpu.lipschitz),
                 (cpu.nodes, gpu.nodes)):
        torch.testing.assert_close(b.cpu(), a, atol=1e-6, rtol=1e-6)


def test_eigengap_rates_equal_the_per_row_rule():
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(6, 20, generator=gen, dtype=torch.float64) * torch.rand(6, 1, generator=gen) * 5
    h[1, :7] = 0.0                                                           # a null space
    h[2, 3] = 1e-12
    weights = torch.rand(6, 20, generator=gen, dtype=torch.float64)
    lip = torch.tensor([0.0, 0.05, 0.1, 0.3, 1.0, 100.0], dtype=torch.float64)
    for w in (None, weights):
        rates = eigengap_rates(h, lip, w)
        ref = [eigengap_rate(h[b], float(lip[b]), None if w is None else w[b]) for b in range(6)]
        torch.testing.assert_close(rates, torch.tensor(ref, dtype=torch.float64), atol=1e-12, rtol=0)
    assert float(rates[-1]) == 0.0 and bool((rates[:3] > 0).all())
    with pytest.raises(ValueError, match="rank 0"):
        eigengap_rates(torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="one Lipschitz constant per row"):
        eigengap_rates(h, lip[:2])


def test_neighbor_weighted_rates_equal_the_scalar_rule():
    gen = torch.Generator().manual_seed(4)
    own = torch.rand(5, generator=gen, dtype=torch.float64)
    nb = torch.rand(5, 3, generator=gen, dtype=torch.float64)
    w = torch.rand(5, 4, generator=gen, dtype=torch.float64)
    w[2, 1] = 0.0                                                            # an inactive neighbour slot
    w = w / w.sum(1, keepdim=True)
    rates = neighbor_weighted_rates(own, w[:, 0], nb, w[:, 1:])
    ref = [neighbor_weighted_rate(float(own[i]), float(w[i, 0]), nb[i].tolist(), w[i, 1:].tolist()) for i in range(5)]
    torch.testing.assert_close(rates, torch.tensor(ref, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(rates, (w * torch.cat([own[:, None], nb], 1)).sum(1), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="sum to 1"):
        neighbor_weighted_rates(own, w[:, 0] * 0.5, nb, w[:, 1:])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        neighbor_weighted_rates(own + 2, w[:, 0], nb, w[:, 1:])


def _cnn_problem():
    from dflbench.models import make_model

    torch.manual_seed(0)
    model = make_model("lenet5", 4, 1, 16).double()
    named = list(model.named_parameters())
    names, shapes = [n for n, _ in named], [p.shape for _, p in named]

    def loss_fn(flat, batch):
        parts = torch.split(flat, [sh.numel() for sh in shapes])
        return F.cross_entropy(functional_call(model, {n: t.reshape(sh) for n, t, sh in zip(names, parts, shapes)},
                                               (batch[0],)), batch[1])

    gen = torch.Generator().manual_seed(2)
    init = torch.cat([p.detach().reshape(-1) for _, p in named])
    params = init + 0.05 * torch.randn(D, init.numel(), generator=gen, dtype=torch.float64)
    batch = (torch.randn(D, 8, 1, 16, 16, generator=gen, dtype=torch.float64),
             torch.randint(0, 4, (D, 8), generator=gen))
    cand = find_candidates(model, batch[0][0])
    starts = torch.where(torch.rand(D, 2, init.numel(), generator=gen) < 0.5, -1.0, 1.0).double()
    return model, loss_fn, params, init, batch, cand, starts


def test_unit_scores_equal_the_equations_summed_over_each_unit():
    """5.14 (H ~ diag(h)) and 5.15 per unit, from a plain loop over devices and units; zero loss, gradient and
    curvature: finite scores (the documented rules), not an error."""
    model, loss_fn, params, init, batch, cand, starts = _cnn_problem()
    curv = device_curvature(loss_fn, params, init, batch, starts, 3, cand.unit_ids >= 0)
    gmax = torch.tensor([0.0, 10.0, 0.5], dtype=torch.float64)
    damping, c = 1e-2, 2.0
    scores = unit_scores(params, curv, cand, gmax, c, damping)
    assert scores.shape == (D, cand.num_units)
    for d in range(D):
        m, g, h, loss = params[d], curv.gradient[d], curv.diagonal[d], curv.loss[d]
        gn = g.norm()
        lam = exploration_weight(float(gn), float(gmax[d]), c)
        dinv = 1 / (h.abs() + damping * h.abs().mean())
        for u in range(0, cand.num_units, 7):
            e = cand.unit_ids == u
            dfc = (0.5 * h[e] * m[e] ** 2 - g[e] * m[e] + 0.5 * g[e] ** 2 * dinv[e]).sum()
            ref = (1 - lam) * dfc.abs() / loss.abs() + lam * g[e].norm() / gn
            torch.testing.assert_close(scores[d, u], ref, atol=1e-9, rtol=1e-9)
    zero = type(curv)(torch.zeros(D, dtype=torch.float64), torch.zeros_like(curv.gradient),
                      torch.zeros_like(curv.diagonal), curv.lipschitz, curv.nodes, curv.weights)
    flat = unit_scores(params, zero, cand, gmax, c, damping)
    assert torch.isfinite(flat).all() and float(flat.abs().max()) == 0.0


def test_select_device_units_removes_whole_units_and_keeps_one_per_layer():
    model, loss_fn, params, init, batch, cand, starts = _cnn_problem()
    gen = torch.Generator().manual_seed(5)
    scores = torch.rand(D, cand.num_units, generator=gen, dtype=torch.float64)
    scores[2, cand.group_of_unit == 0] = -1.0                         # device 2 would empty conv1
    rates = torch.tensor([0.0, 0.3, 0.5], dtype=torch.float64)
    keep = select_device_units(scores, cand, rates)
    outside = cand.unit_ids < 0
    for d in range(D):
        units = select_units(scores[d], cand, float(rates[d]))
        assert torch.equal(keep[d], cand.flat_keep(units))
        assert int((~units).sum()) == int(rates[d] * cand.num_units)
        assert bool(keep[d][outside].all())                            # the classifier is never pruned
        kept = cand.unit_sum(keep[d].double())
        assert torch.equal(kept[units], cand.unit_sizes[units].double())   # whole units kept ...
        assert float(kept[~units].sum()) == 0.0                             # ... or whole units removed
        for gi in range(len(cand.groups)):
            assert bool(units[cand.group_of_unit == gi].any())
    pruned_conv1 = ~select_units(scores[2], cand, 0.5)[cand.group_of_unit == 0]
    assert int(pruned_conv1.sum()) == cand.groups[0].num_units - 1          # all but one, lowest first
    with pytest.raises(ValueError, match="one rate per device"):
        select_device_units(scores, cand, rates[:2])


def test_structured_mfp_counts_the_pruned_structure():
    """Equal to count_flops per device; a removed conv1 channel also removes conv2's input channel (a structural
    count, not the weight density); devices with equal masks share one count."""
    from dflbench.models import make_model

    model = make_model("lenet5", 10, 1, 28)
    x = torch.zeros(1, 1, 28, 28)
    named = list(model.named_parameters())
    P = sum(p.numel() for _, p in named)
    gen = torch.Generator().manual_seed(6)
    masks = torch.rand(4, P, generator=gen) < torch.tensor([[0.9], [0.5], [0.2], [0.2]])
    masks[3] = masks[2]
    mfp = structured_mfp(model, x, masks)
    assert count_flops(model, x).mfp == pytest.approx(0.28164)                       # AEDFL Table 1: 0.283
    for d in range(4):
        per_param, start = {}, 0
        for n, p in named:
            per_param[n] = masks[d, start:start + p.numel()].reshape(p.shape)
            start += p.numel()
        assert float(mfp[d]) == pytest.approx(count_flops(model, x, per_param).mfp, rel=1e-12)
    cand = find_candidates(model, x)
    keep = torch.ones(cand.num_units, dtype=torch.bool)
    keep[:3] = False                                                   # 3 of conv1's 6 output channels
    one = structured_mfp(model, x, cand.flat_keep(keep)[None])
    counts = count_flops(model, x).per_module
    conv1, conv2 = list(counts)[:2]
    assert float(one[0]) == pytest.approx((sum(counts.values()) - counts[conv1] / 2 - counts[conv2] / 2) / 1e6)
    with pytest.raises(ValueError, match="flat parameters"):
        structured_mfp(model, x, masks[:, 1:])
