"""`spawn_local`: start `nprocs` local ranks the way torchrun does, for tests, benchmarks and notebooks.

Like torchrun's elastic agent, the parent process hosts the rendezvous `TCPStore` on a free loopback port and
the children find it through MASTER_ADDR / MASTER_PORT with TORCHELASTIC_USE_AGENT_STORE=True, so the store
outlives any rank (a killed rank 0 included) and RPC and process groups rendezvous exactly as under torchrun.
Each child gets RANK, LOCAL_RANK, WORLD_SIZE and runs `fn(rank, *args)` (module-level: the spawn method pickles it).
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A loopback port the OS reports free (it hands the same ephemeral port out again only much later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(local_rank: int, env: dict, fn: Callable, args: tuple) -> None:
    os.environ.update(env)
    torch.set_num_threads(1)
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank)})
    fn(local_rank, *args)


def spawn_local(fn: Callable, nprocs: int, *args, join: bool = True, timeout_s: float = 120.0,
                start_method: str = "spawn"):
    """Run `fn(rank, *args)` in `nprocs` spawned processes on loopback; returns the `ProcessContext`.

    With `join=True` waits for all and raises `ProcessRaisedException` / `ProcessExitedException` if a rank failed;
    with `join=False` the caller joins (`ctx.join()` until it returns True) and may inspect or kill
    `ctx.processes`. The returned context keeps the store alive as `ctx.store`. `start_method="fork"` skips
    re-importing torch in every child (much faster on small machines); children run with one intra-op thread.
    """
    if nprocs < 1:
        raise ValueError(f"nprocs must be >= 1, got {nprocs}")
    port = free_port()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nprocs),
           "LOCAL_WORLD_SIZE": str(nprocs), "TORCHELASTIC_USE_AGENT_STORE": "True", "OMP_NUM_THREADS": "1"}
    ctx = mp.start_processes(_child, args=(env, fn, args), nprocs=nprocs, join=False, start_method=start_method)
    # The store's server thread starts only now: a child forked while it ran could inherit a lock it held and hang
    # in the rendezvous (seen as a rare 60 s store timeout in CI); the children's clients retry until it is up.
    ctx.store = dist.TCPStore("127.0.0.1", port, nprocs, is_master=True, wait_for_workers=False,
                              timeout=timedelta(seconds=timeout_s))
    if join:
        while not ctx.join():
            pass
    return ctx
