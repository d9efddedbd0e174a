"""torch.distributed runtime: bytes on the wire per step equal dflbench-mixing's analytic count (asserted), and
the step time of 4 local gloo processes (one node each) next to the one-process simulator (recorded only: on a
shared 2-core CPU the processes mostly measure the scheduler; `extra_info` holds both times and their ratio)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
import torch

from dflbench.mixing import LocalCommunicator, from_topology
from dflbench.runtime.backend import DistEnv, destroy_process_group, init_process_group
from dflbench.runtime.comm import DistributedCommunicator
from dflbench.runtime.launch import spawn_local
from dflbench.topology import exponential

N, WARMUP, STEPS = 4, 2, 10
ALGORITHMS = ("pushpull", "dgd", "gtdgd")


def _problem(n: int):
    """A quadratic per node, f_i(x) = ||x - c_i||^2 / 2, on a 16.5k-parameter 'layer' {w: [256, 64], b: [64]}."""
    g = torch.Generator().manual_seed(0)
    centres = {"w": torch.randn(n, 256, 64, generator=g), "b": torch.randn(n, 64, generator=g)}
    x0 = {k: torch.zeros_like(v) for k, v in centres.items()}
    return x0, centres


def _grad_fn(centres, nodes):
    return lambda x: {k: x[k] - centres[k][nodes] for k in x}


def _worker(rank: int, out: str) -> None:
    init_process_group(DistEnv.from_env(device="cpu"), timeout_s=60)
    x0, centres = _problem(N)
    rec = {}
    for name in ALGORITHMS:
        comm = DistributedCommunicator(N)
        alg = from_topology(name, exponential(N), lr=0.1, comm=comm)
        grad_fn = _grad_fn(centres, comm.local)
        state = alg.init({k: v[comm.local] for k, v in x0.items()}, grad_fn)
        for _ in range(WARMUP):
            state = alg.step(state, grad_fn)
        wire0, analytic0 = comm.wire_bytes, int(state.bytes_sent.sum())
        torch.distributed.barrier()
        start = time.perf_counter()
        for _ in range(STEPS):
            state = alg.step(state, grad_fn)
        elapsed = time.perf_counter() - start
        rec[name] = {"wire_per_step": (comm.wire_bytes - wire0) / STEPS,
                     "analytic_per_step": (int(state.bytes_sent.sum()) - analytic0) / STEPS,
                     "step_s": elapsed / STEPS}
    torch.save(rec, f"{out}/rank{rank}.pt")
    destroy_process_group()


@pytest.fixture(scope="module")
def distributed_record():
    with tempfile.TemporaryDirectory() as out:
        spawn_local(_worker, N, out, start_method="fork", timeout_s=60)
        return [torch.load(Path(out) / f"rank{r}.pt") for r in range(N)]


@pytest.mark.parametrize("name", ALGORITHMS)
def test_wire_bytes_equal_analytic_and_step_time(benchmark, distributed_record, name):
    x0, centres = _problem(N)
    alg = from_topology(name, exponential(N), lr=0.1, comm=LocalCommunicator())
    grad_fn = _grad_fn(centres, torch.arange(N))
    state = alg.init(x0, grad_fn)
    analytic = int(alg.step(state, grad_fn).bytes_sent.sum())        # dflbench-mixing's count for one step
    wire = sum(r[name]["wire_per_step"] for r in distributed_record)
    assert wire == analytic == sum(r[name]["analytic_per_step"] for r in distributed_record)
    benchmark(alg.step, state, grad_fn)
    dist_step = max(r[name]["step_s"] for r in distributed_record)
    benchmark.extra_info.update(wire_bytes_per_step=wire, analytic_bytes_per_step=analytic,
                                distributed_step_s=dist_step, simulator_step_s=benchmark.stats.stats.median,
                                distributed_over_simulator=dist_step / benchmark.stats.stats.median,
                                processes=N, machine="2-core CPU, gloo loopback")
