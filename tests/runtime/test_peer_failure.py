"""Every surviving rank names the rank that failed first: the first failure a rank records in the process group's
store is the one the later ones report, even when their own exchange failed with another survivor."""

from datetime import timedelta

import torch.distributed as dist

from dflbench.runtime.comm import PeerFailure, transport_error
from dflbench.runtime.launch import free_port


def test_later_failures_name_the_first_failed_rank():
    store = dist.TCPStore("127.0.0.1", free_port(), 1, True, timeout=timedelta(seconds=10), wait_for_workers=False)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        first = PeerFailure.agreed(0, 2, RuntimeError("Connection closed by peer [127.0.0.1]:4003"))
        later = PeerFailure.agreed(3, 0, RuntimeError("Connection closed by peer [127.0.0.1]:51920"))
    finally:
        dist.destroy_process_group()
    assert (first.peer, first.via) == (2, None)
    assert str(first) == ("rank 0: the exchange with rank 2 failed (Connection closed by peer [127.0.0.1]:4003); "
                          "rank 2 died or stopped answering within the peer timeout")
    assert (later.peer, later.via) == (2, 0)
    assert str(later.with_hint("start every rank again with --resume")) == (
        "rank 3: the exchange with rank 0 failed (Connection closed by peer [127.0.0.1]:51920) after rank 2 failed "
        "first; rank 2 died or stopped answering within the peer timeout; start every rank again with --resume")


def test_without_a_process_group_the_failed_exchange_is_named():
    failure = PeerFailure.agreed(1, 3, RuntimeError("timed out"))
    assert (failure.peer, failure.via) == (3, None) and "rank 3 died" in str(failure)


def test_transport_errors_are_cut_to_what_happened():
    gloo = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:34980: "
            "Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the application")
    assert transport_error(RuntimeError(gloo)) == "Read error [127.0.0.1]:34980: Connection reset by peer"
    tensorpipe = "eof (this error originated at tensorpipe/transport/shm/connection_impl.cc:259)"
    assert transport_error(RuntimeError(tensorpipe)) == "eof"
    assert transport_error(RuntimeError("")) == "RuntimeError"
    line = str(PeerFailure(0, 2, RuntimeError(gloo)))
    assert line.startswith("rank 0: the exchange with rank 2 failed (Read error [127.0.0.1]:34980: Connection reset "
                           "by peer); rank 2 died")
