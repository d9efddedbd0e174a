"""Asynchronous AEDFL across 4 gloo-free RPC ranks: the run completes and converges on a toy problem, every
message carries only a flat model [P] plus scalar metadata, and a rank killed mid-run (SIGKILL) is detected by
heartbeat timeout: the others stop, report, and rank 0 returns their results as a partial run naming the failure."""

from __future__ import annotations

import json
import os
import signal

import torch
import torch.distributed.rpc as rpc
from torch import nn

from dflbench.io import atomic_write_json
from dflbench.runtime import async_node as runtime
from dflbench.runtime.async_node import AsyncNode, AsyncRuntimeConfig
from dflbench.topology import exponential

N = 4


def _blobs(seed: int, count: int):
    """Two Gaussian classes in 2-D, centred at (+-1.5, +-1.5): linearly separable up to a few percent."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (count,), generator=g)
    x = torch.randn(count, 2, generator=g) * 0.7 + (2.0 * y[:, None] - 1.0) * 1.5
    return x, y


def _node(rank: int, cfg: AsyncRuntimeConfig) -> AsyncNode:
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    x, y = _blobs(100 + rank, 64)
    keep = (y == rank % 2) | (torch.arange(64) < 16)          # skewed: mostly one class per device
    x_test, y_test = _blobs(7, 256)
    return AsyncNode(model, x[keep], y[keep], x_test, y_test, exponential(N), cfg, rank, N)


def _worker(rank: int, out_dir: str, kill_rank: int, cfg: AsyncRuntimeConfig) -> None:
    calls = []
    real = rpc.rpc_async

    def recording(to, fn, args=(), kwargs=None, timeout=-1.0):
        if fn is runtime._deliver:
            calls.append([(tuple(a.shape), a.dtype) if torch.is_tensor(a) else type(a).__name__ for a in args])
        return real(to, fn, args=args, kwargs=kwargs, timeout=timeout)

    runtime.rpc.rpc_async = recording
    node = _node(rank, cfg)
    initial = node.evaluate()

    def maybe_die(t: int) -> None:
        if rank == kill_rank and t == 5:
            os.kill(os.getpid(), signal.SIGKILL)

    result = node.run(maybe_die)
    torch.save({"calls": calls, "initial": initial, "P": node.x.numel(), "metrics": result},
               f"{out_dir}/rank{rank}.pt")
    if rank == 0:
        atomic_write_json(f"{out_dir}/results.json", result)


# one local step per update, no time budget, evaluated once at the end on the whole test set
ONLY_AT_END = {"local_steps": 1, "time_budget_s": None, "eval_every": 0, "eval_samples": None}


def test_async_run_converges_and_sends_only_models(launch, tmp_path):
    cfg = AsyncRuntimeConfig(max_updates=40, batch_size=16, lr=0.2, heartbeat_interval_s=0.1,
                             heartbeat_timeout_s=5.0, finish_timeout_s=60.0, **ONLY_AT_END)
    launch(_worker, N, str(tmp_path), -1, cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed_nodes"] == [] and [r["node"] for r in results["nodes"]] == list(range(N))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(N)]
    for r, rec in enumerate(ranks):
        node = results["nodes"][r]
        assert node["updates"] == 40 and node["failed_sends"] == 0 and node["rejected"] == 0
        assert node["accuracy"] > 0.9 and node["test_loss"] < rec["initial"][1]
        # every push is (sender, flat model [P] float32, version, loss, samples): nothing else crosses
        assert len(rec["calls"]) == node["messages"] == 40
        assert all(c == ["int", ((rec["P"],), torch.float32), "int", "float", "int"] for c in rec["calls"])
        assert node["bytes_sent"] == 40 * rec["P"] * 4
    # counted until each receiver's report; later arrivals still land in its cache but go unused
    assert all(n["received"] > 0 for n in results["nodes"])
    assert sum(n["received"] for n in results["nodes"]) <= sum(n["messages"] for n in results["nodes"])
    assert results["bytes_sent"] == sum(n["bytes_sent"] for n in results["nodes"])


def test_killed_rank_is_detected_and_the_others_stop_with_a_partial_record(launch, tmp_path):
    cfg = AsyncRuntimeConfig(max_updates=10**6, batch_size=16, lr=0.2, heartbeat_interval_s=0.1,
                             heartbeat_timeout_s=2.5, finish_timeout_s=60.0, rpc_timeout_s=10.0, **ONLY_AT_END)
    ctx = launch(_worker, N, str(tmp_path), 2, cfg, join=False)
    for p in ctx.processes:
        p.join(120)
    codes = [p.exitcode for p in ctx.processes]
    assert codes[2] == -signal.SIGKILL and [codes[r] for r in (0, 1, 3)] == [0, 0, 0]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed_nodes"] == [2] and results["partial"] is True
    assert results["stop_reason"] == "device 2 failed (rank 2: no heartbeat for 2.5 s, killed, crashed or stopped)"
    assert [r["node"] for r in results["nodes"]] == [0, 1, 3]
    assert all(5 < r["updates"] < 10**6 for r in results["nodes"]), "the survivors stopped early"
    for r in (1, 3):                     # every survivor's own return value names the failure too
        mine = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)["metrics"]
        assert mine["failed_nodes"] == [2] and mine["partial"] and mine["stop_reason"] == results["stop_reason"]
    assert not (tmp_path / "rank2.pt").exists()
