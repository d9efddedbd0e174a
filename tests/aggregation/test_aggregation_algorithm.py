"""Algorithm 1 (lines 3-7) for a batch of devices with DynamicWeights and masked_average, and the pieces composed as
the AEDFL step uses them: NeighborCache -> selection features -> PolicyBank -> dynamic weights -> masked
aggregation (the step itself: tests/methods/test_aedfl_step.py)."""

import torch

from dflbench.aggregation import (
    DynamicWeights,
    DynamicWeightsConfig,
    FlatSpec,
    NeighborCache,
    PolicyBank,
    PolicyConfig,
    PretrainConfig,
    SelectionPolicy,
    dynamic_weights,
    in_neighbor_slots,
    lambda_grad,
    masked_average,
    pretrain_policy,
    selection_features,
    staleness,
)


def test_dynamic_weights_step_is_algorithm_1_lines_3_to_7():
    g = torch.Generator().manual_seed(0)
    d, k, p = 3, 4, 20
    models = torch.randn(d, k, p, generator=g, dtype=torch.float64)
    masks = torch.rand(d, k, p, generator=g) < 0.7
    samples = torch.randint(5, 50, (d, k), generator=g).double()
    dt = torch.randint(0, 5, (d, k), generator=g).double()
    loss = torch.rand(d, k, generator=g, dtype=torch.float64) + 0.2
    target = torch.randn(d, p, generator=g, dtype=torch.float64)
    cfg = DynamicWeightsConfig(lr=0.2, step_rule="plain")
    dw = DynamicWeights(5, k, cfg, dtype=torch.float64)
    devices = torch.tensor([4, 0, 2])
    lam0 = dw.lam[devices].clone()

    def grad_fn(mu):                      # gradient of F_i(m) = 0.5 ||m - target_i||^2 at each device's aggregate
        return mu - target

    mu = masked_average(models, dw.weights(samples, dt, loss, None, devices), masks)      # 4.11, current weights
    w_new = dw.step(models, grad_fn(mu), samples, dt, loss, masks, None, devices)          # 4.8, then 4.6-4.7
    new_models = masked_average(models, w_new, masks)                                      # line 7
    # the same steps written out
    w_old = dynamic_weights(lam0, samples, dt, loss, None, cfg)
    torch.testing.assert_close(mu, masked_average(models, w_old, masks))
    lam = (lam0 - 0.2 * lambda_grad(lam0, samples, dt, loss, models, mu - target, masks, None, cfg)).clamp_min(
        cfg.lambda_min)
    lam[:, 0] = lam0[:, 0]
    assert torch.allclose(w_new, dynamic_weights(lam, samples, dt, loss, None, cfg))
    o = masks.double()                                                  # eq. 4.11 entry by entry, local mask o_0
    den = (w_new.unsqueeze(-1) * o).sum(1)
    ref = torch.where(den > 0, (w_new.unsqueeze(-1) * o * models).sum(1) / den.clamp_min(1e-300), models[:, 0])
    assert torch.allclose(new_models, ref * o[:, 0])
    f_old = 0.5 * ((mu - target) * masks[:, 0]).square().sum()
    f_new = 0.5 * ((new_models - target) * masks[:, 0]).square().sum()
    assert f_new < f_old


def test_cache_policy_weights_aggregation_pipeline():
    g = torch.Generator().manual_seed(5)
    spec = FlatSpec(("w",), ((30,),), (torch.float32,))
    adj = torch.zeros(4, 4, dtype=torch.bool)
    adj[0, [1, 2, 3]] = True
    adj[1, [0, 2, 3]] = True
    cache = NeighborCache(in_neighbor_slots(adj, rows=[0, 1]), spec)
    for row in (0, 1):
        for j in cache.slots.neighbors[row].tolist():
            cache.put(row, j, torch.randn(30, generator=g), stamp=j + 1, loss=0.5 + j / 10, samples=10,
                      mask=torch.rand(30, generator=g) < 0.8)
    rows = torch.tensor([0, 1])
    cache.mark_aggregated(rows, torch.tensor([[False, True, False], [False, False, False]]), cache.read(rows).seq)
    view = cache.read(rows)
    local = torch.randn(2, 30, generator=g)
    t = torch.tensor([5, 5])
    models = torch.cat([local.unsqueeze(1), view.models], 1)
    masks = torch.cat([torch.ones(2, 1, 30, dtype=torch.bool), view.masks], 1)
    dt = staleness(t, torch.cat([t.unsqueeze(1), view.stamp], 1))
    loss = torch.cat([torch.full((2, 1), 0.6, dtype=torch.float64), view.loss], 1)
    samples = torch.cat([torch.full((2, 1), 12.0, dtype=torch.float64), view.samples], 1)
    valid = view.valid

    policy = SelectionPolicy(hidden=16, generator=g)
    pretrain_policy(policy, g, PretrainConfig(steps=80, num_slots=3))
    bank = PolicyBank(2, PolicyConfig(hidden=16), init=policy)
    feats = selection_features(view.aggregated, dt[:, 1:], loss[:, 1:])
    chosen, probs = bank.sample(feats, valid, torch.rand(2, 3, generator=g))
    assert probs[0, 1] < 0.2, "the already aggregated model of node 2 is unlikely to be chosen"
    active = torch.cat([torch.ones(2, 1, dtype=torch.bool), chosen & valid], dim=1)
    dw = DynamicWeights(2, 4)
    w = dw.weights(samples, dt, loss, active)
    out = masked_average(models, w, masks)
    for i in range(2):                        # each device on its own equals the batched call
        solo = masked_average(models[i, active[i]], w[i, active[i]] / w[i, active[i]].sum(), masks[i, active[i]])
        assert torch.allclose(out[i], solo, atol=1e-6)
