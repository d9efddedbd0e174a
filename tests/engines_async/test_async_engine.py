import pytest
import torch
import torch.nn.functional as F

from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator, Message
from dflbench.engines.coordinator import FaultConfig
from dflbench.engines.devices import DeviceProfiles, sample_profiles
from dflbench.engines.evaluation import consensus_distance
from dflbench.errors import UserError
from dflbench.methods.aedfl.method import AEDFL, AEDFLConfig
from dflbench.methods.aedfl.step import ModelMessage
from dflbench.methods.registry import make_method
from dflbench.models import make_model
from dflbench.topology import complete, exponential

NEEDED = {"local_steps": 1, "slot_width": 0.0, "time_budget": None}  # AsyncConfig's fields without a default


def run(data, method, D=4, profiles=None, slot=0.0, record=True, faults=None, **cfg):
    cfg = {"max_updates": 4, "batch_size": 8, "eval_interval": 0.05, "eval_samples": 32, "local_steps": 1,
           "time_budget": None, **cfg}
    torch.manual_seed(0)
    sim = AsyncSimulator(make_model("lenet5", 4, 1, 16), data, exponential(D),
                         profiles if profiles is not None else sample_profiles(D, 1, latency=0.001), method,
                         AsyncConfig(slot_width=slot, **cfg), faults=faults, record_events=record)
    return sim, sim.run()


def test_same_seed_same_trajectory(tiny_data):
    data = tiny_data(4)
    s1, r1 = run(data, make_method("aedfl-rl-dwu"))
    s2, r2 = run(data, make_method("aedfl-rl-dwu"))
    assert r1.events == r2.events and any(e[0] == "arrive" for e in r1.events)
    assert torch.equal(s1.x, s2.x)
    _, r3 = run(data, make_method("aedfl-rl-dwu"), seed=5)
    assert r3.events != r1.events


@pytest.mark.parametrize("name", ["aedfl-0", "aedfl-rl-dwu", "aedfl"])
def test_batched_equals_exact_at_slot_width_zero(tiny_data, name):
    """Homogeneous devices finish together, so slot width 0 batches them; exact mode takes one at a time."""
    data = tiny_data(4)
    prof = DeviceProfiles.homogeneous(4)
    calls = {"n": 0}
    method = make_method(name, {"every": 2} if name == "aedfl" else None)
    orig = method.on_complete

    def counted(sim, devs, times):
        calls["n"] += 1
        return orig(sim, devs, times)

    method.on_complete = counted
    sb, rb = run(data, method, profiles=prof, slot=0.0)
    se, re = run(data, make_method(name, {"every": 2} if name == "aedfl" else None), profiles=prof, slot=None)
    assert rb.events == re.events
    n_complete = len([e for e in rb.events if e[0] == "complete"])
    # the modules' work (pruning, the policy over a device's filled slots) is charged per device and desynchronises
    assert calls["n"] * (4 if name == "aedfl-0" else 1) <= n_complete
    assert calls["n"] < n_complete
    torch.testing.assert_close(sb.x, se.x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sb.t, se.t)


def test_vmapped_gradients_match_per_device_autograd(tiny_data):
    data = tiny_data(4)
    sim, _ = run(data, make_method("aedfl-0"), max_updates=1)
    devs = torch.tensor([0, 2, 3])
    xb, yb = data.batch(devs, sim.t[devs], 0, 8, 0)
    loss, g = sim.net.loss_and_grad(sim.x[devs], xb, yb)
    for b, d in enumerate(devs.tolist()):
        model = make_model("lenet5", 4, 1, 16)
        torch.nn.utils.vector_to_parameters(sim.x[d], model.parameters())
        ref = F.cross_entropy(model(xb[b]), yb[b])
        ref.backward()
        torch.testing.assert_close(loss[b], ref.detach())
        torch.testing.assert_close(g[b], torch.cat([p.grad.flatten() for p in model.parameters()]),
                                   rtol=1e-4, atol=1e-6)


def test_aedfl0_update_matches_paper_loop(tiny_data):
    """One local update of AEDFL-0 = SGD on the device's batch (4.5), then 4.9 with the static weights of the
    exponential graph over the cached models not aggregated yet (1/(deg+1) each, the rest on the local model),
    written as a plain loop."""
    data = tiny_data(4)
    sim, _ = run(data, make_method("aedfl-0"), max_updates=3)
    m = sim.method
    d = 1
    x0, t0 = sim.x[d].clone(), int(sim.t[d])
    j = sim.topology.in_neighbors(d)[0]                               # one fresh model, not aggregated yet
    fresh = ModelMessage(torch.randn(sim.P, generator=torch.Generator().manual_seed(3)), None, 1.0, 10, 9, None)
    m.on_arrive(sim, Message(j, d, fresh, 0, 0.0))
    cache = [m.cache.models[d, k].clone() for k in range(m.cache.K)
             if m.cache.valid[d, k] and not m.cache.aggregated[d, k]]
    deg = len(sim.topology.in_neighbors(d))
    xb, yb = data.batch(torch.tensor([d]), torch.tensor([t0]), 0, 8, 0)
    model = make_model("lenet5", 4, 1, 16)
    torch.nn.utils.vector_to_parameters(x0, model.parameters())
    F.cross_entropy(model(xb[0]), yb[0]).backward()
    half = x0 - sim.cfg.lr * torch.cat([p.grad.flatten() for p in model.parameters()])
    ref = (1 - len(cache) / (deg + 1)) * half + sum(cache) / (deg + 1)
    m.on_complete(sim, torch.tensor([d]), torch.tensor([sim.now], dtype=torch.float64))
    assert len(cache) >= 1
    torch.testing.assert_close(sim.x[d], ref, rtol=1e-4, atol=1e-6)
    assert int(sim.t[d]) == t0 + 1


class Recording(AEDFL):
    def setup(self, sim):
        super().setup(sim)
        self.sent = []
        send = sim.send

        def rec(src, dst, payload, nbytes, at=None):
            self.sent.append((src, dst, payload.model.clone(), at))
            send(src, dst, payload, nbytes, at)

        sim.send = rec


def test_scripted_three_devices_cache_and_staleness(tiny_data):
    """Devices take 1, 2 and 4 s per update, messages 1 ms: each cache slot holds the last model its sender sent
    that arrived by the end, stamped with the receiver's update count at arrival (staleness = t_i - stamp)."""
    data = tiny_data(3)
    per_sample = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64) / 8
    prof = DeviceProfiles(per_sample, torch.full((3,), 1e15, dtype=torch.float64),
                          torch.full((3,), 0.0005, dtype=torch.float64))
    method = Recording("aedfl-0", AEDFLConfig(rl=False, dwu=False, prune=False))
    sim = AsyncSimulator(make_model("lenet5", 4, 1, 16), data, complete(3), prof, method,
                         AsyncConfig(batch_size=8, local_steps=1, slot_width=0.0, time_budget=8.5, eval_interval=4.0,
                                     eval_samples=16),
                         record_events=True)
    res = sim.run()
    assert sim.t.tolist() == [8, 4, 2]
    completes = [(e[1], e[2]) for e in res.events if e[0] == "complete"]
    assert len(method.sent) == 14
    for i in range(3):
        for j in range(3):
            if i == j:
                continue
            k = int(method.cache.slots.slot_of[i, j])
            arrived = [s for s in method.sent if s[0] == j and s[1] == i and s[3] + 0.001 <= 8.5]
            if not arrived:
                assert not method.cache.valid[i, k]
                continue
            last = arrived[-1]
            assert method.cache.valid[i, k]
            assert torch.equal(method.cache.models[i, k], last[2])
            stamp = sum(1 for at, dev in completes if dev == i and at <= last[3] + 0.001)
            assert int(method.cache.stamp[i, k]) == stamp
    stale = sim.t.unsqueeze(1) - method.cache.stamp
    assert (stale[method.cache.valid] >= 0).all()


def test_fault_injection_keeps_training(tiny_data):
    data = tiny_data(4)
    faults = FaultConfig(schedule=((0, 0.02, 0.2),))
    sim, res = run(data, make_method("aedfl-0"), faults=faults, max_updates=None, time_budget=0.4)
    kinds = [e[0] for e in res.events]
    assert "fail" in kinds and "rejoin" in kinds
    fail_at = next(e[1] for e in res.events if e[0] == "fail")
    rejoin_at = next(e[1] for e in res.events if e[0] == "rejoin")
    during = [e for e in res.events if e[0] == "complete" and fail_at < e[1] < rejoin_at]
    assert during and all(e[2] != 0 for e in during)            # the others keep going, device 0 does not
    after = [e for e in res.events if e[0] == "complete" and e[1] > rejoin_at and e[2] == 0]
    assert after                                                # device 0 trains again after rejoining
    assert sim.dropped >= 0 and sim.coordinator.joins == 5
    _, res2 = run(data, make_method("aedfl-0"), faults=FaultConfig(prob=0.3, downtime=0.05), max_updates=6)
    assert res2.stop_reason == "max updates" and any(e[0] == "fail" for e in res2.events)


def test_stop_criteria_and_consensus(tiny_data):
    data = tiny_data(4)
    sim, res = run(data, make_method("aedfl-0"), max_updates=None, time_budget=0.1)
    assert res.stop_reason == "time budget" and res.virtual_time == pytest.approx(0.1)
    assert all(h["time"] <= 0.1 for h in res.history)
    sim, res = run(data, make_method("aedfl-0"), max_updates=None, consensus_threshold=1e9, time_budget=10.0)
    assert res.stop_reason == "consensus threshold" and res.virtual_time < 1.0
    x = sim.x.double()
    ref = sum(float((x[i] - x[j]).norm()) for i in range(4) for j in range(4) if i != j) / 12
    assert consensus_distance(sim.x) == pytest.approx(ref, rel=1e-3)   # float32 Gram-matrix distances
    with pytest.raises(ValueError, match="stop criterion"):
        AsyncConfig(**NEEDED)


@pytest.mark.parametrize("bad, needle", [({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr > 0"),
                                         ({"slot_width": -0.1}, "slot_width"), ({"max_updates": 0}, "max_updates"),
                                         ({"eval_interval": 0.0}, "eval_interval"),
                                         ({"eval_samples": 0}, "eval_samples must be >= 1")])
def test_bad_config_is_a_user_error(bad, needle):
    with pytest.raises(UserError, match=needle):
        AsyncConfig(**{**NEEDED, "max_updates": 4, **bad})
    assert AsyncConfig(**NEEDED, max_updates=4, eval_samples=None).eval_samples is None


def test_model_with_buffers_is_rejected(tiny_data):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(392, 4))
    with pytest.raises(ValueError, match="buffers"):
        AsyncSimulator(model, tiny_data(4), exponential(4), sample_profiles(4, 0), make_method("aedfl-0"),
                       AsyncConfig(**NEEDED, max_updates=1))
