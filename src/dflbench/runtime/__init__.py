"""dflbench.runtime: the torch.distributed runtime: the simulator's algorithms across processes and hosts,
launched with torchrun. A library the recipes choose; it never imports a recipe.

- `DistributedCommunicator` (`comm`): the dflbench.mixing Communicator over point-to-point `batch_isend_irecv`;
  `DistributedSyncSimulator` (`sync`) runs the synchronous algorithms (P2P-FT, DGD, GT-DGD) with it.
- `AsyncNode` (`async_node`): asynchronous AEDFL (the simulator's AEDFL step, one device per rank) over
  torch.distributed.rpc with a rank-0 coordinator service and heartbeats.
- `DistEnv`, `choose_backend`, `check_runtime`, `node_placement`, `init_process_group` (`backend`);
  `spawn_local` (`launch`) starts local ranks as torchrun does, for tests and benchmarks.
"""

from .async_node import AsyncNode, AsyncRuntimeConfig
from .backend import DistEnv, check_runtime, choose_backend, destroy_process_group, init_process_group, node_placement
from .comm import DistributedCommunicator
from .launch import spawn_local
from .sync import DistributedSyncSimulator

__all__ = [
    "AsyncNode", "AsyncRuntimeConfig", "DistEnv", "DistributedCommunicator", "DistributedSyncSimulator",
    "check_runtime", "choose_backend", "destroy_process_group", "init_process_group", "node_placement",
    "spawn_local",
]
