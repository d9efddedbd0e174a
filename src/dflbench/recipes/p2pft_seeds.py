"""One P2P-FT seed before and during training: its graph, algorithms, split, model and cached inputs (`prepare`),
each algorithm's simulator (`simulator`), and the training of one algorithm for every seed, stacked where the
seeds' runs have the same shape (`train`)."""

from __future__ import annotations

import copy
import hashlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dflbench.data import BatchTransform, partition
from dflbench.engines import SyncConfig, SyncResult, SyncSimulator, TailInputs
from dflbench.errors import UserError, user_input
from dflbench.mixing import NonFiniteError
from dflbench.vision import create_model, split_for_cache

from .p2pft_algorithms import build_algorithm, needs_graph, single_model
from .p2pft_results import check_checkpoints

if TYPE_CHECKING:
    from .p2pft import P2PFTConfig, P2PFTRuntime


def build_model(cfg: P2PFTConfig, num_classes: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        with user_input("--model/--model-kwargs/--checkpoint", ValueError, TypeError):
            return create_model(cfg.model, num_classes, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint,
                                **dict(cfg.model_kwargs)).eval()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_context(cfg: P2PFTConfig, topology) -> dict:
    """What in `cfg` shapes a trajectory beyond the simulator's own fingerprint (algorithm, nodes, batch, seed,
    lr, momentum, node sizes, shapes): stored in every checkpoint, so `--resume` refuses another run's files."""
    return {"model": cfg.model, "model_kwargs": [list(kv) for kv in cfg.model_kwargs], "backbone": cfg.backbone,
            "checkpoint_sha256": _sha256(cfg.checkpoint) if cfg.checkpoint else None, "dataset": cfg.dataset,
            "image_size": cfg.image_size, "split": cfg.split, "topology": cfg.topology,
            "topology_sha256": None if topology is None else
            hashlib.sha256(topology.weights.numpy().tobytes()).hexdigest(),
            "policy": cfg.policy, "cache": cfg.cache, "central_steps": cfg.central_steps}


@dataclass
class Seed:
    """One seed's experiment before training: its graph, algorithms, split, model, cached inputs, context."""

    cfg: P2PFTConfig
    out: Path
    topology: Any
    algorithms: dict
    part: Any
    model: torch.nn.Module
    transform: BatchTransform
    tail: torch.nn.Module
    inputs: TailInputs
    init: dict
    context: dict


def prepare(cfg: P2PFTConfig, out: Path, device: str, data, runtime: P2PFTRuntime, progress: bool | None,
             earlier: list[Seed]) -> Seed:
    """Build one seed's run; its feature cache is an earlier seed's when their frozen prefixes are equal (a
    pretrained or checkpoint backbone), so the prefix runs once for all seeds."""
    topology = cfg.graph() if any(needs_graph(a) for a in cfg.algorithms) else None
    with user_input("--algorithms"):  # every algorithm (and its matrices) is checked before any of them trains
        algorithms = {name: build_algorithm(name, cfg.lr, cfg.momentum, topology) for name in cfg.algorithms}
    part = partition(data.y_train.numpy(), cfg.nodes, cfg.split, cfg.seed, dataset=cfg.dataset,
                     num_classes=data.num_classes)
    model = build_model(cfg, data.num_classes)
    transform = BatchTransform.from_model(model)
    with user_input("--policy"):
        prefix, tail = split_for_cache(model, cfg.policy)
    sync = SyncConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, cache=cfg.cache, device=device)
    inputs = next((e.inputs for e in earlier if _same_module(e.inputs.pre.prefix, prefix)), None)
    if inputs is None:
        inputs = TailInputs(prefix, transform, data, sync, progress=progress if runtime.lead else False)
    return Seed(cfg, out, topology, algorithms, part, model, transform, tail, inputs,
                 copy.deepcopy(tail.state_dict()), run_context(cfg, topology))


def _same_module(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k].to(sb[k].device), sb[k]) for k in sa)


def simulator(seed: Seed, name: str, device: str, runtime: P2PFTRuntime) -> SyncSimulator:
    """Algorithm `name` of one seed, its tail reset to the seed's initial weights."""
    cfg, part = seed.cfg, seed.part
    seed.tail.load_state_dict(seed.init)
    sync = SyncConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, cache=cfg.cache, device=device)
    if single_model(name):
        node_steps = -(-max(part.sizes()) // cfg.batch_size)                      # ceil(largest node / batch)
        central = {"batch_size": cfg.batch_size * cfg.nodes,
                   "steps_per_epoch": node_steps if cfg.central_steps == "match" else None}
        nodes, run_cfg = [np.concatenate(part.indices)], SyncConfig(**{**asdict(sync), **central})
    else:
        nodes, run_cfg = list(part.indices), sync
    return runtime.simulator(seed.tail, seed.inputs, nodes, seed.algorithms[name], run_cfg, name=name)


def train(name: str, sims: list[SyncSimulator], seeds: list[Seed], resume: bool, progress: bool | None,
           batch: bool | None) -> tuple[list[SyncResult], list[list[int]]]:
    """Train one algorithm for every seed: stacked as one `SyncSimulator.stacked` run per group of seeds whose runs
    have the same shape (`SyncSimulator.stack_groups`), one by one when `batch` is False. Returns the results
    and, per seed, the seeds it trained with."""
    paths = [s.out / "checkpoints" / f"{name}.pt" for s in seeds]
    if resume:
        check_checkpoints(paths)
    if batch is False:
        groups, split = [[i] for i in range(len(sims))], []
    else:
        groups, split = SyncSimulator.stack_groups(sims, paths, resume)
    if batch and [f for f in split if f != "resume epoch"]:
        raise UserError(f"batch_seeds=true but the seeds' {name} runs cannot be stacked: they differ in "
                        f"{', '.join(split)} (a seeded graph, or splits of other sizes); --set batch_seeds=none "
                        "stacks what can be stacked (the default), batch_seeds=false runs the seeds one by one")
    if len(groups) > 1 and batch is not False:
        print(f"note: {name}: seeds {[[seeds[i].cfg.seed for i in g] for g in groups]} run as {len(groups)} "
              f"stacks: they differ in {', '.join(split)}", file=sys.stderr)
    results: list[SyncResult | None] = [None] * len(sims)
    with_seeds: list[list[int]] = [[] for _ in sims]
    for group in groups:
        with user_input("--lr", NonFiniteError):  # divergence: the message names the nodes and says to lower it
            if len(group) == 1:
                i = group[0]
                out = [sims[i].run(checkpoint=paths[i], resume=resume, progress=progress, context=seeds[i].context)]
            else:
                out = SyncSimulator.stacked([sims[i] for i in group]).run_parts(
                    [paths[i] for i in group], resume, progress, [seeds[i].context for i in group])
        for i, res in zip(group, out):
            results[i], with_seeds[i] = res, [seeds[j].cfg.seed for j in group]
    return results, with_seeds

