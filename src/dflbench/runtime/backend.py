"""Process-group setup for the torch.distributed runtime: backend choice, the torchrun environment, node placement.

`torchrun` (or `spawn_local` in tests) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; every rank
reads them with `DistEnv.from_env`. Backend "auto" is NCCL when the rank's device is CUDA and gloo otherwise;
"gloo" / "nccl" override it (NCCL on a CPU device is refused: it cannot move CPU tensors).

Nodes are placed on ranks in contiguous blocks: with n nodes on w ranks, rank r hosts nodes
[floor(r n / w), floor((r + 1) n / w)), so one node per rank when n = w.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from dflbench.errors import UserError

BACKENDS = ("auto", "gloo", "nccl")
RUNTIMES = ("simulator", "distributed")
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def check_runtime(runtime: str) -> str:
    """UserError unless `runtime` is a known runtime name."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}; valid runtimes: {', '.join(RUNTIMES)}")
    return runtime


def resolve_device(device: str, local_rank: int | None = None) -> torch.device:
    """The torch device a `--device` string names: "auto" -> CUDA when available, else cpu; "cuda" without an index
    -> cuda:<local_rank mod the device count> for a rank of a multi-process run (plain "cuda" when `local_rank` is
    None); CUDA without CUDA and strings torch does not know are user errors."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} asked for CUDA but none is available; use --device cpu or auto")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev


def choose_backend(device: torch.device | str, backend: str = "auto") -> str:
    """The process-group backend for tensors on `device`: auto = nccl on CUDA, gloo on CPU; or the override."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    dev = torch.device(device)
    if backend == "auto":
        return "nccl" if dev.type == "cuda" and dist.is_nccl_available() else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise UserError("backend 'nccl' needs CUDA tensors but the device is cpu; use --backend gloo or a GPU")
    if backend == "nccl" and not dist.is_nccl_available():
        raise UserError("backend 'nccl' is not available in this PyTorch build; use --backend gloo")
    return backend


def node_placement(n_nodes: int, world_size: int) -> torch.Tensor:
    """LongTensor [n]: the rank hosting each node (contiguous blocks, see the module docstring)."""
    if world_size < 1 or n_nodes < world_size:
        raise UserError(f"cannot place {n_nodes} nodes on {world_size} ranks: every rank must host at least one "
                        f"node; use --nodes >= the number of processes (torchrun --nproc-per-node)")
    rank_starts = torch.arange(world_size + 1) * n_nodes // world_size
    return torch.bucketize(torch.arange(n_nodes), rank_starts[1:], right=True)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: rank, world size, local rank (GPU index on its host), device, backend."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @classmethod
    def from_env(cls, device: str = "auto", backend: str = "auto") -> "DistEnv":
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise UserError(f"--runtime distributed needs the torchrun environment ({', '.join(missing)} unset); "
                            "launch with `torchrun --nproc-per-node N -m dflbench ...`")
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        dev = resolve_device(device, local_rank)
        return cls(rank, world, local_rank, dev, choose_backend(dev, backend))

    def local_nodes(self, n_nodes: int) -> torch.Tensor:
        """Global ids of the nodes this rank hosts."""
        return torch.nonzero(node_placement(n_nodes, self.world_size) == self.rank).flatten()


def init_process_group(env: DistEnv, timeout_s: float = 300.0) -> None:
    """`dist.init_process_group` from the torchrun environment (env://) with env's backend; sets the CUDA device."""
    if env.device.type == "cuda":
        torch.cuda.set_device(env.device)
    if not dist.is_initialized():
        kw = {"device_id": env.device} if env.backend == "nccl" else {}
        dist.init_process_group(env.backend, rank=env.rank, world_size=env.world_size,
                                timeout=timedelta(seconds=timeout_s), **kw)


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def quiet_transport():
    """Inside the block torch's C++ log prints ERROR lines and up, not WARNING: TensorPipe logs one warning per
    connection a peer closes ("RPC agent for node1 encountered error when reading incoming request from node2: pipe
    closed" / "eof"), for every agent that leaves before the others at the end of a run and for a peer that died;
    the runtime reports a lost peer itself, in one line. torch reads TORCH_CPP_LOG_LEVEL only when it is imported;
    this sets the threshold that variable sets (c10's FLAGS_caffe2_log_level, 1 = WARNING, 2 = ERROR) for the
    block only. A TORCH_CPP_LOG_LEVEL the user chose is left alone, and a build without that flag is unchanged."""
    level = _cpp_log_level() if "TORCH_CPP_LOG_LEVEL" not in os.environ else None
    if level is None:
        yield
        return
    before, level.value = level.value, max(level.value, 2)
    try:
        yield
    finally:
        level.value = before


def _cpp_log_level() -> ctypes.c_int | None:
    """c10's FLAGS_caffe2_log_level in the loaded libc10 (None where it cannot be found)."""
    for lib in sorted((Path(torch.__file__).parent / "lib").glob("libc10.*")):
        try:
            return ctypes.c_int.in_dll(ctypes.CDLL(str(lib)), "FLAGS_caffe2_log_level")
        except (OSError, ValueError):
            continue
    return None
