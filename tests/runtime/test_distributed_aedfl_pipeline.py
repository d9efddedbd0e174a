"""The AEDFL experiment with --runtime distributed: 4 ranks (one device each) produce the simulator's run
record (same keys, Table 1 fields) that `write_results` stores, with per-device metrics gathered on rank 0; full
AEDFL (RL selection, dynamic weights, pruning) runs across processes; options the distributed runtime cannot
honour are refused with a message."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dflbench.models import make_model
from dflbench.recipes.aedfl import AEDFLRunConfig, run_aedfl, write_results
from dflbench.recipes.aedfl_distributed import distributed_method, run_aedfl_distributed, runtime_config


def _config(dataset: str, **kw) -> AEDFLRunConfig:
    base = dict(model="lenet5", dataset=dataset, devices=4, methods=("aedfl-dwu",), alpha=1.0, target_acc=0.3,
                max_updates=20, time_budget=None, local_steps=1, batch_size=8, lr=0.05, eval_samples=None)
    return AEDFLRunConfig(**{**base, **kw})


def _worker(rank: int, cfg: AEDFLRunConfig, out: str) -> None:
    results = run_aedfl_distributed(cfg, heartbeat_timeout_s=10.0, eval_every=5)
    assert (results is None) == (rank != 0)
    if rank == 0:
        write_results(results, out)


def test_distributed_record_has_the_simulator_fields(launch, band_npz, tmp_path):
    cfg = _config(band_npz(side=16, train=40, test=10, noise=60, bright=180))
    launch(_worker, 4, cfg, str(tmp_path / "dist"))
    dist = json.loads((tmp_path / "dist" / "results.json").read_text())
    assert (tmp_path / "dist" / "accuracy_vs_time.png").is_file()
    sim = run_aedfl(_config(cfg.dataset, max_updates=2))
    run, ref = dist["runs"][0], sim["runs"][0]
    # `diagnostics` (every device's selection, lambda and rate at each evaluation) is a simulator record
    assert set(ref) - {"diagnostics"} <= set(run) and set(sim) == set(dist)
    assert run["failed_nodes"] == [] and [n["node"] for n in run["per_node"]] == [0, 1, 2, 3]
    assert run["device_steps"] == 4 * 20 and run["messages"] == 4 * 20
    assert len(run["history"]) == 20 // 5 + 1 and run["history"][-1]["accuracy"] == run["accuracy"]
    assert run["accuracy"] == pytest.approx(np.mean([n["accuracy"] for n in run["per_node"]]))
    assert run["mflops"] == pytest.approx(ref["mflops"])


def test_full_aedfl_runs_across_ranks(launch, band_npz, tmp_path):
    """--methods aedfl: RL selection, dynamic weights and pruning (every 2 updates) on 4 gloo-free RPC ranks."""
    cfg = _config(band_npz(side=16, train=40, test=10, noise=60, bright=180), methods=("aedfl",),
                  method_options={"aedfl": {"every": 2}}, max_updates=6)
    launch(_worker, 4, cfg, str(tmp_path / "dist"))
    dist = json.loads((tmp_path / "dist" / "results.json").read_text())
    run = dist["runs"][0]
    assert run["method"] == "aedfl" and run["failed_nodes"] == [] and run["stop_reason"] == "max updates"
    assert [n["updates"] for n in run["per_node"]] == [6] * 4 and run["messages"] == 4 * 6
    assert all(n["rejected"] == 0 and n["failed_sends"] == 0 for n in run["per_node"])
    assert sum(n["received"] for n in run["per_node"]) > 0          # counted until each device reports
    dense = run_aedfl(_config(cfg.dataset, methods=("aedfl-0",), max_updates=1))["runs"][0]["mflops"]
    assert all(n["mflops"] < dense for n in run["per_node"]), "every device pruned its model"
    assert run["mflops"] == pytest.approx(np.mean([n["mflops"] for n in run["per_node"]]))
    P = sum(p.numel() for p in make_model("lenet5", 4, 1, 16).parameters())
    assert all(n["bytes_sent"] == 6 * 5 * P for n in run["per_node"]), "each push: float model [P] + bool mask [P]"
    assert 0 <= run["accuracy"] <= 1 and run["history"][-1]["accuracy"] == run["accuracy"]


def test_refuses_what_it_cannot_run(tmp_path):
    variants = "aedfl, aedfl-0, aedfl-rl, aedfl-dwu, aedfl-p, aedfl-rl-dwu"
    with pytest.raises(ValueError, match=f"exactly one of {variants} per launch"):
        runtime_config(_config("digits", methods=("aedfl", "fedavg")))
    for baseline in ("fedavg", "hrank", "ad-psgd"):
        with pytest.raises(ValueError, match="baselines run on the simulator"):
            runtime_config(_config("digits", methods=(baseline,)))
    with pytest.raises(ValueError, match="devices fail for real"):
        runtime_config(_config("digits", fault_prob=0.1))
    assert distributed_method(_config("digits", methods=("aedfl-0",))).cfg.dwu is False
    full = distributed_method(_config("digits", methods=("aedfl",), method_options={"aedfl": {"every": 3}}))
    assert full.name == "aedfl" and full.cfg.rl and full.cfg.dwu and full.cfg.prune and full.cfg.pruning.every == 3
