"""The AEDFL step is one implementation for both hosts: the runtime's device update (AsyncNode's code path, called
directly, no processes) and the simulator's (AEDFL.on_complete) give the same model, mask, message and
out-neighbour from the same cache contents, model, counters and seed; and the step's bookkeeping (counters,
staleness stamps, aggregated flags, host validation)."""

import pytest
import torch

from dflbench.engines.async_sim import Message
from dflbench.methods.aedfl.method import AEDFL
from dflbench.methods.aedfl.step import AEDFLStep, ModelMessage
from dflbench.methods.registry import make_method
from dflbench.models import make_model
from dflbench.runtime.async_node import AsyncNode, AsyncRuntimeConfig
from dflbench.topology import exponential


def _method(name: str):
    """`name` as the registry builds it, pruning every 2 local updates where it prunes."""
    return make_method(name, {"every": 2} if name in ("aedfl", "aedfl-p") else None)


def _node(sim, d: int, name: str) -> AsyncNode:
    """Device d of the simulator `sim` hosted by a runtime node: its samples, the same test set and settings."""
    data = sim.data
    idx = data.parts[d, : int(data.sizes[d])]
    torch.manual_seed(0)                                    # the simulator fixture builds its model after this seed
    model = make_model("lenet5", 4, 1, 16)
    cfg = AsyncRuntimeConfig(max_updates=10, time_budget_s=None, batch_size=sim.cfg.batch_size,
                             local_steps=sim.cfg.local_steps, lr=sim.cfg.lr, seed=sim.cfg.seed,
                             eval_samples=sim.cfg.eval_samples)
    return AsyncNode(model, data.prepare(data.x[idx]), data.y[idx], data.prepare(data.x_test), data.y_test,
                     exponential(sim.D), cfg, d, sim.D, _method(name))


def _message(g: torch.Generator, sim, version: int, pruning: bool) -> ModelMessage:
    return ModelMessage(model=sim.net.init + 0.05 * torch.randn(sim.P, generator=g), loss=0.3 + float(torch.rand(
        1, generator=g)), samples=int(torch.randint(5, 40, (1,), generator=g)), version=version,
                        mask=(torch.rand(sim.P, generator=g) < 0.7) if pruning else None,
                        rate=0.4 + 0.2 * float(torch.rand(1, generator=g)) if pruning else None)


@pytest.mark.parametrize("name", ["aedfl", "aedfl-0"])
def test_runtime_node_and_simulator_compute_the_same_update(aedfl_sim, name):
    sim = aedfl_sim(_method(name))
    m: AEDFL = sim.method
    m.setup(sim)
    sent = []
    send = sim.send

    def recording(src, dst, payload, nbytes, at=None):
        sent.append((dst, payload))
        send(src, dst, payload, nbytes, at)

    sim.send = recording
    d = 2
    node = _node(sim, d, name)
    assert torch.equal(node.x[0], sim.x[d]) and node.step.cache.K == m.cache.K
    pruning = name == "aedfl"
    g = torch.Generator().manual_seed(1)
    senders = sim.topology.in_neighbors(d)
    deliveries = {1: senders, 2: senders[:1], 3: [], 4: senders[1:]}   # before update u, from these devices
    for u in range(1, 5):
        for j in deliveries[u]:
            msg = _message(g, sim, version=u, pruning=pruning)
            m.on_arrive(sim, Message(j, d, msg, 0, 0.0))              # stamped with the simulator's t[d]
            assert node.receive(j, msg)                               # stamped with the node's own t
        m.on_complete(sim, torch.tensor([d]), torch.tensor([0.0], dtype=torch.float64))
        dst, msg = node.local_update()
        torch.testing.assert_close(node.x[0], sim.x[d], rtol=1e-5, atol=1e-6)
        assert int(node.t[0]) == int(sim.t[d]) == u and msg.version == u
        assert sent[-1][0] == dst
        sim_msg = sent[-1][1]
        torch.testing.assert_close(msg.model, sim_msg.model, rtol=1e-5, atol=1e-6)
        assert msg.loss == pytest.approx(sim_msg.loss, rel=1e-5) and msg.samples == sim_msg.samples
        assert msg.rate == sim_msg.rate
        cache = node.step.cache
        for a, b in ((cache.stamp[0], m.cache.stamp[d]), (cache.aggregated[0], m.cache.aggregated[d]),
                     (node.step.masks[0], m.masks[d])):
            assert torch.equal(a, b)
        if pruning:                                                    # pruned at u = 2, 4 (every = 2)
            assert torch.equal(msg.mask, sim_msg.mask) and (msg.rate >= 0.25 - 1e-6 if u >= 2 else msg.rate == 0)
            torch.testing.assert_close(node.step.dwu.lam[0], m.step.dwu.lam[d])
            for k, v in node.step.policy.bank.params.items():
                torch.testing.assert_close(v[0], m.step.policy.bank.params[k][d])
        else:
            assert msg.mask is None and msg.rate is None
    if pruning:                                                        # every module changed the outcome
        assert not m.masks[d].all() and (m.step.dwu.lam[d] != m.cfg.weights.init_lambda).any()
        assert bool(m.step.policy.bank.history_count[d] >= 4)      # one reward per update


def test_step_bookkeeping_and_host_validation(aedfl_sim):
    sim = aedfl_sim(make_method("aedfl-0"))
    m = sim.method
    m.setup(sim)
    d, j = 1, sim.topology.in_neighbors(1)[0]
    k = int(m.cache.slots.slot_of[d, j])
    sim.t[d] = 5
    m.on_arrive(sim, Message(j, d, ModelMessage(sim.net.init.clone(), None, 0.5, 10, 9, None), 0, 0.0))
    assert int(m.cache.stamp[d, k]) == 5, "stamp = the receiver's update count at arrival, not the sender's"
    before = sim.x[d].clone()
    out = m.step.update(sim, torch.tensor([d]), sim.x[[d]])
    assert int(sim.t[d]) == 6 and out.t.tolist() == [6] and out.messages[0].version == 6
    assert m.cache.aggregated[d, k] and int(m.cache.aggregated[d].sum()) == 1     # aedfl-0 takes every valid slot
    assert not torch.equal(out.x[0], before) and sim.x[d].equal(before), "the host stores the result, not the step"
    assert len(out.pruned) == 0 and len(out.cost) == 0
    with pytest.raises(ValueError, match="not an in-neighbour"):
        m.on_arrive(sim, Message(d, d, ModelMessage(sim.net.init.clone(), None, 0.5, 10, 9, None), 0, 0.0))
    from dflbench.aggregation import in_neighbor_slots
    with pytest.raises(ValueError, match="slot table covers devices"):
        AEDFLStep(m.cfg, sim, in_neighbor_slots(sim.topology.adjacency, rows=[0]))


def test_node_refuses_baselines_and_applies_one_senders_messages_in_order(aedfl_sim):
    sim = aedfl_sim(make_method("aedfl-0"))
    with pytest.raises(ValueError, match="baselines run on the simulator"):
        _node(sim, 0, "hrank")
    node = _node(sim, 0, "aedfl-0")
    j = exponential(sim.D).in_neighbors(0)[0]
    k = int(node.step.cache.slots.slot_of[0, j])
    newer = ModelMessage(sim.net.init + 1, None, 0.5, 10, 9, None)
    assert node.receive(j, newer)
    assert not node.receive(j, ModelMessage(sim.net.init - 1, None, 0.5, 10, 8, None))    # older than cached
    assert torch.equal(node.step.cache.models[0, k], sim.net.init + 1)
    assert node.received == 2 and node.out_of_order == 1 and node.rejected == 0
    with pytest.raises(ValueError, match="NaN"):
        node.receive(j, ModelMessage(torch.full_like(sim.net.init, float("nan")), None, 0.5, 10, 10, None))
    with pytest.raises(ValueError, match="version must be an integer"):
        node.receive(j, ModelMessage(sim.net.init, None, 0.5, 10, -1, None))
    assert node.rejected == 2 and torch.equal(node.step.cache.models[0, k], sim.net.init + 1)


@pytest.mark.parametrize("name", ["aedfl", "aedfl-p", "aedfl-rl-dwu"])
def test_update_in_chunks_of_devices_equals_one_pass(aedfl_sim, monkeypatch, name):
    """A slot of 8 devices updated 3 at a time (`AEDFLStep.CHUNK`, bounding the [devices, K + 1, P] temporaries)
    gives the models, losses and masks of one pass over all 8."""
    runs = []
    for chunk in (64, 3):
        monkeypatch.setattr(AEDFLStep, "CHUNK", chunk)
        opts = {"every": 2} if name in ("aedfl", "aedfl-p") else {}
        sim = aedfl_sim(make_method(name, opts), D=8, slot_width=10.0, max_updates=4, evaluate=False)
        res = sim.run()
        runs.append((sim.x.clone(), sim.method.masks.clone(), sim.loss.clone(), res.device_steps, res.virtual_time))
    (x1, m1, l1, s1, v1), (x2, m2, l2, s2, v2) = runs
    assert torch.equal(m1, m2) and s1 == s2 and v1 == pytest.approx(v2, rel=1e-12)
    torch.testing.assert_close(x2, x1, atol=1e-6, rtol=0)
    torch.testing.assert_close(l2, l1, atol=1e-6, rtol=0)
