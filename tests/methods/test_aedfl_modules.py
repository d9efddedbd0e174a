"""AEDFL's modules act in a run: AEDFL-0's aggregation rule, lambda and the selection policy against harmful
neighbours, the diagnostics they leave, and the cost model's charge for their work."""

import pytest
import torch

from dflbench.aggregation import static_weights
from dflbench.engines.async_sim import Message
from dflbench.engines.async_stacked import local_sgd
from dflbench.engines.coordinator import FaultConfig
from dflbench.engines.cost import average_macs, forward_macs, gradient_macs
from dflbench.methods.aedfl.step import ModelMessage
from dflbench.methods.registry import make_method


def test_static_weights_are_the_rows_of_w_with_absent_neighbours_left_on_the_local_model():
    active = torch.tensor([[True, True, False, True], [True, False, False, False]])
    w = static_weights(active, torch.tensor([3, 2]))
    assert torch.allclose(w, torch.tensor([[0.5, 0.25, 0.0, 0.25], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="local"):
        static_weights(torch.tensor([[False, True]]), torch.tensor([1]))


def test_aedfl0_averages_each_cached_model_once(aedfl_sim):
    sim = aedfl_sim(make_method("aedfl-0"), D=8, max_updates=10)
    m = sim.method
    m.setup(sim)
    d = 0
    senders = sim.topology.in_neighbors(d)
    deg = len(senders)
    g = torch.Generator().manual_seed(1)
    models = {j: torch.randn(sim.P, generator=g) for j in senders[:2]}
    for j, model in models.items():
        m.on_arrive(sim, Message(j, d, ModelMessage(model, None, 1.0, 10, 1, None), 0, 0.0))

    def half(x):
        return local_sgd(sim.net, sim.data, torch.tensor([d]), sim.t[[d]], x.unsqueeze(0), steps=1, lr=sim.cfg.lr,
                         batch_size=sim.cfg.batch_size, seed=sim.cfg.seed)[0][0]

    x0 = sim.x[d].clone()
    expected = (1 - 2 / (deg + 1)) * half(x0) + sum(v for v in models.values()) / (deg + 1)
    m.on_complete(sim, torch.tensor([d]), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(sim.x[d], expected, rtol=1e-5, atol=1e-6)
    x1 = sim.x[d].clone()
    expected = half(x1)                               # both cached models were averaged once already
    m.on_complete(sim, torch.tensor([d]), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(sim.x[d], expected, rtol=1e-5, atol=1e-6)
    sim_all = aedfl_sim(make_method("aedfl-0", {"reuse_aggregated": True}), D=8)
    assert sim_all.method.cfg.reuse_aggregated


def _run(aedfl_sim, name, corrupt=(), mode="noise", updates=40):
    sim = aedfl_sim(make_method(name), D=16, faults=FaultConfig(corrupt=corrupt, corrupt_mode=mode, corrupt_scale=3.0),
                    max_updates=updates, eval_interval=0.2, eval_samples=32)
    return sim, sim.run()


def _late_mean(series, devices):
    late = series[len(series) // 2:]
    vals = [row[j] for row in late for j in devices if row[j] is not None]
    return sum(vals) / len(vals)


BAD = (3, 11)
GOOD = [j for j in range(16) if j not in BAD]


def test_noise_pushing_neighbours_cost_aedfl_less_than_aedfl0(aedfl_sim):
    """2 of 16 devices push noise (announcing its loss): AEDFL without pruning loses less accuracy to them than
    AEDFL-0. (Whether its RL selection singles them out is not asserted here: from the policy's AEDFL-0 start, 0.99
    targets, the late selection probability of the noise senders was 0.73 against 0.52 for the others after 100
    updates of this synthetic task, while on Fashion-MNIST with 16 devices it fell to 0.003 against 0.056; the
    mechanism itself is tested in tests/aggregation/test_aggregation_policy.py.)"""
    res = _run(aedfl_sim, "aedfl-rl-dwu", BAD)[1]
    drop_aedfl = _run(aedfl_sim, "aedfl-rl-dwu")[1].accuracy - res.accuracy
    drop_zero = _run(aedfl_sim, "aedfl-0")[1].accuracy - _run(aedfl_sim, "aedfl-0", BAD)[1].accuracy
    assert drop_aedfl < drop_zero, (drop_aedfl, drop_zero)


def test_label_flipping_neighbours_get_lower_lambda(aedfl_sim):
    """2 of 16 devices train on flipped labels: their models pull the aggregate the wrong way, which eq. 4.10's
    first-order derivative sees, so their receivers lower their lambda (zero-mean noise is invisible to it at first
    order: the policy's loss feature is what catches that). The size of the gap depends on the minibatch draws of
    this tiny run: late mean lambda bad / good measured 0.74-0.93 over four draws at 80 updates (0.80-1.04 at 40,
    where the test first ran), so the direction is asserted, at 80 updates."""
    lam = _run(aedfl_sim, "aedfl-dwu", BAD, mode="labels", updates=80)[0].method.diagnostics["lambda"]
    lam_bad, lam_good = _late_mean(lam, BAD), _late_mean(lam, GOOD)
    assert lam_bad < lam_good, (lam_bad, lam_good)


def test_the_clock_charges_the_modules_work(aedfl_sim):
    """aedfl-rl-dwu's updates take longer in virtual time than aedfl-0's by the work the cost model assigns."""
    runs = {}
    for name in ("aedfl-0", "aedfl-rl-dwu"):
        sim = aedfl_sim(make_method(name), D=4, max_updates=1)
        sim.method.setup(sim)
        out = sim.method.step.update(sim, torch.arange(4), sim.x.clone())
        runs[name] = (sim, out.work)
    sim, work0 = runs["aedfl-0"]
    _, work = runs["aedfl-rl-dwu"]
    mfp, b = sim.dense_mfp, sim.cfg.batch_size
    assert torch.allclose(work0, average_macs(torch.ones(4, dtype=torch.float64), sim.P))  # only itself cached yet
    extra = work - work0
    assert (extra > gradient_macs(mfp, b) + 2 * forward_macs(mfp, b)).all()
    assert (sim.work_time(torch.arange(4), extra) > 0).all()


def test_lambda_step_follows_a_finite_difference_of_the_aggregated_loss(aedfl_sim):
    """Eq. 4.8 in the step: the new model is the aggregate with the current weights (eq. 4.9 with eq. 4.6-4.7 at
    lambda^{t-1}), then lambda moves by -eta * dF/dlambda / max|dF/dlambda|, dF/dlambda_j the derivative of the loss
    at that aggregate on the next update's first SGD minibatch (key (d, t, 0)), here by central differences in
    float64; the neighbours' lambdas move by different amounts."""
    import copy

    import torch.nn.functional as F
    from torch.nn.utils import vector_to_parameters

    from dflbench.aggregation import dynamic_weights

    sim = aedfl_sim(make_method("aedfl-dwu", {"lambda_lr": 0.3}), D=8, max_updates=5)
    m = sim.method
    m.setup(sim)
    d = 0
    g = torch.Generator().manual_seed(4)
    senders = sim.topology.in_neighbors(d)[:2]
    for j, (loss, samples) in zip(senders, [(0.7, 20), (2.0, 50)]):
        model = sim.x[d] + 0.05 * torch.randn(sim.P, generator=g)
        m.on_arrive(sim, Message(j, d, ModelMessage(model, None, loss, samples, 1, None), 0, 0.0))
    slots = [int(m.cache.slots.slot_of[d, j]) for j in senders]
    lam0 = m.step.dwu.lam[d].clone()
    x_half, train_loss, _ = local_sgd(sim.net, sim.data, torch.tensor([d]), sim.t[[d]], sim.x[[d]], steps=1,
                                      lr=sim.cfg.lr, batch_size=sim.cfg.batch_size, seed=sim.cfg.seed)
    m.on_complete(sim, torch.tensor([d]), torch.tensor([0.0], dtype=torch.float64))
    xb, yb = sim.data.batch(torch.tensor([d]), torch.tensor([1]), 0, sim.cfg.batch_size, sim.cfg.seed)
    models = torch.stack([x_half[0]] + [m.cache.models[d, k] for k in slots]).double()
    samples = torch.tensor([float(sim.data.sizes[d]), 20.0, 50.0], dtype=torch.float64)
    stale = torch.ones(3, dtype=torch.float64)                      # local: the floor 1; both arrived at t = 0
    losses = torch.tensor([float(train_loss[0]), 0.7, 2.0], dtype=torch.float64)
    net = copy.deepcopy(sim.net.template).double().train()

    def f(lam):
        w = dynamic_weights(lam, samples, stale, losses, config=m.cfg.weights)
        vector_to_parameters(w @ models, net.parameters())
        with torch.no_grad():
            return float(F.cross_entropy(net(xb[0].double()), yb[0]))

    lam = torch.cat([lam0[:1], lam0[[k + 1 for k in slots]]]).double()
    w0 = dynamic_weights(lam, samples, stale, losses, config=m.cfg.weights)
    torch.testing.assert_close(sim.x[d].double(), w0 @ models, rtol=1e-5, atol=1e-6)         # omega^{t-1}
    h = 1e-5
    fd = torch.tensor([(f(lam + h * e) - f(lam - h * e)) / (2 * h) for e in torch.eye(3, dtype=torch.float64)[1:]])
    expected = lam[1:] - 0.3 * fd / fd.abs().max()
    got = m.step.dwu.lam[d, [k + 1 for k in slots]].double()
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-3)
    assert (got - lam[1:]).abs().max() == pytest.approx(0.3, abs=1e-6)       # the most sensitive moves by eta
    assert abs(float((got - lam[1:])[0] - (got - lam[1:])[1])) > 1e-3        # spread across neighbours


@pytest.mark.parametrize("name, policy_reward", [("aedfl", "change"), ("aedfl-rl", "change"), ("aedfl-rl", "loss"),
                                          ("aedfl-dwu", None)])
def test_the_next_first_sgd_step_is_computed_once_and_equals_a_fresh_gradient(aedfl_sim, name, policy_reward):
    """With dwu or rl the step computes the loss and gradient at each new model on the next update's first SGD
    minibatch (eq. 4.8's g_i, eq. 4.4's reward): they equal torch.func's loss and gradient of the plain module at
    that model and minibatch (pruned variants: at the masked model), the policy is rewarded with that loss minus the
    loss of the pre-aggregation model there (policy_reward=loss: that loss alone), and the next update, which reuses
    them, ends where a fresh computation of its first step ends."""
    import copy

    import torch.nn.functional as F
    from torch.func import functional_call, grad_and_value

    from dflbench.engines.async_stacked import local_sgd as plain_sgd

    options = {"every": 1} if name == "aedfl" else {}
    if policy_reward is not None:
        options["policy_reward"] = policy_reward
    sim = aedfl_sim(make_method(name, options or None), D=8, max_updates=5)
    m = sim.method
    m.setup(sim)
    step = m.step
    rows = torch.arange(8)
    g = torch.Generator().manual_seed(2)
    for d in range(8):
        for j in sim.topology.in_neighbors(d)[:2]:
            msg = ModelMessage(sim.x[d] + 0.05 * torch.randn(sim.P, generator=g), None, 0.5, 20, 1, None)
            m.on_arrive(sim, Message(j, d, msg, 0, 0.0))
    rewards, halves = [], []
    if step.policy is not None:
        reward = step.policy.reward
        step.policy.reward = lambda devs, r: (rewards.append(r.clone()), reward(devs, r))[1]
    times = torch.zeros(8, dtype=torch.float64)
    m.on_complete(sim, rows, times)
    assert torch.equal(step.first_at, sim.t) and (sim.t == 1).all()
    module = copy.deepcopy(sim.net.template).train()
    names = [k for k, _ in module.named_parameters()]

    def loss_at(flat, xb, yb):
        params = dict(zip(names, torch.split(flat, [p.numel() for p in module.parameters()])))
        params = {k: v.view_as(p) for (k, v), p in zip(params.items(), module.parameters())}
        return F.cross_entropy(functional_call(module, params, (xb,)), yb)

    for d in range(8):
        xb, yb = sim.data.batch(torch.tensor([d]), torch.tensor([1]), 0, sim.cfg.batch_size, sim.cfg.seed)
        ref_g, ref_loss = grad_and_value(loss_at)(sim.x[d].clone(), xb[0], yb[0])
        torch.testing.assert_close(step.first_grad[d], ref_g, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(step.first_loss[d], ref_loss, rtol=1e-5, atol=1e-6)
        if rewards:
            # the pre-aggregation model: this update's SGD from the initial model, as the step ran it
            x_half = plain_sgd(sim.net, sim.data, torch.tensor([d]), torch.tensor([0]), sim.net.init.unsqueeze(0),
                               steps=sim.cfg.local_steps, lr=sim.cfg.lr, batch_size=sim.cfg.batch_size,
                               seed=sim.cfg.seed)[0][0]
            halves.append(float(ref_loss - (loss_at(x_half, xb[0], yb[0]) if policy_reward == "change" else 0)))
    if rewards:
        torch.testing.assert_close(rewards[0].double(), torch.tensor(halves, dtype=torch.float64), rtol=1e-4,
                                   atol=1e-5)
    x1, masks = sim.x.clone(), step.masks.clone()
    fresh = plain_sgd(sim.net, sim.data, rows, sim.t.clone(), x1, steps=sim.cfg.local_steps, lr=sim.cfg.lr,
                      batch_size=sim.cfg.batch_size, seed=sim.cfg.seed,
                      masks=masks if step.pruner is not None else None)[0]
    seen = []
    sgd = local_sgd_spy(seen)
    import dflbench.methods.aedfl.step as step_module
    original, step_module.local_sgd = step_module.local_sgd, sgd
    try:
        m.on_complete(sim, rows, times)
    finally:
        step_module.local_sgd = original
    assert seen[0][2].all()                                       # every row's first step was reused
    torch.testing.assert_close(seen[0][3], fresh, rtol=1e-5, atol=1e-6)


def local_sgd_spy(seen):
    """`local_sgd` recording (loss, grad, known, result) of each call that was given a first step."""
    def spy(*args, first=None, **kwargs):
        out = local_sgd(*args, first=first, **kwargs)
        if first is not None:
            seen.append((first[0], first[1], first[2], out[0]))
        return out
    return spy
