"""The gossip baselines: AD-PSGD's stale read, atomic pairwise average and transfer delay; D-PSGD's round, against
per-device reference loops."""

import torch

from dflbench.engines.async_sim import Message
from dflbench.engines.cost import average_macs
from dflbench.methods.registry import make_method


def deliver_later(sim):
    """Replace `sim.send` by a list of the messages it would send (delivered by the test, in its order)."""
    sent = []
    sim.send = lambda src, dst, payload, nbytes, at=None: sent.append(Message(src, dst, payload, nbytes, at))
    return sent


def test_adpsgd_gradient_is_at_the_model_read_before_the_partners_average(aedfl_sim, ref_local):
    sim = aedfl_sim(make_method("ad-psgd"))
    m = sim.method
    m.setup(sim)
    sim.x += 0.05 * torch.randn(sim.x.shape, generator=torch.Generator().manual_seed(3))
    m.read = sim.x.clone()                                              # every device starts reading this
    sent = deliver_later(sim)
    m.on_complete(sim, torch.tensor([0]), torch.tensor([0.0], dtype=torch.float64))
    (msg,) = sent
    i = msg.src                                                          # 0's partner: averaged while computing
    m.on_arrive(sim, msg)
    assert not torch.equal(sim.x[i], m.read[i])
    m.on_complete(sim, torch.tensor([i]), torch.tensor([0.1], dtype=torch.float64))
    msg = sent[1]
    j = msg.src
    mean = 0.5 * (sim.x[i] + sim.x[j])                                  # the models when the exchange lands
    expected = mean + ref_local(sim, i, m.read[i], 0, 1, sim.cfg.lr) - m.read[i]
    at_current = mean + ref_local(sim, i, sim.x[i], 0, 1, sim.cfg.lr) - sim.x[i]
    m.on_arrive(sim, msg)
    torch.testing.assert_close(sim.x[i], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sim.x[j], mean)                           # the partner gets the plain average
    assert (sim.x[i] - at_current).abs().max() > 1e-4                    # not the optimistic gradient
    assert torch.equal(m.read[i], sim.x[i]) and sim.t[i] == 1


def test_adpsgd_pair_is_averaged_atomically_after_the_transfer(aedfl_sim):
    sim = aedfl_sim(make_method("ad-psgd"), max_updates=3, slot_width=None)
    res = sim.run()
    complete = {}
    for e in res.events:
        if e[0] == "complete":
            complete.setdefault(e[2], []).append(e[1])
    arrivals = [e for e in res.events if e[0] == "arrive"]
    assert arrivals and int(sim.t.sum()) == 12
    for _, at, j, i in arrivals:
        done = max(t for t in complete[i] if t <= at)                    # i's completion that started the exchange
        comm = float(sim.profiles.comm_time(torch.tensor(j), torch.tensor(i), torch.tensor(sim.model_bytes())))
        assert abs(at - done - comm) < 1e-9
        later = [t for t in complete[i] if t > at]
        if later:                                                        # the next update starts after the average
            average = float(sim.work_time(torch.tensor([i]), average_macs(2, sim.P))[0])    # engines.cost
            assert abs(min(later) - at - average - float(sim.compute_time(torch.tensor([i]))[0])) < 1e-9


def test_dpsgd_round_is_local_steps_then_uniform_mixing(aedfl_sim, ref_local):
    """x_i <- sum_j w_ij x_j^+, x_j^+ = device j's local update, w = uniform over in-neighbours and self."""
    from dflbench.topology import uniform

    sim = aedfl_sim(make_method("d-psgd"), max_updates=2)
    m = sim.method
    m.setup(sim)
    sim.x += 0.05 * torch.randn(sim.x.shape, generator=torch.Generator().manual_seed(4))
    before = sim.x.clone()
    m.on_round(sim, None)
    local = torch.stack([ref_local(sim, d, before[d], 0, 1, sim.cfg.lr) for d in range(4)])
    W = uniform(sim.topology).to(local.dtype)
    ref = torch.stack([sum(W[i, j] * local[j] for j in range(4)) for i in range(4)])
    torch.testing.assert_close(sim.x, ref, rtol=1e-4, atol=1e-6)
    assert sim.t.tolist() == [1] * 4
