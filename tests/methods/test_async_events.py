"""Typed events: the queue holds `Event` records of a `Kind` with typed payloads, every method's messages are typed
records (no dict read by key), and `AsyncSimulator.account` is the one bookkeeping call."""

import dataclasses

import pytest
import torch

from dflbench.engines.async_sim import Completion, Event, Kind, Message, Trace
from dflbench.methods.registry import list_methods, make_method

OPTIONS = {"aedfl": {"every": 2}, "aedfl-p": {"every": 2}, "fedbuff": {"buffer": 2}}


def _typed(payload) -> bool:
    return dataclasses.is_dataclass(payload) and not isinstance(payload, type)


@pytest.mark.parametrize("name", list_methods())
def test_every_queued_event_and_message_is_typed(aedfl_sim, name):
    sim = aedfl_sim(make_method(name, OPTIONS.get(name)), max_updates=3)
    seen = []
    push = sim.schedule

    def recording(at, kind, payload=None):
        seen.append((kind, payload))
        push(at, kind, payload)

    sim.schedule = recording
    res = sim.run()
    assert res.stop_reason == "max updates" and seen
    assert all(isinstance(e, Event) for e in sim._queue)
    for kind, payload in seen:
        assert isinstance(kind, Kind)
        if kind == Kind.COMPLETE:
            assert isinstance(payload, Completion)
        elif kind == Kind.ARRIVE:
            assert isinstance(payload, Message) and _typed(payload.payload), type(payload.payload)
        elif kind in (Kind.FAIL, Kind.REJOIN):
            assert isinstance(payload, int)
        elif kind == Kind.ROUND:
            assert payload is None or _typed(payload)
    assert all(isinstance(t, Trace) for t in res.events)


def test_the_kinds_order_events_at_equal_times():
    assert sorted([Event(1.0, Kind.EVAL, 0), Event(1.0, Kind.ARRIVE, 1), Event(1.0, Kind.COMPLETE, 2),
                   Event(0.5, Kind.EVAL, 3)]) == [Event(0.5, Kind.EVAL, 3), Event(1.0, Kind.COMPLETE, 2),
                                                   Event(1.0, Kind.ARRIVE, 1), Event(1.0, Kind.EVAL, 0)]


def test_account_counts_updates_losses_traffic_and_steps(aedfl_sim):
    sim = aedfl_sim(make_method("ad-psgd"))
    sim.account(torch.tensor([1, 3]), loss=torch.tensor([0.5, 0.25], dtype=torch.float64), updates=1)
    sim.account(2, updates=2, messages=3, nbytes=100, steps=7)
    assert sim.t.tolist() == [0, 1, 2, 1] and sim.loss.tolist() == [0.0, 0.5, 0.0, 0.25]
    assert (sim.messages, sim.bytes_sent, sim.device_steps) == (3, 300, 7)
    sim.send(0, 1, None, 40)
    assert (sim.messages, sim.bytes_sent) == (4, 340)
