"""Baseline aggregation rules and staleness discounts, each against its formula on a small example."""

import math

import pytest
import torch

from dflbench.aggregation.rules import (
    adpsgd_pairwise,
    asofed_step_scale,
    asofed_update,
    dispfl_aggregate,
    fedasync,
    fedavg,
    fedbuff,
    fednova,
    fedprox_term,
    fedsa_aggregate,
    fedsa_learning_rates,
    port_weights,
    safa_aggregate,
)
from dflbench.aggregation.staleness_discounts import list_staleness, make_staleness

X = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, -2.0]], dtype=torch.float64)
S = torch.tensor([1.0, 2.0, 1.0])


def test_staleness_discounts_match_their_definitions():
    tau = torch.tensor([0.0, 1.0, 3.0, 4.0, 7.0])
    assert torch.equal(make_staleness("constant")(tau), torch.ones(5))
    assert torch.allclose(make_staleness("polynomial", a=0.5)(tau), torch.tensor([1.0, 2, 4, 5, 8]) ** -0.5)
    hinge = make_staleness("hinge", a=2.0, b=3.0)(tau)
    assert torch.allclose(hinge, torch.tensor([1.0, 1.0, 1.0, 1 / 3, 1 / 9]))
    assert torch.equal(make_staleness("lag", tolerance=3)(tau), torch.tensor([1.0, 1, 1, 0, 0]))
    assert torch.allclose(make_staleness("inverse_sqrt")(tau), 1 / torch.sqrt(1 + tau))
    assert torch.allclose(make_staleness("bounded", bound=2.0)(tau), 2 / (tau + 2))
    for name in list_staleness():                   # every discount is 1 at tau = 0 and non-increasing
        s = make_staleness(name)(torch.arange(20.0))
        assert s[0] == 1 and (s[1:] <= s[:-1]).all()
    with pytest.raises(ValueError, match="valid: bounded, constant, hinge"):
        make_staleness("exponential")
    with pytest.raises(ValueError, match=">= 0"):
        make_staleness("constant")(torch.tensor([-1.0]))


def test_fedavg_and_fedprox():
    assert torch.allclose(fedavg(X, S), torch.tensor([3.0, 3.0], dtype=torch.float64))
    batched = fedavg(torch.stack([X, 2 * X]), torch.stack([S, torch.ones(3)]))
    assert torch.allclose(batched[1], 2 * X.mean(0))
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    anchor = torch.tensor([0.0, 1.0, 0.5])
    term = fedprox_term(w, anchor, mu=0.3)
    assert torch.isclose(term, torch.tensor(0.15 * (1 + 9)))
    term.backward()                                   # gradient mu (w - w^t)
    assert torch.allclose(w.grad, 0.3 * (w.detach() - anchor))
    net = torch.nn.Linear(2, 2)
    assert fedprox_term(net.parameters(), [p.detach().clone() for p in net.parameters()], mu=1.0) == 0


def test_fednova():
    x = torch.tensor([1.0, 1.0], dtype=torch.float64)
    steps = torch.tensor([1.0, 2.0, 4.0])
    p = S / S.sum()
    d = (x - X) / steps[:, None]
    expected = x - (p * steps).sum() * (p.double() @ d)
    assert torch.allclose(fednova(x, X, S, steps), expected)
    # equal local steps and plain SGD: FedNova reduces to FedAvg
    assert torch.allclose(fednova(x, X, S, torch.full((3,), 5.0)), fedavg(X, S))
    rho = 0.9
    a = torch.tensor([(t - rho * (1 - rho ** t) / (1 - rho)) / (1 - rho) for t in steps.tolist()],
                     dtype=torch.float64)
    expected = x - (p * a).sum() * (p.double() @ ((x - X) / a[:, None]))
    assert torch.allclose(fednova(x, X, S, steps, momentum=rho), expected)


def test_fedbuff_and_fedasync():
    x = torch.tensor([0.5, 0.5], dtype=torch.float64)
    tau = torch.tensor([0.0, 3.0, 8.0])
    expected = x + 0.7 / 3 * (X[0] / 1 + X[1] / 2 + X[2] / 3)
    assert torch.allclose(fedbuff(x, X, tau, server_lr=0.7), expected)
    poly = make_staleness("polynomial", a=1.0)
    out = fedasync(x, X[1], torch.tensor(3.0), alpha=0.8, discount=poly)
    assert torch.allclose(out, (1 - 0.2) * x + 0.2 * X[1])
    batched = fedasync(X[:2], X[1:], torch.tensor([0.0, 1.0]), alpha=0.5, discount=poly)
    assert torch.allclose(batched[1], 0.75 * X[1] + 0.25 * X[2])
    with pytest.raises(ValueError, match="alpha"):
        fedasync(x, X[1], 0.0, alpha=0.0, discount=poly)


def test_safa_fedsa_asofed_port():
    g = torch.tensor([10.0, 10.0], dtype=torch.float64)
    tau = torch.tensor([0.0, 2.0, 5.0])
    # SAFA: entry 2 is deprecated (staleness 5 > 3) and replaced by the global model
    assert torch.allclose(safa_aggregate(g, X, S, tau, lag_tolerance=3), (X[0] + 2 * X[1] + g) / 4)
    # FedSA: entry 2 is dropped
    assert torch.allclose(fedsa_aggregate(X, S, tau, tau0=3), (X[0] + 2 * X[1]) / 3)
    with pytest.raises(ValueError, match="staler"):
        fedsa_aggregate(X, S, tau + 10, tau0=3)
    lrs = fedsa_learning_rates(0.1, torch.tensor([1, 3, 0, 4]))
    f = torch.tensor([1.0, 3, 1, 4]) / 9
    assert torch.allclose(lrs, 0.1 / (4 * f))
    bounded = fedsa_learning_rates(0.1, torch.tensor([1, 3, 0, 100]), bound=2.0)   # 105 / (4 c) = 26.25, ..., 0.26
    assert torch.allclose(bounded, torch.tensor([0.2, 0.2, 0.2, 0.05]))
    assert torch.allclose(asofed_update(g, X[0], samples=25, total_samples=100), g + 0.25 * (X[0] - g))
    assert torch.allclose(asofed_step_scale(torch.tensor([0.5, 1.0, 100.0])),
                          torch.tensor([1.0, 1.0, math.log(100.0)]))
    sim = torch.tensor([1.0, 0.0, -1.0])
    w = port_weights(S, tau, sim, bound=5.0)
    raw = torch.tensor([0.25 * (1 + 1), 0.5 * (0.5 + 5 / 7), 0.25 * (0 + 0.5)])
    assert torch.allclose(w, raw / raw.sum())


def test_dispfl_is_mask_count_averaging():
    masks = torch.tensor([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=torch.bool)
    models = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    out = dispfl_aggregate(models, masks)
    # entry 0: kept by 3 -> 4; entry 1: kept by 0 and 2 -> 5; entry 2: local pruned -> 0
    assert torch.allclose(out, torch.tensor([4.0, 5.0, 0.0]))


def test_adpsgd_pairwise():
    states = torch.arange(10.0).reshape(5, 2)
    out = adpsgd_pairwise(states, torch.tensor([[0, 3], [4, 1]]))
    expected = states.clone()
    expected[[0, 3]] = (states[0] + states[3]) / 2
    expected[[1, 4]] = (states[1] + states[4]) / 2
    assert torch.equal(out, expected) and torch.equal(out[2], states[2])
    assert torch.allclose(out.mean(0), states.mean(0))    # gossip preserves the average
    with pytest.raises(ValueError, match="disjoint"):
        adpsgd_pairwise(states, torch.tensor([[0, 1], [1, 2]]))
