"""The distributed AEDFL coordinator's stop rules (`CoordinatorService`): a device's own stop (a signal) reaches every
beat's answer; a device without a beat for the timeout is failed and stops the run; the run's outcome lists the
failed devices that never reported, with the reason; the coordinator does not wait for an ack from a reporter that
has since gone silent. And `quiet_transport` raises torch's C++ log threshold only inside its block."""

from __future__ import annotations

import time

from dflbench.runtime import backend
from dflbench.runtime.async_node import CoordinatorService

TIMEOUT = 0.2


def test_a_devices_signal_reaches_every_beat_and_the_outcome():
    svc = CoordinatorService(3, TIMEOUT)
    assert svc.beat(0) == ([True] * 3, None)
    assert svc.beat(1, "rank 1 received SIGTERM") == ([True] * 3, "rank 1 received SIGTERM")
    assert svc.beat(2)[1] == "rank 1 received SIGTERM" and svc.beat(0, "rank 0 received SIGINT")[1].startswith("rank 1")
    assert svc.settled(0) is None                                                    # nobody reported yet
    for i in range(3):
        svc.report(i, {"node": i})
    assert svc.settled(0) == {"failed": [], "stop_reason": "rank 1 received SIGTERM", "partial": True}


def test_a_run_without_faults_is_not_partial():
    svc = CoordinatorService(2, TIMEOUT)
    svc.report(0, {})
    assert svc.settled(0) is None
    svc.report(1, {})
    assert svc.settled(1) == {"failed": [], "stop_reason": None, "partial": False}


def test_a_silent_device_fails_stops_the_run_and_is_named():
    svc = CoordinatorService(3, TIMEOUT)
    svc.report(0, {})
    time.sleep(TIMEOUT * 1.5)
    alive, stop = svc.beat(1)                          # device 2 has been silent for longer than the timeout
    assert alive == [True, True, False] and stop == f"device 2 sent no heartbeat for {TIMEOUT:g} s"
    assert svc.settled(1) is None                      # device 1 has not reported
    svc.report(1, {}, halt=None)
    assert svc.settled(0) == {"failed": [2], "partial": True, "stop_reason": f"device 2 failed (rank 2: no "
                              f"heartbeat for {TIMEOUT:g} s, killed, crashed or stopped)"}


def test_a_slow_device_that_reports_is_not_listed_failed():
    svc = CoordinatorService(2, TIMEOUT)
    svc.report(0, {})
    time.sleep(TIMEOUT * 1.5)
    assert svc.beat(0)[0] == [True, False]
    assert svc.beat(1)[0] == [True, True]              # it beats again: alive
    svc.report(1, {})
    assert svc.settled(0) == {"failed": [], "partial": True, "stop_reason": f"device 1 sent no heartbeat for "
                              f"{TIMEOUT:g} s"}


def test_the_coordinator_waits_for_acks_only_from_devices_still_beating():
    svc = CoordinatorService(3, TIMEOUT)
    for i in range(3):
        svc.report(i, {})
    svc.acknowledge(0)
    svc.beat(1)
    svc.beat(2)
    assert not svc.all_acked()
    svc.acknowledge(1)
    time.sleep(TIMEOUT * 1.5)                          # device 2 reported, then died before its ack
    assert svc.all_acked()


def test_quiet_transport_raises_the_cpp_log_threshold_inside_the_block_only(monkeypatch):
    monkeypatch.delenv("TORCH_CPP_LOG_LEVEL", raising=False)
    level = backend._cpp_log_level()
    assert level is not None, "this torch build has c10's FLAGS_caffe2_log_level"
    before = level.value
    with backend.quiet_transport():
        assert level.value == max(before, 2)
    assert level.value == before
    monkeypatch.setenv("TORCH_CPP_LOG_LEVEL", "INFO")   # the user's choice is kept
    with backend.quiet_transport():
        assert level.value == before


def test_after_a_signal_a_silent_device_is_failed_within_the_grace(monkeypatch):
    """torchrun SIGKILLs every rank 30 s after its SIGTERM: a longer heartbeat timeout is cut to SIGNAL_GRACE_S."""
    from dflbench.runtime import async_node

    monkeypatch.setattr(async_node, "SIGNAL_GRACE_S", TIMEOUT)
    svc = CoordinatorService(2, 100 * TIMEOUT)
    svc.report(0, {}, halt="rank 0 received SIGTERM")
    time.sleep(TIMEOUT * 1.5)
    assert svc.settled(0) == {"failed": [1], "partial": True, "stop_reason": f"device 1 failed (rank 1: no "
                              f"heartbeat for {TIMEOUT:g} s, killed, crashed or stopped)"}
