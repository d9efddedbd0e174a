"""Harmful neighbours act on every method: `AsyncSimulator.outgoing` puts a corrupt device's noise model on the wire
wherever a model leaves a device (noise mode), and flipped labels change every method's training (labels mode)."""

import pytest
import torch

from dflbench.engines.async_sim import Message
from dflbench.engines.coordinator import FaultConfig
from dflbench.methods.gossip.ad_psgd import Exchange
from dflbench.methods.registry import list_methods, make_method
from dflbench.topology import exponential, uniform

BAD = 1
NOISE = FaultConfig(corrupt=(BAD,), corrupt_mode="noise", corrupt_scale=3.0)


def _models(D: int, P: int) -> torch.Tensor:
    return torch.randn(D, P, generator=torch.Generator().manual_seed(1)) * 0.1


def test_outgoing_replaces_only_the_corrupt_rows_by_noise_of_the_right_scale(aedfl_sim):
    sim = aedfl_sim(make_method("aedfl-0"), D=4, faults=NOISE)
    x, devs = _models(4, sim.P), torch.tensor([3, 1, 0])
    out = sim.outgoing(devs, x[devs])
    assert torch.equal(out[[0, 2]], x[[3, 0]])                        # honest rows leave as they are
    noise = out[1]
    assert not torch.equal(noise, x[1])
    assert abs(float(noise.mean())) < 0.02 * float(noise.std())     # N(0, (3 std(x_1))^2), P entries
    assert float(noise.std()) == pytest.approx(3.0 * float(x[1].std()), rel=0.02)
    torch.testing.assert_close(sim.outgoing(torch.tensor([BAD]), x[[1]]), noise[None], rtol=0, atol=0)  # keyed
    sim.t[BAD] += 1                                                   # by (device, update): a new update, new noise
    assert not torch.equal(sim.outgoing(torch.tensor([BAD]), x[[1]])[0], noise)
    mask = torch.rand(1, sim.P, generator=torch.Generator().manual_seed(2)) < 0.5
    masked = sim.outgoing(torch.tensor([BAD]), x[[1]], mask)
    assert bool((masked[~mask] == 0).all()) and bool((masked[mask] != 0).all())
    losses = sim.own_losses(torch.tensor([BAD]), masked)
    assert losses.shape == (1,) and bool(torch.isfinite(losses).all())


@pytest.mark.parametrize("faults", [None, FaultConfig(corrupt=(BAD,), corrupt_mode="labels")])
def test_outgoing_is_the_model_itself_without_noise_senders(aedfl_sim, faults):
    sim = aedfl_sim(make_method("aedfl-0"), D=4, faults=faults)
    x = _models(4, sim.P)
    assert sim.outgoing(torch.arange(4), x) is x
    assert not sim.noise_senders(torch.arange(4)).any()


# FedSA's adaptive M falls to 1 at 4 devices, and with M = 1 each device is answered with its own upload (local
# training: no upload reaches another device, measured), so it keeps M = buffer here
EXTRA = {"fedsa": {"adaptive": False}}


def _final(aedfl_sim, name, options, faults):
    sim = aedfl_sim(make_method(name, options), D=4, faults=faults)
    sim.run()
    return sim.method.eval_models(sim).clone()


@pytest.mark.parametrize("name", list_methods())
def test_every_method_feels_noise_and_flipped_labels(aedfl_sim, small_options, name):
    """One corrupt device of 4: noise mode and labels mode each end with other models (the server's global model,
    or the devices' models) than the clean run; the clean run is reproducible, so the difference is the fault's."""
    opts = {**small_options(name), **EXTRA.get(name, {})}
    clean = _final(aedfl_sim, name, opts, None)
    assert torch.equal(clean, _final(aedfl_sim, name, opts, None))
    for mode in ("noise", "labels"):
        hurt = _final(aedfl_sim, name, opts, FaultConfig(corrupt=(BAD,), corrupt_mode=mode))
        assert not torch.equal(clean, hurt), mode


def test_fedavg_averages_the_uploaded_noise(aedfl_sim, ref_local):
    """One FedAvg round over all 4 devices: the global model is the sample-weighted average of the devices' local
    models (a plain loop) with the corrupt device's row replaced by the noise the primitive gives for it."""
    sim = aedfl_sim(make_method("fedavg", {"fraction": 1.0, "rounds": 1}), D=4, faults=NOISE)
    x0 = sim.x[0].clone()
    sim.run()
    local = torch.stack([ref_local(sim, d, x0, 0, sim.cfg.local_steps, sim.cfg.lr) for d in range(4)])
    fresh = aedfl_sim(make_method("fedavg"), D=4, faults=NOISE)      # update counts 0, as when the round started
    sent = fresh.outgoing(torch.arange(4), local)
    assert not torch.allclose(sent[BAD], local[BAD])
    p = sim.data.sizes.double() / sim.data.sizes.sum()
    expected = sum(float(p[d]) * sent[d] for d in range(4))
    torch.testing.assert_close(sim.method.xg, expected, rtol=1e-4, atol=1e-5)


def test_d_psgd_mixes_its_own_row_with_the_neighbours_sent_rows(aedfl_sim, ref_local):
    """One D-PSGD round: x_i <- W_ii x_i + sum_{j != i} W_ij s_j, s the primitive's rows after the local steps
    (the corrupt device's noise); the corrupt device itself mixes its honest model with its neighbours'."""
    sim = aedfl_sim(make_method("d-psgd"), D=4, faults=NOISE, max_updates=1)
    x0 = sim.x[0].clone()
    sim.run()
    local = torch.stack([ref_local(sim, d, x0, 0, sim.cfg.local_steps, sim.cfg.lr) for d in range(4)])
    sent = sim.outgoing(torch.arange(4), local)                     # update counts 1, as when the round mixed
    W = uniform(exponential(4)).double()
    for i in range(4):
        expected = sum(float(W[i, j]) * (local[j] if j == i else sent[j]) for j in range(4) if W[i, j] > 0)
        torch.testing.assert_close(sim.x[i], expected.to(sim.x.dtype), rtol=1e-4, atol=1e-5)
    assert any(W[i, BAD] > 0 for i in range(4) if i != BAD)


def test_ad_psgd_each_side_averages_with_what_the_other_sent(aedfl_sim):
    """An exchange between honest device 0 and corrupt device 1: 0 averages its model with 1's noise, 1 averages its
    honest model with 0's model; an exchange between honest devices is the plain pairwise average."""
    sim = aedfl_sim(make_method("ad-psgd"), D=4, faults=NOISE)
    sim.method.setup(sim)
    sim.x[:] = _models(4, sim.P)
    zero = torch.zeros(sim.P)
    for i, j in ((0, BAD), (2, 3)):
        x = sim.x.clone()
        sent = sim.outgoing(torch.tensor([i, j]), x[[i, j]])
        sim.method.on_arrive(sim, Message(j, i, Exchange(zero, int(sim.epoch[i])), 0, 0.0))
        torch.testing.assert_close(sim.x[i], (x[i] + sent[1]) / 2, rtol=0, atol=1e-7)
        torch.testing.assert_close(sim.x[j], (sent[0] + x[j]) / 2, rtol=0, atol=1e-7)
        torch.testing.assert_close(sent[0], x[i], rtol=0, atol=0)          # the honest side sends its model
    assert not torch.allclose(sim.x[0], sim.x[BAD])


@pytest.mark.parametrize("name", ["aedfl-p", "hap"])
def test_aedfl_loop_pushes_the_masked_noise_and_announces_its_loss(aedfl_sim, small_options, name):
    """The AEDFL loop (and the pruning baselines that inherit it) sends the primitive's noise under the sender's
    mask, with the loss of that noise on the sender's own minibatch; honest senders send their model."""
    sim = aedfl_sim(make_method(name, small_options(name)), D=4, faults=NOISE)
    sim.method.setup(sim)
    sent = []
    sim.send = lambda src, dst, payload, nbytes, at=None: sent.append((src, payload))
    sim.method.on_complete(sim, torch.arange(4), torch.zeros(4, dtype=torch.float64))
    by_src = dict(sent)
    msg = by_src[BAD]
    assert msg.mask is not None
    expected = sim.outgoing(torch.tensor([BAD]), sim.x[[BAD]], msg.mask[None])[0]   # the sender's model: its own
    torch.testing.assert_close(msg.model, expected, rtol=0, atol=0)
    assert msg.loss == pytest.approx(float(sim.own_losses(torch.tensor([BAD]), msg.model[None])[0]))
    for d in set(by_src) - {BAD}:
        torch.testing.assert_close(by_src[d].model, sim.x[d], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["fedbuff", "aso-fed"])
def test_async_server_receives_the_noise_upload_and_the_device_keeps_its_model(aedfl_sim, name):
    """The asynchronous servers' uploads are the primitive's rows; the uploading devices keep their trained models."""
    sim = aedfl_sim(make_method(name), D=4, faults=NOISE)
    sim.method.setup(sim)
    sent = []
    sim.send = lambda src, dst, payload, nbytes, at=None: sent.append((src, payload.x))
    sim.method.on_complete(sim, torch.arange(4), torch.zeros(4, dtype=torch.float64))
    expected = sim.outgoing(torch.arange(4), sim.x)
    assert not torch.equal(expected[BAD], sim.x[BAD])
    for d, x in sent:
        torch.testing.assert_close(x, expected[d], rtol=0, atol=0)        # the devices keep sim.x: honest training


def test_dispfl_aggregates_its_own_model_with_the_neighbours_sent_ones(aedfl_sim, monkeypatch):
    """A DisPFL round hands `rules.dispfl_aggregate` each device's own model and its neighbours' sent models."""
    from dflbench.methods import dispfl

    sim = aedfl_sim(make_method("dispfl"), D=4, faults=NOISE)
    m = sim.method
    m.setup(sim)
    sim.x[:] = _models(4, sim.P) * m.masks
    seen = []
    real = dispfl.rules.dispfl_aggregate
    monkeypatch.setattr(dispfl.rules, "dispfl_aggregate", lambda models, masks: seen.append(models) or
                        real(models, masks))
    devs = torch.arange(4)
    nb = m.neighbours(sim, sim.alive, devs)
    own = sim.x.clone()
    sent = sim.outgoing(devs, own, m.masks)
    m.round_step(sim, sim.alive, devs)
    models = seen[0]
    torch.testing.assert_close(models[:, 0], own, rtol=0, atol=0)    # the corrupt device's own row is honest too
    for b in range(4):
        for k in range(nb.shape[1]):
            torch.testing.assert_close(models[b, 1 + k], sent[nb[b, k]], rtol=0, atol=0)
    assert bool((nb == BAD).any())


def test_sageflow_public_set_keeps_the_clean_labels(aedfl_sim):
    """Labels mode poisons the corrupt devices' training data, not the server's own public set: Sageflow scores
    uploads against the labels the data had before the flip."""
    faults = FaultConfig(corrupt=(0, 1, 2, 3), corrupt_mode="labels")
    sim = aedfl_sim(make_method("sageflow", {"public_samples": 64}), D=4, faults=faults)
    sim.method.setup(sim)
    clean = aedfl_sim(make_method("sageflow", {"public_samples": 64}), D=4)
    clean.method.setup(clean)
    assert not torch.equal(sim.data.y, clean.data.y)                  # every device trains on flipped labels
    assert torch.equal(sim.method.y_pub, clean.method.y_pub)
