"""`max_updates` = T local updates PER DEVICE: heterogeneous speeds, failures for good, rejoins, every method kind."""

import math

import pytest
import torch

from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
from dflbench.engines.coordinator import FaultConfig
from dflbench.engines.devices import DeviceProfiles
from dflbench.methods.registry import make_method
from dflbench.models import make_model
from dflbench.topology import exponential

T = 3
D = 4
SPEED = torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=torch.float64)      # relative seconds per update
OPTS = {"aedfl": {"every": 2}, "fedavg": {"fraction": 0.5}, "fednova": {"fraction": 0.5},   # small-run options of
        "fedbuff": {"buffer": 2}, "safa": {"fraction": 0.5}}                              # the methods that have them


def profiles() -> DeviceProfiles:
    """Device i needs 0.01 * SPEED[i] virtual seconds per update of batch 8; messages take about 1 ms."""
    return DeviceProfiles(SPEED * 0.01 / 8, torch.full((D,), 1e15, dtype=torch.float64),
                          torch.full((D,), 0.001, dtype=torch.float64))


def run(data, name, slot=0.0, faults=None, options=None, **cfg):
    cfg = {"max_updates": T, "batch_size": 8, "eval_interval": 0.05, "eval_samples": 16, "time_budget": 20.0,
           "local_steps": 1, **cfg}
    torch.manual_seed(0)
    sim = AsyncSimulator(make_model("lenet5", 4, 1, 16), data, exponential(D), profiles(),
                         make_method(name, options or OPTS.get(name)), AsyncConfig(slot_width=slot, **cfg),
                         faults=faults, record_events=True)
    sends = []
    send = sim.send

    def recording_send(src, dst, payload, nbytes, at=None):
        sends.append((src, dst, sim.now if at is None else at))
        send(src, dst, payload, nbytes, at)

    sim.send = recording_send
    sim.extra = {i: [] for i in range(D)}                             # each update's charged extra work (s)
    work_time = sim.work_time

    def recording_work_time(devs, macs):
        out = work_time(devs, macs)
        for d, w in zip(torch.as_tensor(devs).reshape(-1).tolist(), out.reshape(-1).tolist()):
            sim.extra.setdefault(d, []).append(w)
        return out

    sim.work_time = recording_work_time
    return sim, sim.run(), sends


def update_times(c: float, n: int, extra=()) -> list[float]:
    """k-th completion of a device that starts an update as soon as the previous one and its extra work (`extra[k]`,
    charged by the cost model after the k-th completion) end: c, c + extra[0] + c, ..."""
    out, at = [], 0.0
    for k in range(n):
        at += c + (extra[k - 1] if k else 0.0)
        out.append(at)
    return out


@pytest.mark.parametrize("slot", [None, 0.0, 0.004])
def test_every_device_does_exactly_T_at_its_own_speed(tiny_data, slot):
    """AEDFL-0 without faults: device i completes at c_i, 2 c_i, ..., T c_i and never again, sends nothing after
    its T-th completion, and the run ends at the slowest device's T-th completion (T c_max)."""
    sim, res, sends = run(tiny_data(D), "aedfl-0", slot=slot)
    assert res.stop_reason == "max updates"
    assert sim.t.tolist() == [T] * D
    assert res.device_steps == T * D
    c = (8 * profiles().time_per_sample).tolist()
    for i in range(D):
        got = [e[1] for e in res.events if e[0] == "complete" and e[2] == i]
        assert got == pytest.approx(update_times(c[i], T, sim.extra[i]))
        assert all(0 < w < 0.05 * c[i] for w in sim.extra[i])     # AEDFL-0's aggregation: small, but charged
        assert all(at <= got[-1] + sim.extra[i][-1] for src, _, at in sends if src == i)   # sent after the work
        assert sum(1 for src, _, _ in sends if src == i) == T       # one send per update, none after the T-th
    assert res.virtual_time == pytest.approx(update_times(max(c), T, sim.extra[D - 1])[-1])


def test_batched_equals_exact_with_heterogeneous_stop(tiny_data):
    """The per-device stop leaves fast devices idle while slow ones go on; slot width 0 still equals exact mode."""
    data = tiny_data(D)
    sb, rb, _ = run(data, "aedfl-rl-dwu", slot=0.0)
    se, re, _ = run(data, "aedfl-rl-dwu", slot=None)
    assert rb.events == re.events and rb.stop_reason == re.stop_reason == "max updates"
    torch.testing.assert_close(sb.x, se.x, rtol=1e-4, atol=1e-5)
    assert sb.t.tolist() == se.t.tolist() == [T] * D


def test_async_server_stops_replying_at_T(tiny_data):
    """FedBuff: each device uploads T models at its own speed; the server replies (the next start model) only to the
    first T - 1 uploads of each, so a finished device gets nothing more."""
    sim, res, sends = run(tiny_data(D), "fedbuff")
    assert res.stop_reason == "max updates" and sim.t.tolist() == [T] * D
    for i in range(D):
        assert sum(1 for src, dst, _ in sends if src == i and dst == -1) == T
        assert sum(1 for src, dst, _ in sends if src == -1 and dst == i) == T - 1


METHODS = ["aedfl", "ad-psgd", "fedavg", "fednova", "fedbuff", "aso-fed", "safa", "d-psgd", "dispfl"]


@pytest.mark.parametrize("name", METHODS)
def test_failed_for_good_does_not_block_and_rejoiner_finishes(tiny_data, name):
    """Device 3 (the slowest) fails for good at 0.012 s, device 1 fails at 0.005 s and rejoins at 1.0 s, after
    devices 0 and 2 are done: the run waits for device 1 to do its T updates, then stops (not at the time budget,
    not on an empty queue), with device 3 short of T and no device beyond T. Covers server rounds (fedavg,
    fednova), server replies (fedbuff, aso-fed, safa), decentralized rounds (d-psgd, dispfl) and gossip."""
    faults = FaultConfig(schedule=((3, 0.012, math.inf), (1, 0.005, 1.0)))
    sim, res, _ = run(tiny_data(D), name, faults=faults)
    assert res.stop_reason == "max updates"
    assert sim.t[[0, 1, 2]].tolist() == [T] * 3
    assert int(sim.t[3]) < T and not sim.alive[3]
    assert res.virtual_time > 1.0                                   # device 1's updates came after its rejoin
    before = max(h["updates"] for h in res.history if h["time"] < 1.0)
    assert before < int(sim.t.sum()) and before >= 2 * T


def test_safa_round_waiting_for_a_failed_device_ends_at_a_heartbeat(tiny_data):
    """SAFA with the quota at all 4 devices: devices 0-2 wait for device 3, which fails for good while training
    (0.04 s, before its first upload at 0.05 s); a heartbeat check ends the round short once the coordinator deems it
    dead, and the run ends by T rather than at the time budget."""
    faults = FaultConfig(schedule=((3, 0.04, math.inf),))
    sim, res, _ = run(tiny_data(D), "safa", faults=faults, options={"fraction": 1.0})
    assert res.stop_reason == "max updates" and sim.t.tolist() == [T, T, T, 0]
    assert 1.0 < res.virtual_time < 20.0


def test_all_alive_devices_done_stops_without_waiting_for_the_dead(tiny_data):
    """Only devices failed for good are short of T: the run ends at the last alive device's T-th update."""
    faults = FaultConfig(schedule=((3, 0.012, math.inf),))
    sim, res, _ = run(tiny_data(D), "aedfl-0", faults=faults)
    assert res.stop_reason == "max updates" and sim.t.tolist()[:3] == [T] * 3 and int(sim.t[3]) == 0
    c = (8 * profiles().time_per_sample).tolist()
    assert res.virtual_time == pytest.approx(update_times(c[2], T, sim.extra[2])[-1])
    assert sim.updates_done() and not sim.below_limit()[:3].any() and bool(sim.below_limit()[3])


def test_no_T_means_no_update_limit(tiny_data):
    sim, res, _ = run(tiny_data(D), "aedfl-0", max_updates=None, time_budget=0.2)
    assert res.stop_reason == "time budget" and int(sim.t[0]) > T
    assert bool(sim.below_limit().all()) and not sim.updates_done()


@pytest.mark.parametrize("name, options, cfg", [("aedfl-0", None, {}), ("fedavg", {"fraction": 0.5}, {}),
                                                ("fedavg", {"fraction": 0.5, "rounds": 4}, {"max_updates": None}),
                                                ("ad-psgd", None, {"max_updates": None, "time_budget": 0.2})])
def test_progress_rises_to_one_as_the_run_goes(tiny_data, monkeypatch, name, options, cfg):
    """`run(on_progress=...)`: the share of the stop criterion reached (T updates, R rounds, the budget) never falls,
    passes through the middle of the run and is 1.0 at its end."""
    monkeypatch.setattr(AsyncSimulator, "PROGRESS_EVERY", 0.0)
    cfg = {"max_updates": T, "batch_size": 8, "eval_interval": 0.05, "eval_samples": 16, "time_budget": 20.0,
           "local_steps": 1, **cfg}
    torch.manual_seed(0)
    sim = AsyncSimulator(make_model("lenet5", 4, 1, 16), tiny_data(D), exponential(D), profiles(),
                         make_method(name, options), AsyncConfig(slot_width=0.0, **cfg))
    seen = []
    sim.run(seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and seen[0] < 0.5
    assert any(0.2 < f < 0.9 for f in seen), seen
