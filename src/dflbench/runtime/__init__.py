"""dflbench.runtime: the torch.distributed runtime: the simulator's algorithms across processes and hosts,
launched with torchrun. A library the recipes choose; it never imports a recipe. Names are imported on first
use (`dflbench.lazy`).

- `DistributedCommunicator` (`comm`): the dflbench.mixing Communicator over point-to-point `batch_isend_irecv`;
  `DistributedSyncSimulator` (`sync`) runs the synchronous algorithms (P2P-FT, DGD, GT-DGD) with it.
- `AsyncNode` (`async_node`): asynchronous AEDFL (the simulator's AEDFL step, one device per rank) over
  torch.distributed.rpc with a rank-0 coordinator service and heartbeats.
- `DistEnv`, `choose_backend`, `check_runtime`, `node_placement`, `init_process_group` (`backend`);
  `spawn_local` (`launch`) starts local ranks as torchrun does, for tests and benchmarks.
"""

from dflbench.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "async_node": ("AsyncNode", "AsyncRuntimeConfig"),
    "backend": ("DistEnv", "check_runtime", "choose_backend", "destroy_process_group", "init_process_group",
                "node_placement"),
    "comm": ("DistributedCommunicator",),
    "launch": ("spawn_local",),
    "sync": ("DistributedSyncSimulator",),
})
