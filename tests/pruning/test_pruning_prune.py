"""Selection, the scoring rules (AEDFL, magnitude, HRank, FedAP, HAP) and the engine entry point."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dflbench.pruning import (
    PruningConfig,
    ScoringContext,
    apply_masks,
    count_flops,
    find_candidates,
    get_scoring_rule,
    list_scoring_rules,
    local_rate,
    make_generator,
    model_loss_fn,
    model_params,
    neighbor_weighted_rate,
    prune_model,
    select_units,
)


def _reference_select(scores, sizes, rate, min_keep):
    """Greedy loop: repeatedly prune the lowest-scoring unit whose group can still lose one."""
    left = list(sizes)
    group = [g for g, s in enumerate(sizes) for _ in range(s)]
    keep = [True] * len(scores)
    budget = int(rate * len(scores))
    for u in sorted(range(len(scores)), key=lambda i: (scores[i], i)):
        if budget == 0:
            break
        if left[group[u]] > min_keep:
            keep[u] = False
            left[group[u]] -= 1
            budget -= 1
    return keep


def test_hap_layer_limit_caps_each_group_without_redistributing(tiny_cnn):
    """HAP's `prune_ratio_limit`: the global choice, then each group trimmed back to its lowest floor(limit * size)
    pruned units (a loop over groups); what a capped group keeps is not pruned elsewhere."""
    model, (x, _) = tiny_cnn()
    cand = find_candidates(model, x)
    sizes = [g.num_units for g in cand.groups]
    group = [g for g, s in enumerate(sizes) for _ in range(s)]
    gen = torch.Generator().manual_seed(1)
    for limit in (0.0, 0.3, 0.5, 1.0):
        scores = torch.randn(cand.num_units, generator=gen, dtype=torch.float64)
        scores[: sizes[0]] -= 10                                     # group 0 holds the lowest scores
        uncapped = _reference_select(scores.tolist(), sizes, 0.6, 1)
        expected = list(uncapped)
        for g, size in enumerate(sizes):
            pruned = sorted((u for u in range(len(group)) if group[u] == g and not uncapped[u]),
                            key=lambda u: (scores[u].item(), u))
            for u in pruned[int(limit * size):]:
                expected[u] = True
        keep = select_units(scores, cand, 0.6, max_group_rate=limit)
        assert keep.tolist() == expected
        assert (~keep).sum() <= sum(not k for k in uncapped)
    assert select_units(scores, cand, 0.6, max_group_rate=0.5)[: sizes[0]].sum() == sizes[0] - int(0.5 * sizes[0])
    with pytest.raises(ValueError, match="max_group_rate"):
        PruningConfig(rule="hap", max_group_rate=1.5)


def test_select_units_matches_greedy_reference(tiny_cnn):
    model, (x, _) = tiny_cnn()
    cand = find_candidates(model, x)
    sizes = [g.num_units for g in cand.groups]
    gen = torch.Generator().manual_seed(0)
    for rate in (0.0, 0.2, 0.5, 0.9, 1.0):
        for min_keep in (0, 1, 2):
            scores = torch.randn(cand.num_units, generator=gen, dtype=torch.float64)
            keep = select_units(scores, cand, rate, min_units_kept=min_keep)
            assert keep.tolist() == _reference_select(scores.tolist(), sizes, rate, min_keep)
    group_rates = torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64)
    scores = torch.arange(cand.num_units, 0, -1).double()
    keep = select_units(scores, cand, 0.0, group_rates=group_rates)
    assert keep.tolist() == [True, True, False, False] + [True] * 5 + [True] + [False] * 5
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        select_units(scores, cand, 1.5)
    with pytest.raises(ValueError, match="scores have shape"):
        select_units(scores[:-1], cand, 0.5)


def _ctx(model, batch, loss_fn=None, **kw):
    cand = find_candidates(model, batch[0])
    params = model_params(model)
    loss_fn = loss_fn or model_loss_fn(model, F.cross_entropy, batch)
    return ScoringContext(model, cand, loss_fn, params, batch[0], PruningConfig(**kw.pop("config", {})),
                          make_generator(0), **kw)


def test_magnitude_and_hap_scores_match_per_unit_loops(tiny_cnn):
    model, batch = tiny_cnn()
    ctx = _ctx(model, batch)
    params, cand = ctx.params, ctx.candidates
    mag = get_scoring_rule("magnitude")(ctx).scores
    for g, start, _stop in cand.group_slices():
        for u in range(g.num_units):
            entries = torch.cat([params[s.name].movedim(s.dim, 0)[s.indices(g.num_units)[u]].reshape(-1)
                                 for s in g.slices])
            assert mag[start + u] == pytest.approx(float(entries.abs().mean()))
    # HAP with a separable quadratic loss, where the Hutchinson diagonal is exact: tr(H_uu)/|u| ||w_u||^2
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    curv = torch.linspace(0.5, 2.0, flat.numel(), dtype=torch.float64)

    def quad(p):
        x = torch.cat([t.reshape(-1) for t in p.values()])
        return 0.5 * (curv * x * x).sum()

    hap = get_scoring_rule("hap")(_ctx(model, batch, loss_fn=quad)).scores
    for u in range(cand.num_units):
        sel = cand.unit_ids == u
        expected = curv[sel].sum() / sel.sum() * (flat[sel] ** 2).sum()
        assert hap[u] == pytest.approx(float(expected), rel=1e-10)


def test_hrank_scores_are_average_feature_map_ranks(tiny_cnn, tiny_vit):
    model, batch = tiny_cnn()
    model.eval()
    ctx = _ctx(model, batch)
    scores = get_scoring_rule("hrank")(ctx).scores
    x = batch[0]
    with torch.no_grad():
        c1 = model.conv1(x)
        c2 = model.conv2(F.relu(model.bn1(c1)))
    for offset, maps in ((0, c1), (4, c2)):
        for c in range(maps.shape[1]):
            ranks = [int(torch.linalg.matrix_rank(maps[b, c])) for b in range(maps.shape[0])]
            assert scores[offset + c] == pytest.approx(sum(ranks) / len(ranks))
    assert (scores[9:] == 1).all()  # fc1 neurons: 1 x 1 maps of nonzero activations
    vit, vbatch = tiny_vit()
    vscores = get_scoring_rule("hrank")(_ctx(vit, vbatch)).scores
    assert torch.isfinite(vscores).all() and (vscores >= 1).all()


def test_aedfl_scores_are_eq_5_15(tiny_cnn):
    from dflbench.pruning import HessianOperator, aedfl_objective, exploration_weight, taylor_impact
    model, batch = tiny_cnn(bn=False)
    ctx = _ctx(model, batch, max_grad_norm=10.0, config={"approximation": "block", "num_probes": 4})
    scores = get_scoring_rule("aedfl")(ctx).scores
    op = HessianOperator(ctx.loss_fn, ctx.params)
    z = op.rademacher(4, make_generator(0))
    diag = (z * op.matmat(z)).mean(dim=0)
    impact = taylor_impact(op, ctx.candidates, diag, damping=1e-3)
    g = op.flatten(op.gradient())
    lam = exploration_weight(float(g.norm()), 10.0, 2.0)
    torch.testing.assert_close(scores, aedfl_objective(impact, float(op.loss()), float(g.norm()), lam))
    with pytest.raises(ValueError, match="max_grad_norm"):
        get_scoring_rule("aedfl")(_ctx(model, batch))


@pytest.mark.parametrize("rule", ["aedfl", "magnitude", "hrank", "fedap", "hap"])
def test_prune_model_with_every_rule(tiny_cnn, rule):
    model, batch = tiny_cnn()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        opt.step()
    cfg = PruningConfig(rule=rule, approximation="block", num_probes=4, slq_steps=8, slq_runs=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    res = prune_model(model, F.cross_entropy, batch, 0.4, config=cfg, max_grad_norm=5.0, initial_params=init)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # the model is not modified
    assert res.scores.shape == (res.candidates.num_units,) and torch.isfinite(res.scores).all()
    assert 0.0 <= res.achieved_rate <= 1.0
    if rule != "fedap":
        assert res.achieved_rate == int(0.4 * 15) / 15
    for _g, start, stop in res.candidates.group_slices():
        assert res.keep_units[start:stop].sum() >= 1
    assert set(res.masks) == set(model_params(model))
    torch.testing.assert_close(res.flat_mask(model).sum(),
                               torch.tensor(float(sum(v.numel() for k, v in model.state_dict().items()
                                                      if v.is_floating_point())
                                                  - res.candidates.unit_sizes[~res.keep_units].sum())))


def test_engine_flow_and_pruned_units_can_come_back(tiny_cnn):
    """Rate (eigen-gap + 5.16), prune, train masked, then a neighbour revives a pruned unit and it returns."""
    model, batch = tiny_cnn(bn=False)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        opt.step()
    cfg = PruningConfig(rule="magnitude", slq_steps=8, slq_runs=2)
    est = local_rate(model, F.cross_entropy, batch, init, config=cfg)
    assert 0.0 <= est.rate <= 1.0 and est.lipschitz >= 0
    rate = neighbor_weighted_rate(est.rate, 0.5, [0.6], [0.5])
    res = prune_model(model, F.cross_entropy, batch, max(rate, 0.3), config=cfg)
    handle = apply_masks(model, res.masks, opt)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        opt.step()
    pruned = int(torch.nonzero(~res.keep_units)[0])
    handle.remove()
    with torch.no_grad():  # heterogeneous aggregation (4.11) brings the unit's large values from a neighbour
        for name in res.masks:
            unit = res.candidates.param_masks(torch.arange(res.candidates.num_units) != pruned)[name]
            dict(model.named_parameters())[name][~unit] = 10.0
    again = prune_model(model, F.cross_entropy, batch, res.rate, config=cfg, candidates=res.candidates)
    assert bool(again.keep_units[pruned])


def test_bad_configuration_and_inputs_raise(tiny_cnn):
    model, batch = tiny_cnn()
    with pytest.raises(ValueError, match="unknown scoring rule"):
        PruningConfig(rule="random")
    with pytest.raises(ValueError, match="unknown Hessian approximation"):
        PruningConfig(approximation="kfac")
    with pytest.raises(ValueError, match="must be >= 1"):
        PruningConfig(c=0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        prune_model(model, F.cross_entropy, batch, -0.1, config=PruningConfig(rule="magnitude"))
    with pytest.raises(ValueError, match="initial_params"):
        prune_model(model, F.cross_entropy, batch, 0.5, config=PruningConfig(rule="fedap"))
    with pytest.raises(ValueError, match="candidate set is empty"):
        prune_model(nn.Linear(4, 2), F.cross_entropy, (torch.randn(3, 4), torch.tensor([0, 1, 0])), 0.5,
                    config=PruningConfig(rule="magnitude"))
    assert list_scoring_rules() == ["aedfl", "fedap", "hap", "hrank", "magnitude"]


def test_a_taken_scoring_rule_name_is_refused():
    from dflbench.pruning.scoring import get_scoring_rule, register_scoring_rule

    held = get_scoring_rule("hrank")
    with pytest.raises(ValueError, match=r"'hrank' is already registered \(by dflbench.pruning.scoring.hrank_scores\)"):
        register_scoring_rule("hrank")(lambda ctx: None)
    assert get_scoring_rule("hrank") is held and list_scoring_rules() == ["aedfl", "fedap", "hap", "hrank", "magnitude"]


@pytest.mark.gpu
@pytest.mark.parametrize("rule", ["aedfl", "magnitude", "hrank", "hap"])
def test_prune_on_cuda_matches_cpu(tiny_cnn, rule):
    model, (x, y) = tiny_cnn(bn=False)
    cfg = PruningConfig(rule=rule, num_probes=4)
    cpu = prune_model(model, F.cross_entropy, (x, y), 0.4, config=cfg, max_grad_norm=5.0)
    gpu = prune_model(model.cuda(), F.cross_entropy, (x.cuda(), y.cuda()), 0.4, config=cfg, max_grad_norm=5.0)
    torch.testing.assert_close(gpu.scores.cpu(), cpu.scores, atol=1e-8, rtol=1e-6)
    assert torch.equal(gpu.keep_units, cpu.keep_units)
    assert all(m.is_cuda for m in gpu.masks.values())
    assert count_flops(model, x.cuda(), gpu.masks).macs == count_flops(model.cpu(), x, cpu.masks).macs
