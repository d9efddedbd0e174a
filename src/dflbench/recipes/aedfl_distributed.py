"""`run_aedfl_distributed`: the AEDFL experiment (`dflbench.recipes.aedfl`) with one device per torchrun rank.

    torchrun --nproc-per-node 8 -m dflbench aedfl --runtime distributed --devices 8 --methods aedfl ...

Every rank loads the dataset and computes the same Dirichlet partition, keeps ITS device's samples, builds the
same initial model from the run seed and runs `AsyncNode` (asynchronous pushes over RPC, rank 0 coordinator) with
the method object the simulator would run (`make_method`, the same options), so its device update is the
simulator's AEDFL step.
Rank 0 turns the gathered per-device metrics into the simulator's run record (Table 1 fields; `time` and
`time_to_target` are wall-clock seconds here, there is no virtual clock, and what needs every model in one place
is None: the consensus distance, the consensus model's accuracy and its time to target, the mask disagreement;
docs/EVALUATION.md) and returns the same `{"config", "data", "runs"}` dict that
`dflbench.recipes.aedfl.write_results` stores; the other ranks return None.

Methods: AEDFL and every ablation (aedfl, aedfl-0, aedfl-rl, aedfl-dwu, aedfl-p, aedfl-rl-dwu), one per launch;
the baselines run on the simulator only. Devices fail for real here (a dead process), so the simulator's fault
injection (`fault_prob`) is refused.

A run that stops early (a device killed, crashed or stopped; SIGTERM or Ctrl-C: `AsyncNode`'s module docstring)
raises `RunStopped` on every rank, naming the failed devices (device i is rank i); on rank 0 it carries the
results of the devices that reported, whose run record is marked `partial` with its `stop_reason` and
`failed_nodes`, for the caller to write.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Callable

import numpy as np
import torch

from dflbench.engines.evaluation import convergence
from dflbench.errors import RunAborted, UserError
from dflbench.methods.aedfl.method import AEDFL
from dflbench.methods.registry import METHODS, list_methods, make_method
from dflbench.provenance import code_provenance
from dflbench.recipes.aedfl import AEDFLRunConfig, build_model, evaluated_samples, load_device_data
from dflbench.recipes.records import MethodRun
from dflbench.runtime.async_node import AsyncNode, AsyncRuntimeConfig
from dflbench.runtime.backend import DistEnv


def distributed_method(cfg: AEDFLRunConfig) -> AEDFL:
    """The AEDFL method object of `cfg`'s single method, built as the simulator builds it with the run's options
    (UserError for a method whose registry entry lists no distributed runtime, or for more than one method)."""
    variants = [n for n in list_methods() if "distributed" in METHODS.get(n).metadata["runtimes"]]
    if len(cfg.methods) != 1 or cfg.methods[0] not in variants:
        raise UserError(f"--runtime distributed runs exactly one of {', '.join(variants)} per launch (the "
                        f"baselines run on the simulator: leave --runtime at simulator), got --methods "
                        f"{','.join(cfg.methods)}")
    return make_method(cfg.methods[0], cfg.options(cfg.methods[0]))


def runtime_config(cfg: AEDFLRunConfig, **settings) -> AsyncRuntimeConfig:
    """The per-rank settings of `cfg`, with `settings` for the runtime's own fields (`heartbeat_timeout_s`,
    `eval_every`, ...: their defaults live in `AsyncRuntimeConfig`); UserError for what the distributed runtime
    cannot do."""
    distributed_method(cfg)
    if cfg.fault_prob > 0:
        raise UserError("--fault-prob injects simulated failures; with --runtime distributed devices fail for real "
                        "(kill a process), so leave --fault-prob at 0")
    if cfg.corrupt:
        raise UserError("--corrupt is a simulated fault; with --runtime distributed leave it out")
    if cfg.max_updates is None and cfg.time_budget is None:
        raise UserError("give --max-updates or --time-budget (wall-clock seconds with --runtime distributed)")
    return AsyncRuntimeConfig(max_updates=cfg.max_updates or 10**9, time_budget_s=cfg.time_budget,
                              batch_size=cfg.batch_size, local_steps=cfg.local_steps, lr=cfg.lr,
                              eval_samples=cfg.eval_samples, seed=cfg.seed, device=cfg.device, **settings)


def run_aedfl_distributed(cfg: AEDFLRunConfig, on_update: Callable[[int], None] | None = None,
                          **settings) -> dict | None:
    """Run `cfg`'s single method across the ranks (`settings`: `runtime_config`'s); rank 0 returns the results dict
    (see the module docstring). `on_update(t)` runs on every rank after its t-th local update."""
    rt = runtime_config(cfg, **settings)
    env = DistEnv.from_env(cfg.device)
    rt = replace(rt, device=str(env.device))
    if cfg.devices != env.world_size:
        raise UserError(f"--devices {cfg.devices} must equal the number of processes ({env.world_size}) with "
                        "--runtime distributed: one device per rank")
    data, info = load_device_data(cfg)
    rank = env.rank
    idx = data.parts[rank, : int(data.sizes[rank])]
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, info)
    node = AsyncNode(model, data.prepare(data.x[idx]), data.y[idx], data.prepare(data.x_test), data.y_test,
                     cfg.graph(), rt, rank, env.world_size, distributed_method(cfg))
    gathered = node.run(on_update)
    results = None
    if rank == 0:
        results = {"config": asdict(cfg), "data": info, "code": code_provenance(), "runs": []}
        results["runs"].append({**to_run_record(cfg, gathered, evaluated_samples(results)), "code": results["code"]})
    if gathered["partial"]:
        raise RunStopped(rank, gathered["failed_nodes"], gathered["stop_reason"], node.signal, results)
    return results


class RunStopped(RunAborted):
    """The distributed run stopped early on rank `rank`: `failed` lists the failed devices (= ranks), `reason` says
    why the run stopped, `signal` names the signal this rank received (None), and on rank 0 `results` holds the
    reporting devices' results (the run record marked partial) for the caller to write."""

    def __init__(self, rank: int, failed: list[int], reason: str, signal: str | None, results: dict | None):
        self.rank, self.failed, self.reason, self.signal, self.results = rank, failed, reason, signal, results
        super().__init__(f"rank {rank}: the run stopped early: {reason}")


def to_run_record(cfg: AEDFLRunConfig, g: dict, eval_samples: int) -> dict:
    """The simulator's per-method record from the gathered per-device metrics (wall-clock times; MFP: the mean
    over the devices' final models, as the simulator reports it); accuracies on `eval_samples` test samples."""
    nodes = g["nodes"]
    evals = [[h for h in n["history"] if "accuracy" in h] for n in nodes]
    history = []
    for k in range(min((len(e) for e in evals), default=0)):
        row = [e[k] for e in evals]
        history.append({"time": max(h["wall"] for h in row), "accuracy": float(np.mean([h["accuracy"] for h in row])),
                        "test_loss": float(np.mean([h["test_loss"] for h in row])), "consensus": None,
                        "updates": sum(h["update"] for h in row), "alive": len(row)})
    history.append({"time": g["wall_time"], "accuracy": g["accuracy"],
                    "test_loss": float(np.mean([n["test_loss"] for n in nodes])), "consensus": None,
                    "updates": sum(n["updates"] for n in nodes), "alive": len(nodes)})
    reached = next((h["time"] for h in history if h["accuracy"] >= cfg.target_acc), None)
    mflops = float(np.mean([n["mflops"] for n in nodes]))
    return MethodRun(
        cfg.methods[0], g["accuracy"], None, reached, None,
        {"accuracy": convergence(history), "consensus_accuracy": None}, [n["accuracy"] for n in nodes], mflops,
        g["bytes_sent"], g["wall_time"], eval_samples, g["wall_time"],
        g["device_steps"], g["device_steps"] / max(g["wall_time"], 1e-9), sum(n["messages"] for n in nodes),
        sum(n["failed_sends"] for n in nodes), g["stop_reason"], None, None, asdict(cfg.options(cfg.methods[0])),
        history, runtime="distributed", failed_nodes=g["failed_nodes"], partial=g["partial"],
        per_node=[{k: v for k, v in n.items() if k != "history"} for n in nodes]).to_dict()
