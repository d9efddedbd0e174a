"""dflbench.pruning.batched and the vectorized rates: equal to a loop of the per-model functions over devices,
and the AEDFL engine's pruner is exactly that composition (no formula of its own)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import dflbench.pruning as pruning
from dflbench.pruning import (
    HessianOperator,
    count_flops,
    device_curvature,
    eigengap_rate,
    eigengap_rates,
    entry_scores,
    estimate_lipschitz,
    exploration_weight,
    hessian_diagonal,
    make_generator,
    masked_mfp,
    neighbor_weighted_rate,
    neighbor_weighted_rates,
    prune_lowest,
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


def test_device_curvature_equals_per_model_functions_and_autograd():
    loss_fn, params, init, batch, probes = _mlp_problem()
    curv = device_curvature(loss_fn, params, init, batch, probes)
    for d in range(D):
        one = (batch[0][d], batch[1][d])
        f = lambda p, one=one: loss_fn(p["params"], one)                    # noqa: E731
        op = HessianOperator(f, {"params": params[d]})
        torch.testing.assert_close(curv.loss[d], op.loss(), atol=1e-6, rtol=0)
        torch.testing.assert_close(curv.gradient[d], op.gradient()["params"], atol=1e-6, rtol=0)
        diag = hessian_diagonal(f, {"params": params[d]}, num_samples=S, generator=make_generator(10 + d))
        torch.testing.assert_close(curv.diagonal[d], diag["params"], atol=1e-6, rtol=0)
        lip = estimate_lipschitz(f, {"params": params[d]}, {"params": init})
        assert float(curv.lipschitz[d]) == pytest.approx(lip, abs=1e-6)
        # independent reference: the dense Hessian and gradients from torch.autograd
        h = torch.autograd.functional.hessian(lambda v, one=one: loss_fn(v, one), params[d])
        z = probes[d]
        torch.testing.assert_close(curv.diagonal[d], (z * (z @ h)).mean(0), atol=1e-6, rtol=0)
        gfun = lambda v, one=one: torch.autograd.functional.jacobian(lambda u: loss_fn(u, one), v)  # noqa: E731
        delta = init - params[d]
        lip_ref = (h @ delta - (gfun(init) - gfun(params[d]))).norm() / delta.norm()
        torch.testing.assert_close(curv.lipschitz[d], lip_ref, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="equals its initial model"):
        device_curvature(loss_fn, torch.cat([params[:1], init[None]]), init, tuple(b[:2] for b in batch), probes[:2])
    with pytest.raises(ValueError, match=r"probes \[D, S, P\]"):
        device_curvature(loss_fn, params, init, batch, probes[:, 0])


@pytest.mark.gpu
def test_device_curvature_cuda_matches_cpu():
    cpu = device_curvature(*_mlp_problem())
    gpu = device_curvature(*_mlp_problem(device="cuda"))
    for a, b in ((cpu.gradient, gpu.gradient), (cpu.diagonal, gpu.diagonal), (cpu.lipschitz, gpu.lipschitz)):
        torch.testing.assert_close(b.cpu(), a, atol=1e-6, rtol=1e-6)


def test_entry_scores_equal_the_equations_per_device():
    loss_fn, params, init, batch, probes = _mlp_problem()
    curv = device_curvature(loss_fn, params, init, batch, probes)
    gmax = torch.tensor([0.0, 10.0, 0.5], dtype=torch.float64)
    damping, c = 1e-2, 2.0
    scores = entry_scores(params, curv, gmax, c, damping)
    for d in range(D):
        m, g, h, loss = params[d], curv.gradient[d], curv.diagonal[d], curv.loss[d]
        gn = g.norm()
        lam = exploration_weight(float(gn), float(gmax[d]), c)
        assert lam == pytest.approx(float(gn) / (c * max(float(gn), float(gmax[d]))))
        dfc = 0.5 * h * m ** 2 - g * m + 0.5 * g ** 2 / (h.abs() + damping * h.abs().mean())   # 5.14, H ~ diag(h)
        ref = (1 - lam) * dfc.abs() / loss.abs() + lam * g.abs() / gn                         # 5.15
        torch.testing.assert_close(scores[d], ref, atol=1e-9, rtol=1e-9)


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


def test_prune_lowest_prunes_the_floor_rate_lowest_entries_per_device():
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(4, 37, generator=gen)
    rates = torch.tensor([0.0, 0.25, 0.5, 0.99], dtype=torch.float64)
    keep = prune_lowest(scores, rates)
    for d in range(4):
        k = int(rates[d] * 37)
        expected = torch.ones(37, dtype=torch.bool)
        expected[torch.topk(scores[d], k, largest=False).indices] = False
        assert torch.equal(keep[d], expected)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        prune_lowest(scores, rates + 1)


def test_masked_mfp_equals_count_flops_per_device():
    from dflbench.models import make_model

    model = make_model("lenet5", 10, 1, 28)
    x = torch.zeros(1, 1, 28, 28)
    named = list(model.named_parameters())
    P = sum(p.numel() for _, p in named)
    gen = torch.Generator().manual_seed(6)
    masks = torch.rand(3, P, generator=gen) < torch.tensor([[0.9], [0.5], [0.2]])
    start = 0
    for _n, p in named:                                 # biases kept: no channel loses every input, as documented
        if p.ndim == 1:
            masks[:, start:start + p.numel()] = True
        start += p.numel()
    mfp = masked_mfp(model, x, masks)
    assert count_flops(model, x).mfp == pytest.approx(0.28164)                       # AEDFL Table 1: 0.283
    for d in range(3):
        per_param, start = {}, 0
        for n, p in named:
            per_param[n] = masks[d, start:start + p.numel()].reshape(p.shape)
            start += p.numel()
        assert float(mfp[d]) == pytest.approx(count_flops(model, x, per_param).mfp, rel=1e-12)
    with pytest.raises(ValueError, match="flat parameters"):
        masked_mfp(model, x, masks[:, 1:])


def test_engine_pruner_is_the_package_composition():
    """AdaptivePruner.prune equals a loop over devices of the per-model package functions (5.14-5.16)."""
    from dflbench.engines import async_stacked
    from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
    from dflbench.engines.async_stacked import DeviceData
    from dflbench.engines.devices import sample_profiles
    from dflbench.methods.aedfl import pruning as ap
    from dflbench.methods.registry import make_method
    from dflbench.models import make_model
    from dflbench.topology import exponential

    for name in ("device_curvature", "eigengap_rates", "neighbor_weighted_rates", "entry_scores", "prune_lowest"):
        assert getattr(ap, name) is getattr(pruning, name)
    for name in ("masked_mfp", "count_flops"):                     # the engine's MFP is the package's counter
        assert getattr(async_stacked, name) is getattr(pruning, name)
    assert not hasattr(ap, "layer_macs")

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (64,), generator=g)
    x = (torch.randn(64, 1, 16, 16, generator=g) * 40 + 60 + 40 * y.view(-1, 1, 1, 1)).clamp(0, 255).to(torch.uint8)
    data = DeviceData.from_indices(x, y, [list(range(i, 64, 4)) for i in range(4)], x[:16], y[:16])
    torch.manual_seed(0)
    sim = AsyncSimulator(make_model("lenet5", 4, 1, 16), data, exponential(4), sample_profiles(4, 0, latency=1e-3),
                         make_method("aedfl-0"), AsyncConfig(max_updates=1, batch_size=8))
    cfg = ap.PruningConfig(min_rate=0.6, max_rate=0.8, hutchinson=2)   # above the share of zero scores
    pruner = ap.AdaptivePruner(sim, cfg)
    devs = torch.tensor([0, 2, 3])
    P = sim.P
    xs = sim.net.init + 0.05 * torch.randn(3, P, generator=g)
    w = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.4, 0.0], [1.0, 0.0, 0.0]])
    active = w > 0
    nrates = torch.tensor([[0.7, 0.95], [0.65, 0.3], [0.1, 0.1]], dtype=torch.float64)
    pruner.gmax[devs] = torch.tensor([0.0, 100.0, 0.0], dtype=torch.float64)
    gmax_before = pruner.gmax[devs].clone()
    probes = pruner.probes(sim, devs, P)
    masks, cost = pruner.prune(sim, devs, xs, None, w, active, nrates)

    xb, yb = sim.data.batch(devs, sim.t[devs], -1, sim.cfg.batch_size, sim.cfg.seed)
    template = sim.net.template
    names = [n for n, _ in template.named_parameters()]
    shapes = [p.shape for _, p in template.named_parameters()]

    def split(flat):
        return {n: t.reshape(s) for n, t, s in zip(names, torch.split(flat, [s.numel() for s in shapes]), shapes)}

    for b in range(3):
        f = lambda p, b=b: F.cross_entropy(functional_call(template, p, (xb[b],)), yb[b])   # noqa: E731
        op = HessianOperator(f, split(xs[b]))
        gr, h = op.flatten(op.gradient()), (probes[b] * op.matmat(probes[b])).mean(0)
        lip = estimate_lipschitz(f, split(xs[b]), split(sim.net.init))
        p_star = min(max(eigengap_rate(h, lip), cfg.min_rate), cfg.max_rate)
        wb = (w[b].double() * active[b]).tolist()
        rate = min(neighbor_weighted_rate(p_star, wb[0], nrates[b].tolist(), wb[1:]), cfg.max_rate)
        assert float(pruner.rate[devs[b]]) == pytest.approx(rate, abs=1e-6)
        lam = exploration_weight(float(gr.norm()), float(gmax_before[b]), cfg.C)
        dfc = 0.5 * h * xs[b] ** 2 - gr * xs[b] + 0.5 * gr ** 2 / (h.abs() + cfg.damping * h.abs().mean())
        score = (1 - lam) * dfc.abs() / op.loss().abs() + lam * gr.abs() / gr.norm()
        k = int(rate * P)
        threshold = torch.sort(score).values[k]                  # ties at the threshold may go either way
        clear = (score - threshold).abs() > 1e-4 * score.abs().max()
        assert int(clear.sum()) > P // 10
        assert torch.equal(masks[b][clear], (score >= threshold)[clear])
        assert int((~masks[b]).sum()) == k
    assert bool(((cost > 0) & (cost < 1)).all())
