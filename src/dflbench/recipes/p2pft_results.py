"""P2P-FT's results on disk: results.json / results.csv (`write_results`), an earlier run's results read back for a
resume (`earlier_results`, refusing another configuration's) and its checkpoints checked (`check_checkpoints`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dflbench.errors import UserError
from dflbench.io import atomic_write_csv, atomic_write_json, differing_fields, read_results_file, read_tensors
from dflbench.provenance import code_provenance

from .config import experiment, recorded_config
from .records import AlgorithmRun

if TYPE_CHECKING:
    from .p2pft import P2PFTConfig

# config fields that do not change what a run computes: a results.json that differs only in them is this run's
SAME_RUN = ("algorithms", "device", "cache", "batch_seeds", "attention", "attention_method", "attention_node")


def config_differences(cfg: P2PFTConfig, previous: dict) -> list[str]:
    """The config fields, less `SAME_RUN`, in which `previous` (a results.json) differs from `cfg`, sorted."""
    return differing_fields({**asdict(cfg), "model_kwargs": dict(cfg.model_kwargs)},
                            recorded_config(type(cfg), previous.get("config", {})), SAME_RUN)


def read_results(out: str | Path) -> dict | None:
    """`out`/results.json if an earlier run wrote one, else None; a damaged or foreign file is a UserError naming
    it (`dflbench.io.read_results_file`). Algorithms recorded under a former name (`dflbench.mixing.RENAMED`:
    p2pft, gt-dgd, ...) read as today's (`Experiment.upgrade_results`), so a folder recorded before the rename
    resumes."""
    doc = read_results_file(out, "algorithm")
    return None if doc is None else experiment("p2pft", "results.json").upgrade_results(doc)


def earlier_results(cfg: P2PFTConfig, out: Path) -> dict | None:
    """The results.json a resumed run keeps the other algorithms of; one of another configuration is refused,
    naming the fields that differ."""
    previous = read_results(out)
    differ = [] if previous is None else config_differences(cfg, previous)
    if differ:
        raise UserError(f"{out / 'results.json'} holds results of another configuration (differs in "
                        f"{', '.join(differ)}); use another output folder or run without resuming")
    return previous


def check_checkpoints(paths: list[Path]) -> None:
    """Every existing checkpoint a resume would read holds tensors and plain data only (`dflbench.io.read_tensors`)
    and a SyncSimulator's keys; a damaged, foreign or unsafe file is a UserError naming it."""
    fix = "delete it to train that algorithm from the start, give another --out, or use --overwrite"
    for path in paths:
        if path.is_file():
            ckpt = read_tensors(path, "a checkpoint of an earlier run", fix)
            if not (isinstance(ckpt, dict) and {"epoch", "fingerprint", "state", "history"} <= ckpt.keys()):
                raise UserError(f"{path} (a checkpoint of an earlier run) is not a dflbench training checkpoint; {fix}")


def write_results(results: dict, out: Path) -> None:
    """results.json (everything) and results.csv (one row per algorithm: per-node and mean accuracy, cost)."""
    atomic_write_json(out / "results.json", results)
    rows = []
    for r in results["runs"]:
        row = {"algorithm": r["algorithm"]}
        row.update({f"node_{i + 1}": a for i, a in enumerate(r["node_accuracy"])})
        row.update(mean=r["mean_accuracy"], wall_time_s=r["wall_time_s"], bytes_sent=r["bytes_sent"],
                   epochs=len(r["history"]) - 1)
        rows.append(row)
    atomic_write_csv(out / "results.csv", rows)


def run_record(name: str, sim, res, nodes: int, stacked_seeds: list[int], single_model: bool) -> dict:
    """results.json's record of algorithm `name` (its `SyncSimulator` and `SyncResult`): per-node and mean accuracy
    (a single model's accuracy repeated for every node), its history, cost, the mixing matrices it used and the
    code it ran."""
    accs = res.node_accuracy * nodes if len(res.node_accuracy) == 1 else res.node_accuracy
    return AlgorithmRun(name, sim.algorithm.name, {k: m.tolist() for k, m in sim.algorithm.matrices().items()},
                        accs, float(np.mean(accs)), single_model, res.history, res.wall_time_s, stacked_seeds,
                        int(sum(res.bytes_sent)), res.bytes_sent, res.steps, sim.sampler.steps_per_epoch,
                        code_provenance()).to_dict()
