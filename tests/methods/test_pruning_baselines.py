"""HRank, FedAP and HAP on the AEDFL-0 loop: per-layer rates, adaptive rates that prune, HAP against an autograd
Hessian, and MFLOPs counted from the pruned structure."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dflbench.methods.registry import make_method
from dflbench.pruning import (
    PruningConfig,
    ScoringContext,
    find_candidates,
    get_scoring_rule,
    make_generator,
    model_loss_fn,
    model_params,
    proportional_group_rates,
)


def _units_kept(sim, masks):
    """Per candidate group, `[D, units]` bool: a unit is kept iff any of its entries is."""
    cand = find_candidates(sim.net.template, sim.data.prepare(sim.data.x_test[:1]))
    kept = cand.unit_sum(masks.double().cpu()) > 0
    return cand, [kept[:, s:e] for _, s, e in cand.group_slices()]


def _pruned_run(aedfl_sim, name, **options):
    sim = aedfl_sim(make_method(name, {"every": 2, **options}), max_updates=2)
    sim.run()
    return sim


def test_hrank_prunes_every_layer_at_the_configured_rate(aedfl_sim):
    sim = _pruned_run(aedfl_sim, "hrank", rate=0.4)
    cand, kept = _units_kept(sim, sim.method.masks)
    assert [g.module for g in cand.groups] == ["features.0", "features.3", "classifier.1", "classifier.3"]
    for g, k in zip(cand.groups, kept):
        assert ((~k).sum(1) == math.floor(0.4 * g.num_units)).all(), g.module      # 2, 6, 48, 33 of 6, 16, 120, 84


def test_hrank_prunes_the_lowest_feature_map_ranks_of_each_layer(aedfl_sim):
    """The pruner on a given model against a plain reference: forward hooks, matrix_rank per map, per-layer sort."""
    sim = aedfl_sim(make_method("hrank", {"rate": 0.5}))
    sim.method.setup(sim)
    x = sim.x[:2] + 0.05 * torch.randn(2, sim.P, generator=torch.Generator().manual_seed(1))
    devs = torch.tensor([0, 1])
    new, _ = sim.method.pruner.prune(sim, devs, x, None, None, None, None)
    _, kept = _units_kept(sim, new)
    xb, _ = sim.data.batch(devs, sim.t[devs], -1, sim.cfg.batch_size, sim.cfg.seed)
    model = sim.net.template
    layers = [model.features[0], model.features[3], model.classifier[1], model.classifier[3]]
    for b in range(2):
        torch.nn.utils.vector_to_parameters(x[b], model.parameters())
        maps = []
        hooks = [m.register_forward_hook(lambda m, i, o, maps=maps: maps.append(o.detach())) for m in layers]
        with torch.no_grad():
            model(xb[b])
        for h in hooks:
            h.remove()
        for layer, out in enumerate(maps):
            out = out if out.ndim == 4 else out[:, :, None, None]
            score = [sum(int(torch.linalg.matrix_rank(out[s, c])) for s in range(out.shape[0])) / out.shape[0]
                     for c in range(out.shape[1])]
            order = sorted(range(len(score)), key=lambda u: (score[u], u))
            expected = torch.ones(len(score), dtype=torch.bool)
            expected[order[:len(score) // 2]] = False
            assert torch.equal(kept[layer][b], expected), (b, layer)


def test_proportional_group_rates_share_out_the_rate():
    rates = proportional_group_rates(torch.tensor([0.5, 1.0, 1.0]), torch.tensor([10, 20, 30]), 0.4)
    torch.testing.assert_close(rates, torch.tensor([0.2, 0.4, 0.4], dtype=torch.float64) * 60 / 55)
    assert float((rates * torch.tensor([10.0, 20, 30])).sum()) == pytest.approx(0.4 * 60)
    capped = proportional_group_rates(torch.tensor([0.0, 1.0]), torch.tensor([90, 10]), 0.5)
    torch.testing.assert_close(capped, torch.tensor([0.0, 1.0], dtype=torch.float64))     # 5.0 capped at 1
    torch.testing.assert_close(proportional_group_rates(torch.zeros(2), torch.tensor([3, 4]), 0.3),
                               torch.full((2,), 0.3, dtype=torch.float64))
    with pytest.raises(ValueError, match="redundancy"):
        proportional_group_rates(torch.tensor([-1.0]), torch.tensor([3]), 0.3)


def test_fedap_prunes_a_nonzero_fraction_of_lenet5(aedfl_sim):
    sim = _pruned_run(aedfl_sim, "fedap", rate=0.4)
    m = sim.method
    cand, kept = _units_kept(sim, m.masks)
    pruned = torch.stack([(~k).sum(1) for k in kept], 1)                     # [D, groups]
    assert float(m.masks.double().mean()) < 0.9
    total = 0.4 * cand.num_units
    assert ((pruned.sum(1) <= total) & (pruned.sum(1) >= total - len(kept))).all()   # floors per layer
    assert (pruned > 0).all()                                                # every layer loses units
    assert (sim.cost_fraction < 1).all() and m.mflops(sim) < m.dense_mflops


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc1 = nn.Linear(8, 3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(torch.tanh(self.conv(x)).flatten(1))))


def test_hap_scores_match_an_autograd_hessian():
    torch.manual_seed(0)
    model = _Tiny().double()
    x, y = torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
    cand = find_candidates(model, x)
    params = model_params(model)
    names, shapes = list(params), [p.shape for p in params.values()]
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def loss(v):
        parts = torch.split(v, [math.prod(s) for s in shapes])
        return F.cross_entropy(functional_call(model, {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)},
                                               (x,)), y)

    H = torch.autograd.functional.hessian(loss, flat)
    sizes = cand.unit_sizes.double()
    weight_sq = cand.unit_sum(flat * flat)

    def hap(probes, seed):
        cfg = PruningConfig(rule="hap", num_probes=probes)
        ctx = ScoringContext(model, cand, model_loss_fn(model, F.cross_entropy, (x, y)), params, x, cfg,
                             make_generator(seed))
        return get_scoring_rule("hap")(ctx).scores

    z = (2 * torch.randint(0, 2, (3, flat.numel()), generator=make_generator(7), dtype=torch.int8) - 1).double()
    same_probes = cand.unit_sum((z * (z @ H.T)).mean(0)) / sizes * weight_sq
    torch.testing.assert_close(hap(3, 7), same_probes, rtol=1e-8, atol=1e-12)
    k = 3000                                    # Hutchinson -> tr(H_uu) / |u| ||w_u||^2 within 5 standard errors
    exact = cand.unit_sum(torch.diagonal(H)) / sizes * weight_sq
    ids = cand.unit_ids
    var = torch.stack([2 * (H[ids == u][:, ids == u] ** 2).sum() - 2 * (torch.diagonal(H)[ids == u] ** 2).sum()
                       + (H[ids == u][:, ids != u] ** 2).sum() for u in range(cand.num_units)])
    err = (hap(k, 0) - exact).abs()
    assert (err <= 5 * (var / k).sqrt() / sizes * weight_sq + 1e-12).all()


def test_hap_layer_limit_keeps_a_share_of_every_layer(aedfl_sim):
    """HAP's prune_ratio_limit: at rate 0.8 the whole-model ranking strips some layer past half its units; with
    layer_limit 0.5 every layer of every device loses at most floor(0.5 * units)."""
    kept = {}
    for limit in (1.0, 0.5):
        sim = _pruned_run(aedfl_sim, "hap", rate=0.8, layer_limit=limit)
        kept[limit] = _units_kept(sim, sim.method.masks)[1]
    free, capped = kept[1.0], kept[0.5]
    assert any((k.sum(1) < k.shape[1] - k.shape[1] // 2).any() for k in free)
    for k in capped:
        assert (k.sum(1) >= k.shape[1] - k.shape[1] // 2).all()


def test_mflops_are_counted_from_the_pruned_structure(aedfl_sim):
    """The MFP of a pruned LeNet-5 equals the dense MACs of the smaller LeNet-5 it amounts to (16x16x1 inputs, 4
    classes: 12x12 conv1 maps, 2x2 conv2 maps, 1x1 after pooling)."""
    sim = _pruned_run(aedfl_sim, "hrank", rate=0.4)
    m = sim.method
    _, kept = _units_kept(sim, m.masks)
    k1, k2, k3, k4 = (k.sum(1).double() for k in kept)
    macs = k1 * 25 * 144 + k2 * k1 * 25 * 4 + k3 * k2 + k4 * k3 + 4 * k4
    dense = 6 * 25 * 144 + 16 * 6 * 25 * 4 + 120 * 16 + 84 * 120 + 4 * 84
    assert m.dense_mflops == pytest.approx(dense / 1e6)
    torch.testing.assert_close(m.pruner.mflops(sim, m.masks), macs / 1e6)
    assert m.mflops(sim) == pytest.approx(float(macs.mean()) / 1e6)
    torch.testing.assert_close(sim.cost_fraction, macs / dense)


@pytest.mark.parametrize("name, paper", [("hrank", 0.277), ("fedap", 0.278)])
def test_layerwise_default_rates_give_table_1_compute_on_lenet5(name, paper):
    """HRank's and FedAP's default rate removes from LeNet-5 about the MACs Table 1 reports (dense 0.283): at 0.05
    each layer's floor(rate * units) prunes linear neurons only (conv1 6 and conv2 16 channels keep all), and the
    structural count of that structure is within 1.5% of the paper's fraction."""
    from dflbench.models.registry import make_model
    from dflbench.pruning import prune_model, structured_mfp

    torch.manual_seed(0)
    model = make_model("lenet5", 10, 1, 28)
    rate = make_method(name).options.rate
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    cfg = PruningConfig(rule=name, approximation="diagonal", slq_steps=4, layerwise=name == "hrank")
    res = prune_model(model, F.cross_entropy, (x, y), rate, config=cfg,
                      initial_params={k: v.detach() + 0.01 * torch.randn_like(v) for k, v in model.named_parameters()})
    dense = structured_mfp(model, x[:1], torch.ones(1, sum(p.numel() for p in model.parameters()), dtype=torch.bool))
    ratio = float(structured_mfp(model, x[:1], res.flat_mask(model).bool()[None])[0] / dense[0])
    assert ratio == pytest.approx(paper / 0.283, abs=0.015)
    assert ratio < 1.0


def test_fedap_keeps_each_devices_first_layer_rates_and_charges_their_spectra_once(aedfl_sim, monkeypatch):
    """FedAP sets a device's layer rates at its first pruning (the Hessian spectra) and keeps them: later prunings
    prune the same count per layer, ranked by HRank, and only the first is charged the spectra's products."""
    import dflbench.methods.pruning_baselines as pb

    calls = []
    real = pb.prune_model
    monkeypatch.setattr(pb, "prune_model", lambda *a, **k: calls.append(k["config"].rule) or real(*a, **k))
    sim = aedfl_sim(make_method("fedap", {"every": 2, "rate": 0.4}), max_updates=4)
    sim.run()
    pr = sim.method.pruner
    assert set(pr.layer_rates) == set(range(sim.D))                      # every device pruned at t = 2 and t = 4
    assert calls.count("fedap") == sim.D and calls.count("hrank") == sim.D
    cand, kept = _units_kept(sim, sim.method.masks)
    sizes = torch.tensor([g.num_units for g in cand.groups])
    for d, rates in pr.layer_rates.items():
        pruned = torch.tensor([int((~k[d]).sum()) for k in kept])
        assert torch.equal(pruned, torch.minimum(torch.floor(rates * sizes).long(), sizes - 1))
    pr.layer_rates.pop(0)                                                # device 0 as before its first pruning
    first, later = pr.work_macs(sim, torch.tensor([0])), pr.work_macs(sim, torch.tensor([1]))
    assert float(first[0]) > float(later[0]) > 0                         # spectra charged once per device


def test_prune_model_applies_given_group_rates_with_another_rules_scores():
    """`group_rates` replaces the rule's selection: hrank scores cut at the given per-layer rates."""
    from dflbench.models.registry import make_model
    from dflbench.pruning import prune_model, select_units

    torch.manual_seed(0)
    model = make_model("lenet5", 10, 1, 28)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    rates = torch.tensor([0.5, 0.25, 0.1, 0.0], dtype=torch.float64)
    res = prune_model(model, F.cross_entropy, (x, y), 0.2, config=PruningConfig(rule="hrank"), group_rates=rates)
    assert torch.equal(res.group_rates, rates)
    assert torch.equal(res.keep_units, select_units(res.scores, res.candidates, 0.2, group_rates=rates))
    pruned = [int((~res.keep_units[s:e]).sum()) for _, s, e in res.candidates.group_slices()]
    assert pruned == [int(r * g.num_units) for r, g in zip(rates.tolist(), res.candidates.groups)]
