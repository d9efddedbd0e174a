"""`run_p2pft_distributed`: the P2P-FT pipeline (`dflbench.recipes.p2pft`) with every rank hosting its nodes.

    torchrun --nproc-per-node 4 -m dflbench p2pft --runtime distributed --nodes 4 ...

Every rank runs `run_p2pft` with a `P2PFTRuntime` holding `DistributedSyncSimulator`: it builds the same
topology, partition, model, frozen prefix and initial tail from the run seed (so nothing but mixed tensors and
final metrics crosses processes), trains its nodes with the same algorithm objects the simulator uses, and rank 0
writes the simulator's results.json / results.csv
(plus a `runtime` entry) and, with `--attention`, Fig. 2 from node 1, which it hosts. `central` trains one
model on the union of all data and has no decentralized form, so it is refused here. Returns the `P2PFTRun` on
rank 0 and None on the other ranks.
"""

from __future__ import annotations

from pathlib import Path

from dflbench.errors import UserError, check_numbers
from dflbench.recipes.p2pft import P2PFTConfig, P2PFTRun, P2PFTRuntime, run_p2pft
from dflbench.recipes.p2pft_algorithms import single_model
from dflbench.runtime.backend import DistEnv, destroy_process_group, init_process_group
from dflbench.runtime.comm import PeerFailure
from dflbench.runtime.sync import DistributedSyncSimulator


def check_timeout(timeout_s: float | None) -> None:
    """UserError naming --peer-timeout unless `timeout_s` is None or a finite number > 0."""
    check_numbers({"timeout_s": timeout_s}, {"timeout_s": ("--peer-timeout", "(0, inf)")})


def run_p2pft_distributed(cfg: P2PFTConfig, out_dir: str | Path, resume: bool = False, progress: bool | None = None,
                          backend: str = "auto", timeout_s: float = 300.0) -> P2PFTRun | None:
    """Run every algorithm of `cfg` across the torchrun ranks (see the module docstring). A rank that dies, or
    answers no exchange for `timeout_s` seconds, stops every rank with `PeerFailure` naming it; the epochs finished
    before are checkpointed, and the same launch with `resume=True` continues from them."""
    check_timeout(timeout_s)
    central = [a for a in cfg.algorithms if single_model(a)]
    if central:
        raise UserError(f"algorithm(s) {', '.join(central)} train one model on the union of all nodes' data and "
                        "cannot run with --runtime distributed; drop them from --algorithms or use --runtime "
                        "simulator")
    env = DistEnv.from_env(cfg.device, backend)
    if cfg.nodes < env.world_size:
        raise UserError(f"--nodes {cfg.nodes} is smaller than the {env.world_size} processes; every rank hosts at "
                        "least one node")
    init_process_group(env, timeout_s)
    try:
        runtime = P2PFTRuntime(DistributedSyncSimulator, str(env.device), lead=env.rank == 0,
                               info={"kind": "distributed", "world_size": env.world_size, "backend": env.backend})
        return run_p2pft(cfg, out_dir, resume, progress, runtime)
    except PeerFailure as exc:
        raise exc.with_hint(f"completed epochs are checkpointed in {Path(out_dir) / 'checkpoints'}: start every rank "
                            "again with --resume to continue") from exc.cause
    finally:
        destroy_process_group()
