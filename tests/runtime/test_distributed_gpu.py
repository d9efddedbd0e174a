"""CUDA: the backend defaults to NCCL, mixing on CUDA tensors (under bf16 autocast, which mixing switches off)
matches the simulator, and with 2+ GPUs two NCCL ranks exchange rows point-to-point. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from dflbench.mixing import LocalCommunicator, from_topology, run
from dflbench.runtime.backend import DistEnv, choose_backend, destroy_process_group, init_process_group
from dflbench.runtime.comm import DistributedCommunicator
from dflbench.topology import exponential

pytestmark = pytest.mark.gpu(nccl=True)


def _run(comm, nodes, device):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 32, generator=g).to(device)
    alg = from_topology("pushpull", exponential(4), lr=0.1, comm=comm)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        state = run(alg, lambda x: x - centres[nodes], torch.zeros(len(nodes), 32, device=device), 10)
    return state.params


def test_single_rank_nccl_matches_simulator():
    assert choose_backend("cuda") == "nccl"
    dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    try:
        comm = DistributedCommunicator(4)
        out = _run(comm, comm.local, "cuda")
    finally:
        dist.destroy_process_group()
    ref = _run(LocalCommunicator(), torch.arange(4), "cuda")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def _worker(rank: int, out: str) -> None:
    env = DistEnv.from_env(device="cuda")
    init_process_group(env, timeout_s=60)
    comm = DistributedCommunicator(4)
    torch.save({"nodes": comm.local, "params": _run(comm, comm.local, env.device).cpu(), "backend": env.backend},
               f"{out}/rank{rank}.pt")
    destroy_process_group()


@pytest.mark.gpu(devices=2, nccl=True)
def test_two_nccl_ranks_match_simulator(tmp_path):
    from dflbench.runtime.launch import spawn_local

    spawn_local(_worker, 2, str(tmp_path), start_method="spawn", timeout_s=120)
    ref = _run(LocalCommunicator(), torch.arange(4), "cuda").cpu()
    for r in range(2):
        rec = torch.load(tmp_path / f"rank{r}.pt")
        assert rec["backend"] == "nccl"
        torch.testing.assert_close(rec["params"], ref[rec["nodes"]], atol=1e-5, rtol=0)
