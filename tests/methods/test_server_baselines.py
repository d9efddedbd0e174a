"""The server baselines of AEDFL Table 1 against per-client reference loops (plain nn.Module, autograd): round
counting, FedProx's partial work, FedNova's normalised average, FedBuff's buffer, SAFA's lag tolerance, FedSA's
bounded compensation and adaptive M, ASO-Fed, Sageflow, Port."""

import math

import pytest
import torch
import torch.nn.functional as F

from dflbench.aggregation import rules
from dflbench.methods.registry import make_method
from dflbench.models import make_model


def ref_fedavg_rounds(sim, rounds: int, ref_local) -> torch.Tensor:
    """FedAvg with every device in every round (C = 1): x <- sum_k p_k x_k(x), `rounds` times."""
    x, s = sim.net.init.clone(), sim.data.sizes.double()
    for r in range(rounds):
        locals_ = torch.stack([ref_local(sim, d, x, r, sim.cfg.local_steps, sim.cfg.lr) for d in range(sim.D)])
        x = (s / s.sum()).to(x.dtype) @ locals_
    return x


@pytest.mark.parametrize("T", [1, 3])
def test_fedavg_T_updates_give_T_averages_in_the_final_model(aedfl_sim, ref_local, T):
    sim = aedfl_sim(make_method("fedavg", {"fraction": 1.0}), max_updates=T)
    res = sim.run()
    m = sim.method
    assert m.version == m.round == T and sim.t.tolist() == [T] * 4 and res.stop_reason == "max updates"
    torch.testing.assert_close(m.xg, ref_fedavg_rounds(sim, T, ref_local), rtol=1e-4, atol=1e-6)
    assert not torch.equal(m.xg, sim.net.init)                       # T = 1: the reported model is trained


def test_fedavg_R_rounds_with_fraction_train_R_ceil_fn_updates(aedfl_sim):
    sim = aedfl_sim(make_method("fedavg", {"fraction": 0.3, "rounds": 5}), max_updates=100, D=8)
    res = sim.run()
    m = math.ceil(0.3 * 8)
    assert res.stop_reason == "5 rounds" and sim.method.version == 5
    assert int(sim.t.sum()) == res.device_steps == 5 * m
    assert sim.t.max() <= 5                                           # without replacement: at most once a round


def test_fedavg_time_budget_trains_no_round_it_discards(aedfl_sim):
    sim = aedfl_sim(make_method("fedavg", {"fraction": 0.5}), max_updates=None, time_budget=0.05)
    res = sim.run()
    m = sim.method
    assert res.stop_reason == "time budget" and m.round == m.version >= 2 and m.pending is None
    assert res.device_steps == int(sim.t.sum())


def test_fedavg_samples_ceil_of_the_fraction():
    from dflbench.methods.server.fedavg import sample_size

    assert [sample_size(0.1, 30), sample_size(0.1, 31), sample_size(0.01, 5), sample_size(1.0, 7)] == [3, 4, 1, 7]


def test_fedprox_partial_work_and_proximal_term_match_the_loop(aedfl_sim, ref_local):
    """One round, all devices, local_steps 4: stragglers run fewer steps; each local model is the plain loop on
    F_k + mu/2 ||w - w^t||^2, and the average is FedAvg's."""
    sim = aedfl_sim(make_method("fedprox", {"fraction": 1.0, "mu": 0.5, "stragglers": 0.5}), max_updates=1,
                    local_steps=4, D=6)
    m = sim.method
    m.setup(sim)
    steps = m.local_steps(sim, torch.arange(6))
    assert (steps >= 1).all() and (steps <= 4).all() and (steps < 4).any() and (steps == 4).any()
    m.on_round(sim, None)
    locals_ = torch.stack([ref_local(sim, d, m.xg, 0, int(steps[d]), sim.cfg.lr, mu=0.5) for d in range(6)])
    torch.testing.assert_close(m.pending, rules.fedavg(locals_, sim.data.sizes.double()), rtol=1e-4, atol=1e-6)
    assert sim.device_steps == int(steps.sum())


def test_fednova_equals_fedavg_with_equal_tau_and_differs_otherwise(aedfl_sim):
    sim = aedfl_sim(make_method("fednova", {"fraction": 1.0}), max_updates=1, local_steps=2)
    m = sim.method
    m.setup(sim)
    devs = torch.arange(4)
    x = m.xg + 0.01 * torch.randn(4, sim.P, generator=torch.Generator().manual_seed(1))
    equal = torch.full((4,), 3)
    torch.testing.assert_close(m.aggregate(x, devs, equal), rules.fedavg(x, m.sizes), rtol=1e-5, atol=1e-7)
    tau = m.local_steps(sim, devs)
    assert len(set(tau.tolist())) > 1                                  # unequal data: unequal tau_k
    p = (m.sizes / m.sizes.sum()).to(x.dtype)
    tau_eff = float((p * tau).sum())
    ref = m.xg - tau_eff * sum(p[k] * (m.xg - x[k]) / tau[k] for k in range(4))
    nova = m.aggregate(x, devs, tau)
    torch.testing.assert_close(nova, ref, rtol=1e-5, atol=1e-7)
    assert (nova - rules.fedavg(x, m.sizes)).abs().max() > 1e-4


def record_server_steps(m):
    """Wrap `m.apply` to record the server version after each arrival."""
    versions, apply = [], m.apply

    def recording(sim, d, xk, tau):
        apply(sim, d, xk, tau)
        versions.append(m.version)

    m.apply = recording
    return versions


def test_fedbuff_steps_exactly_every_K_arrivals_with_the_discounted_mean_delta(aedfl_sim):
    m = make_method("fedbuff", {"buffer": 3, "server_lr": 0.7})
    sim = aedfl_sim(m, max_updates=3)
    versions = record_server_steps(m)
    checked, aggregate = [], m.aggregate

    def reference_checked(sim_, devs, models, taus):
        new = aggregate(sim_, devs, models, taus)
        ref = m.xg.clone()
        for k in range(len(devs)):                                       # x + eta_g / K sum_k (1 + tau_k)^-1/2 Delta_k
            ref += 0.7 / 3 * (models[k] - m.start[int(devs[k])]) / math.sqrt(1 + float(taus[k]))
        torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-7)
        checked.append(float(taus.max()))
        return new

    m.aggregate = reference_checked
    sim.run()
    assert len(versions) == 12 and versions == [(k + 1) // 3 for k in range(12)]
    assert max(checked) > 0                                              # stale deltas were discounted too


def test_fedsa_compensation_is_bounded_and_M_adapts(aedfl_sim):
    sim = aedfl_sim(make_method("fedsa", {"buffer": 2, "lr_bound": 1.5, "tau0": 2.0}), max_updates=6, D=6)
    m = sim.method
    lrs, client_lr = [], m.client_lr
    m.client_lr = lambda sim_, devs: lrs.append(client_lr(sim_, devs)) or lrs[-1]
    Ks, aggregate = [], m.aggregate
    m.aggregate = lambda sim_, devs, models, taus: Ks.append((len(devs), float(taus.mean()))) or aggregate(
        sim_, devs, models, taus)
    sim.run()
    lr = torch.cat(lrs)
    assert lr.max() <= 1.5 * sim.cfg.lr * (1 + 1e-6) and lr.min() >= sim.cfg.lr / 1.5 * (1 - 1e-6)
    assert (lr != sim.cfg.lr).any()                                     # compensation acts
    from dflbench.methods.server.fedsa import adapt_m

    for (k, tau), (k_next, _) in zip(Ks, Ks[1:]):                       # each buffer has the M the last one chose
        assert k_next == adapt_m(k, tau, 2.0, 6)
    assert len({k for k, _ in Ks}) > 1


def test_fedsa_rates_without_bound_exceed_it():
    many = torch.tensor([50.0, 1, 1, 1])
    assert rules.fedsa_learning_rates(1.0, many).max() > 3
    assert rules.fedsa_learning_rates(1.0, many, bound=2.0).max() == 2.0


def test_safa_drops_uploads_beyond_the_lag_tolerance_and_syncs_at_the_quota(aedfl_sim):
    """Rounds end at the quota ceil(0.5 * 6) = 3; the global model is the per-device loop over the cache with every
    entry lagging more than tau = 1 replaced by the global model; some buffered uploads were dropped so."""
    m = make_method("safa", {"fraction": 0.5, "lag_tolerance": 1.0})
    sim = aedfl_sim(m, max_updates=6, D=6)
    dropped, sizes, aggregate = [], [], m.aggregate

    def reference_checked(sim_, devs, models, taus):
        new = aggregate(sim_, devs, models, taus)
        p = m.sizes / m.sizes.sum()
        ref = torch.zeros_like(m.xg)
        for k in range(sim_.D):
            lag = m.version - int(m.cache_base[k])
            ref += float(p[k]) * (m.cache[k] if lag <= 1 else m.xg)
        torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-7)
        dropped.extend(d for d in devs.tolist() if m.version - int(m.cache_base[d]) > 1)
        sizes.append(len(devs))
        return new

    m.aggregate = reference_checked
    replies = []
    reply = m._reply
    m._reply = lambda sim_, d: replies.append((sim_.now, d, m.version)) or reply(sim_, d)
    sim.run()
    assert sizes.count(3) >= len(sizes) - 1 and dropped                  # quota rounds; stale uploads dropped
    assert all(v >= 1 for _, _, v in replies)                            # devices get the model at a round's end
    assert int(sim.t.sum()) == 36


def test_sageflow_filters_by_entropy_and_weights_by_loss_and_staleness(aedfl_sim):
    sim = aedfl_sim(make_method("sageflow", {"buffer": 4, "gamma": 0.6, "public_samples": 40,
                                             "entropy_threshold": 0.9995}), max_updates=1)
    m = sim.method
    m.setup(sim)
    g = torch.Generator().manual_seed(5)
    models = m.xg + 0.05 * torch.randn(4, sim.P, generator=g)
    models[3] = 0                                                        # predicts uniformly: entropy log C
    devs, taus = torch.arange(4), torch.tensor([0.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    new = m.aggregate(sim, devs, models, taus)
    ent, loss = [], []
    for k in range(4):                                                   # per-model loop on the public set
        model = make_model("lenet5", 4, 1, 16).eval()
        torch.nn.utils.vector_to_parameters(models[k].clone(), model.parameters())
        with torch.no_grad():
            logp = model(m.x_pub).log_softmax(-1)
        ent.append(float(-(logp.exp() * logp).sum(-1).mean() / math.log(4)))
        loss.append(float(F.nll_loss(logp, m.y_pub)))
    assert max(ent[:3]) < 0.9995 < ent[3]
    s = m.sizes
    w = [float(s[k]) / loss[k] for k in range(3)]
    fresh = (w[0] * models[0] + w[2] * models[2]) / (w[0] + w[2])        # group tau = 0 (model 3 dropped)
    a0, a2 = float(s[0] + s[2]), float(s[1]) / 3                          # S_g / (1 + g)
    z = (a0 * fresh + a2 * models[1]) / (a0 + a2)
    torch.testing.assert_close(new, 0.4 * m.xg + 0.6 * z, rtol=1e-4, atol=1e-6)
    models[:] = 0
    assert torch.equal(m.aggregate(sim, devs, models, taus), m.xg)       # all dropped: the global model stays


def minibatch_grad(sim, d: int, w: torch.Tensor, t: int, step: int) -> torch.Tensor:
    """The autograd gradient of device d's minibatch (d, t, step) loss at w (the `aedfl_sim` LeNet-5)."""
    model = make_model("lenet5", 4, 1, 16)
    torch.nn.utils.vector_to_parameters(w.clone(), model.parameters())
    xb, yb = sim.data.batch(torch.tensor([d]), torch.tensor([t]), step, sim.cfg.batch_size, sim.cfg.seed)
    F.cross_entropy(model(xb[0]), yb[0]).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_aso_fed_decayed_surrogate_steps_match_the_loop(aedfl_sim, ref_local):
    """Two local steps of device 1 against the written-out recursion; lambda = beta = 0 is plain SGD."""
    lam, beta, lr = 0.3, 0.6, 0.05
    sim = aedfl_sim(make_method("aso-fed", {"lam": lam, "beta": beta}), local_steps=2)
    m = sim.method
    m.setup(sim)
    dev = torch.tensor([1])
    wg = m.start[1].clone()
    x, _, _ = sim.local_sgd(dev, sim.x[dev], grad_fn=m.grad_fn(sim, dev))
    w, h = wg.clone(), torch.zeros_like(wg)
    for s in range(2):
        g = minibatch_grad(sim, 1, w, 0, s) + lam * (w - wg)
        h = beta * h + (1 - beta) * g
        w = w - lr * h
    torch.testing.assert_close(x[0], w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(m.h[1], h, rtol=1e-4, atol=1e-6)
    plain = aedfl_sim(make_method("aso-fed", {"lam": 0.0, "beta": 0.0}), local_steps=2)
    plain.method.setup(plain)
    x0, _, _ = plain.local_sgd(dev, plain.x[dev], grad_fn=plain.method.grad_fn(plain, dev))
    torch.testing.assert_close(x0[0], ref_local(plain, 1, plain.x[1], 0, 2, lr), rtol=1e-4, atol=1e-6)


def test_cli_rounds_and_fraction_and_the_evaluation_size_in_every_table(aedfl_npz, tmp_path):
    """`--method-opt fedavg.rounds=2 fedavg.fraction=0.5` on 6 devices trains 2 rounds of 3 devices; the table
    and the CSV say how many test samples the accuracy is measured on (64 in the file, 40 used)."""
    import csv
    import json

    from typer.testing import CliRunner

    from dflbench.cli.main import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["aedfl", "--dataset", f"npz:{aedfl_npz}", "--devices", "6", "--methods", "fedavg",
                                   "--max-updates", "50", "--local-steps", "1", "--batch-size", "8",
                                   "--eval-samples", "40",
                                   "--method-opt", "fedavg.rounds=2", "--method-opt", "fedavg.fraction=0.5",
                                   "--out", str(out)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "accuracy on 40 of 64 test samples" in " ".join(res.output.split())  # the title may wrap
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert run["stop_reason"] == "2 rounds" and run["device_steps"] == 2 * 3 and run["eval_samples"] == 40
    with open(out / "results.csv") as f:
        assert next(csv.DictReader(f))["eval_samples"] == "40"


def test_port_weights_stale_updates_by_staleness_and_drift_like_the_loop(aedfl_sim):
    sim = aedfl_sim(make_method("port", {"buffer": 3, "staleness_bound": 2.0}), max_updates=1)
    m = sim.method
    m.setup(sim)
    g = torch.Generator().manual_seed(7)
    m.start = m.xg + 0.1 * torch.randn(4, sim.P, generator=g)           # the models the devices started from
    m.start[0] = m.xg                                                   # device 0 started from the current model
    models = m.start[:3] + 0.05 * torch.randn(3, sim.P, generator=g)
    devs, taus = torch.arange(3), torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64)
    new = m.aggregate(sim, devs, models, taus)
    raw = []
    for k in range(3):
        delta, drift = models[k] - m.start[k], m.xg - m.start[k]
        cos = 0.0 if drift.norm() == 0 else float(delta @ drift / (delta.norm() * drift.norm()))
        raw.append(float(m.sizes[k]) * ((cos + 1) / 2 + 2.0 / (float(taus[k]) + 2.0)))
    ref = m.xg + sum(raw[k] / sum(raw) * (models[k] - m.start[k]) for k in range(3))
    torch.testing.assert_close(new, ref, rtol=1e-4, atol=1e-6)


def test_fedavg_budget_of_k_rounds_time_gives_k_rounds(aedfl_sim):
    """Issue 27: a budget of k rounds' time (one round's duration, server averaging included, times k) trains k
    rounds, although the rounds' summed end times round above k times a round."""
    one = aedfl_sim(make_method("fedavg", {"fraction": 1.0, "rounds": 1}), max_updates=None, time_budget=1e9)
    d = one.run().virtual_time
    for k in range(1, 11):
        sim = aedfl_sim(make_method("fedavg", {"fraction": 1.0}), max_updates=None, time_budget=k * d,
                        evaluate=False)
        res = sim.run()
        assert (sim.method.round, res.stop_reason) == (k, "time budget")
        assert res.virtual_time == pytest.approx(k * d, rel=1e-9)
