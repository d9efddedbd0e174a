"""AEDFL's adaptive sparse training in the device step (methods/aedfl/pruning.py): the pruner is the composition of
the per-model package functions, it prunes the FULL aggregate (pruned entries carry the neighbours' values, regrown
units start from them), masks are structured and MFLOPs structural, corner cases do not raise, and on a short real
LeNet-5 run the rates differ across devices and over time."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import dflbench.pruning as pruning
from dflbench.engines.async_sim import Message
from dflbench.errors import UserError
from dflbench.methods.aedfl import pruning as ap
from dflbench.methods.aedfl.step import ModelMessage
from dflbench.methods.registry import make_method
from dflbench.pruning import (
    HessianOperator,
    aedfl_objective,
    count_flops,
    eigengap_rate,
    estimate_lipschitz,
    exploration_weight,
    lanczos,
    neighbor_weighted_rate,
    select_units,
    taylor_impact,
)


def _split(template, flat):
    named = list(template.named_parameters())
    parts = torch.split(flat, [p.numel() for _, p in named])
    return {n: t.reshape(p.shape) for (n, p), t in zip(named, parts)}


@pytest.mark.parametrize("hessian", ["auto", "stacked"])
def test_pruner_is_the_composition_of_the_per_model_functions(aedfl_sim, hessian):
    """AdaptivePruner.prune equals a loop over devices of the single-model package functions: gradient, secant L,
    Lanczos on the prunable block, eigen-gap rate, 5.16, per-unit 5.14-5.15 (taylor_impact "diagonal"), select_units,
    count_flops; with the Hessian products device by device (auto on CPU) or of the whole slot at once."""
    for name in ("device_curvature", "eigengap_rates", "neighbor_weighted_rates", "unit_scores", "select_device_units",
                 "find_candidates"):
        assert getattr(ap, name) is getattr(pruning, name)
    sim = aedfl_sim(make_method("aedfl-0"), max_updates=1)
    cfg = ap.AdaptivePruningConfig(min_rate=0.0, max_rate=0.8, hutchinson=2, lanczos_steps=5, hessian=hessian)
    pruner = ap.AdaptivePruner(sim, cfg)
    g = torch.Generator().manual_seed(0)
    devs, P = torch.tensor([0, 2, 3]), sim.P
    xs = sim.net.init + 0.05 * torch.randn(3, P, generator=g)
    w = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.4, 0.0], [1.0, 0.0, 0.0]])
    active = w > 0
    nrates = torch.tensor([[0.7, 0.95], [0.65, 0.3], [0.1, 0.1]], dtype=torch.float64)
    pruner.gmax[devs] = torch.tensor([0.0, 100.0, 0.0], dtype=torch.float64)
    gmax_before = pruner.gmax[devs].clone()
    z = pruner.probes(sim, devs, P)
    masks, cost = pruner.prune(sim, devs, xs, None, w, active, nrates)

    xb, yb = sim.data.batch(devs, sim.t[devs], -1, sim.cfg.batch_size, sim.cfg.seed)
    template = sim.net.template
    cand = pruner.candidates
    support = (cand.unit_ids >= 0).float()
    dense = count_flops(template, xb[0][:1]).mfp
    for b in range(3):
        f = lambda p, b=b: F.cross_entropy(functional_call(template, p, (xb[b],)), yb[b])   # noqa: E731
        op = HessianOperator(f, _split(template, xs[b]))
        gr = op.flatten(op.gradient())
        lip = estimate_lipschitz(f, _split(template, xs[b]), _split(template, sim.net.init))
        res = lanczos(lambda q, op=op: op.matmat(q * support) * support, z[b] * support, cfg.lanczos_steps)
        nodes, weights = [], []
        for r in range(cfg.hutchinson):
            theta, s = res.ritz(r)
            nodes.append(theta)
            weights.append(s[0] ** 2 / cfg.hutchinson)
        p_star = min(max(eigengap_rate(torch.cat(nodes), lip, torch.cat(weights)), cfg.min_rate), cfg.max_rate)
        wb = (w[b].double() * active[b]).tolist()
        rate = min(neighbor_weighted_rate(p_star, wb[0], nrates[b].tolist(), wb[1:]), cfg.max_rate)
        assert float(pruner.rate[devs[b]]) == pytest.approx(rate, abs=1e-5)
        zs = z[b] * support
        diag = (zs * op.matmat(zs)).mean(0)                                   # Hutchinson on the prunable block
        impact = taylor_impact(op, cand, diag, approximation="diagonal", damping=cfg.damping, gradient=gr)
        lam = exploration_weight(float(gr.norm()), float(gmax_before[b]), cfg.C)
        score = aedfl_objective(impact, float(op.loss()), float(gr.norm()), lam)
        units = select_units(score, cand, float(pruner.rate[devs[b]]))
        ranked = score.double().sort().values
        k = int((~units).sum())
        assert k == int(float(pruner.rate[devs[b]]) * cand.num_units)
        if 0 < k < cand.num_units and float(ranked[k] - ranked[k - 1]) > 1e-4 * float(ranked.abs().max()):
            assert torch.equal(masks[b], cand.flat_keep(units))               # no near-tie at the threshold
        assert float(cost[b]) == pytest.approx(count_flops(template, xb[0][:1], {
            n: m.bool() for n, m in _split(template, masks[b].float()).items()}).mfp / dense, rel=1e-9)
    assert bool(((cost > 0) & (cost <= 1)).all())


def _pruned_device(aedfl_sim, every=1):
    """aedfl-p on the synthetic LeNet-5 set; device 1 has its conv1 channel 0 pruned (a whole unit) and holds
    a message from one in-neighbour that keeps every entry."""
    sim = aedfl_sim(make_method("aedfl-p", {"every": every}))
    m = sim.method
    m.setup(sim)
    d, j = 1, sim.topology.in_neighbors(1)[0]
    cand = m.pruner.candidates
    keep = torch.ones(cand.num_units, dtype=torch.bool)
    keep[0] = False
    m.masks[d] = cand.flat_keep(keep)
    sim.x[d] = sim.x[d] * m.masks[d]
    neighbour = sim.net.init + 0.1 * torch.randn(sim.P, generator=torch.Generator().manual_seed(1))
    m.on_arrive(sim, Message(j, d, ModelMessage(neighbour, torch.ones(sim.P, dtype=torch.bool), 0.5, 10, 1, 0.5),
                             0, 0.0))
    return sim, m, d, neighbour, ~m.masks[d].clone()


def test_pruning_starts_from_the_full_aggregated_model(aedfl_sim):
    sim, m, d, neighbour, pruned = _pruned_device(aedfl_sim)
    seen = {}
    prune = m.pruner.prune

    def spy(host, devs, x, *args):
        seen["x"] = x.clone()
        return prune(host, devs, x, *args)

    m.pruner.prune = spy
    out = m.step.update(sim, torch.tensor([d]), sim.x[[d]])
    full = seen["x"][0]
    # the entries the device pruned carry the only holder's value (eq. 4.11 over the holders), not zero
    assert bool((full[pruned] != 0).all())
    torch.testing.assert_close(full[pruned], neighbour[pruned])
    assert torch.equal(out.x[0], full * m.masks[d])


def test_a_regrown_unit_starts_from_its_aggregated_value(aedfl_sim):
    sim, m, d, neighbour, pruned = _pruned_device(aedfl_sim)
    m.pruner.prune = lambda host, devs, x, *a: (torch.ones_like(x, dtype=torch.bool),
                                                torch.ones(len(devs), dtype=torch.float64))
    out = m.step.update(sim, torch.tensor([d]), sim.x[[d]])
    torch.testing.assert_close(out.x[0][pruned], neighbour[pruned])               # not zero: the aggregate
    assert bool(m.masks[d].all())


def test_between_prunings_the_local_mask_is_applied_to_the_aggregate(aedfl_sim):
    sim, m, d, neighbour, pruned = _pruned_device(aedfl_sim, every=100)
    out = m.step.update(sim, torch.tensor([d]), sim.x[[d]])
    assert len(out.pruned) == 0 and bool((out.x[0][pruned] == 0).all()) and bool((out.x[0][~pruned] != 0).any())


def test_structured_masks_structural_mflops_and_rates_in_a_run(aedfl_sim):
    sim = aedfl_sim(make_method("aedfl-p", {"every": 1, "min_rate": 0.4, "max_rate": 0.6}), max_updates=2)
    sim.run()
    m = sim.method
    cand = m.pruner.candidates
    rate = m.pruner.rate
    assert rate.dtype == torch.float64 and rate.shape == (sim.D,) and bool(((rate >= 0.4 - 1e-6) & (rate <= 0.6)).all())
    for d in range(sim.D):
        kept = cand.unit_sum(m.masks[d].double())
        whole = (kept == 0) | (kept == cand.unit_sizes.double())
        assert bool(whole.all()) and bool(m.masks[d][cand.unit_ids < 0].all())     # whole units; classifier kept
        assert int((kept == 0).sum()) == int(float(rate[d]) * cand.num_units)
    assert torch.all(sim.x[~m.masks] == 0)
    x1 = sim._x_eval[:1]
    dense = count_flops(sim.net.template, x1).mfp
    for d in range(sim.D):
        ref = count_flops(sim.net.template, x1, {n: t.bool() for n, t in _split(sim.net.template,
                                                                               m.masks[d].float()).items()}).mfp
        assert float(sim.net.mfp(x1, m.masks[[d]])[0]) == pytest.approx(ref, rel=1e-12)
        assert float(sim.cost_fraction[d]) == pytest.approx(ref / dense, rel=1e-9)
    assert m.mflops(sim) < m.dense_mflops


def test_gmax_covers_every_local_update_not_only_prunings(aedfl_sim):
    sim = aedfl_sim(make_method("aedfl-p", {"every": 100}), max_updates=3)
    sim.run()
    assert bool((sim.method.pruner.gmax > 0).all()) and int(sim.t.min()) == 3    # no pruning happened


def test_corner_cases_zero_loss_zero_gradient_empty_cache(aedfl_sim):
    """All-zero model (zero gradient and curvature on the prunable block), a loss that is exactly 0, and no
    neighbour in the cache: no error; p* = 0 -> min_rate, one unit left in every layer, rate from the device alone."""
    sim = aedfl_sim(make_method("aedfl-0"), max_updates=1)
    cfg = ap.AdaptivePruningConfig(min_rate=0.3, max_rate=0.99)
    pruner = ap.AdaptivePruner(sim, cfg)
    cand = pruner.candidates
    devs = torch.tensor([0, 1])
    w = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])                     # empty cache: only the device itself
    nrates = torch.zeros(2, 2, dtype=torch.float64)
    for case in ("zero model", "zero loss"):
        x = torch.zeros(2, sim.P) if case == "zero model" else sim.net.init + torch.zeros(2, sim.P)
        if case == "zero loss":
            loss = pruner._loss
            pruner._loss = lambda flat, batch, loss=loss: 0.0 * loss(flat, batch)
        masks, cost = pruner.prune(sim, devs, x, None, w, w > 0, nrates)
        assert torch.equal(pruner.rate[devs], torch.full((2,), 0.3, dtype=torch.float64)), case
        for b in range(2):
            units = cand.unit_sum(masks[b].double()) > 0
            assert int((~units).sum()) == int(0.3 * cand.num_units)
            for gi in range(len(cand.groups)):
                assert bool(units[cand.group_of_unit == gi].any())
        assert torch.isfinite(cost).all()
    almost = ap.AdaptivePruningConfig(min_rate=0.99, max_rate=0.99)                    # would empty every layer
    pruner = ap.AdaptivePruner(sim, almost)
    masks, _ = pruner.prune(sim, devs, sim.net.init + torch.zeros(2, sim.P), None, w, w > 0, nrates)
    units = cand.unit_sum(masks[0].double()) > 0
    assert all(int(units[cand.group_of_unit == gi].sum()) == 1 for gi in range(len(cand.groups)))


def test_rates_differ_across_devices_and_over_time_on_real_digits():
    """A short real run: scikit-learn's digits (upsampled to 16 x 16 for LeNet-5), 4 devices, pruning every 2nd
    update."""
    from dflbench.data import load_dataset, partition
    from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
    from dflbench.engines.async_stacked import DeviceData
    from dflbench.engines.devices import sample_profiles
    from dflbench.models import make_model
    from dflbench.topology import exponential

    img = load_dataset("digits")
    up = lambda x: F.interpolate(x.float(), size=16, mode="nearest").to(torch.uint8)   # noqa: E731
    parts = partition(img.y_train.numpy(), 4, "dirichlet:0.5", seed=0, num_classes=10)
    data = DeviceData.from_indices(up(img.x_train), img.y_train, parts.indices, up(img.x_test[:64]),
                                   img.y_test[:64])
    torch.manual_seed(0)
    sim = AsyncSimulator(make_model("lenet5", 10, img.channels, 16), data, exponential(4),
                         sample_profiles(4, 0, latency=1e-3), make_method("aedfl-p", {"every": 2}),
                         AsyncConfig(max_updates=6, batch_size=8, lr=0.1, eval_samples=32, slot_width=0.0,
                                     local_steps=1, time_budget=None))
    history = []
    prune = ap.AdaptivePruner.prune

    def spy(self, host, devs, *args):
        out = prune(self, host, devs, *args)
        history.extend((int(d), int(host.t[d]), float(self.rate[d])) for d in devs)
        return out

    ap.AdaptivePruner.prune = spy
    try:
        sim.run()
    finally:
        ap.AdaptivePruner.prune = prune
    assert len(history) == 4 * 3
    final = sim.method.pruner.rate
    assert len(set(final.tolist())) > 1                                        # across devices
    per_device = [{r for dd, _, r in history if dd == d} for d in range(4)]
    assert sum(len(rates) > 1 for rates in per_device) >= 2, history          # over time


def _lenet28_sim(method):
    """LeNet-5 on 28x28 inputs with 10 classes (Table 1's Emnist/LeNet shape), 4 devices of synthetic data."""
    from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
    from dflbench.engines.async_stacked import DeviceData
    from dflbench.engines.devices import sample_profiles
    from dflbench.models import make_model
    from dflbench.topology import exponential

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (160,), generator=g)
    x = (torch.randn(160, 1, 28, 28, generator=g) * 40 + 20 * y.view(-1, 1, 1, 1)).clamp(0, 255).to(torch.uint8)
    data = DeviceData.from_indices(x, y, [list(range(i, 160, 4)) for i in range(4)], x[:32], y[:32])
    torch.manual_seed(0)
    return AsyncSimulator(make_model("lenet5", 10, 1, 28), data, exponential(4), sample_profiles(4, 1), method,
                          AsyncConfig(batch_size=8, max_updates=3, eval_interval=1.0, eval_samples=16,
                                      local_steps=1, slot_width=0.0, time_budget=None))


def test_lenet5_dense_mfp_is_table1s():
    """Table 1's dense LeNet MFP is 0.283: the pruning calibration (AdaptivePruningConfig) is against our
    model's 0.282."""
    sim = _lenet28_sim(make_method("aedfl-0"))
    assert float(sim.model_mflops()) == pytest.approx(0.283, rel=0.01)


def test_an_unknown_hessian_path_is_one_clear_line():
    with pytest.raises(UserError, match="hessian must be one of auto, loop, stacked, vmap, got 'fast'"):
        ap.AdaptivePruningConfig(hessian="fast")


def test_diagnostics_record_each_devices_mflops_at_every_evaluation(aedfl_sim):
    """The `mflops` diagnostic is each device's MFLOPs per sample under its mask at each evaluation: the last one
    equals the final masks' structure counted one device at a time, its mean is the run's MFP, and a device that
    pruned costs less than the dense model."""
    sim = aedfl_sim(make_method("aedfl-p", {"every": 1, "min_rate": 0.3, "max_rate": 0.5}), D=4, max_updates=3)
    sim.run()
    m = sim.method
    log = m.diagnostics
    assert len(log["mflops"]) == len(log["time"]) and all(len(row) == 4 for row in log["mflops"])
    per_device = [float(sim.model_mflops(m.step.masks[j:j + 1])[0]) for j in range(4)]
    assert log["mflops"][-1] == pytest.approx(per_device)
    assert m.mflops(sim) == pytest.approx(sum(per_device) / 4)
    assert all(v < sim.model_mflops() for v in per_device) and log["mflops"][0] == [sim.model_mflops()] * 4
