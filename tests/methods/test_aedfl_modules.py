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
    order: the policy's loss feature is what catches that)."""
    lam = _run(aedfl_sim, "aedfl-dwu", BAD, mode="labels")[0].method.diagnostics["lambda"]
    lam_bad, lam_good = _late_mean(lam, BAD), _late_mean(lam, GOOD)
    assert lam_bad < 0.9 * lam_good, (lam_bad, lam_good)


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
    """Eq. 4.8 in the step: lambda moves by -eta * dF/dlambda / max|dF/dlambda|, dF/dlambda_j the derivative of the
    loss on the held-back minibatch at the aggregate (eq. 4.9 with eq. 4.6-4.7), here by central differences in
    float64; the neighbours' lambdas move by different amounts."""
    import copy

    import torch.nn.functional as F
    from torch.nn.utils import vector_to_parameters

    from dflbench.aggregation import dynamic_weights
    from dflbench.methods.aedfl.step import HELD_BACK

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
    xb, yb = sim.data.batch(torch.tensor([d]), torch.tensor([1]), HELD_BACK, sim.cfg.batch_size, sim.cfg.seed)
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
    h = 1e-5
    fd = torch.tensor([(f(lam + h * e) - f(lam - h * e)) / (2 * h) for e in torch.eye(3, dtype=torch.float64)[1:]])
    expected = lam[1:] - 0.3 * fd / fd.abs().max()
    got = m.step.dwu.lam[d, [k + 1 for k in slots]].double()
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-3)
    assert (got - lam[1:]).abs().max() == pytest.approx(0.3, abs=1e-6)       # the most sensitive moves by eta
    assert abs(float((got - lam[1:])[0] - (got - lam[1:])[1])) > 1e-3        # spread across neighbours
