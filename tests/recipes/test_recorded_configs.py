"""Fields added to a run config since a run was recorded (`runtime`) read as their defaults, so a recorded results
folder still resumes; and `runtime` is a config field a TOML file can set."""

import json
import shutil
from pathlib import Path

import pytest

from dflbench.errors import UserError
from dflbench.recipes import reproduce
from dflbench.recipes.aedfl import AEDFLRunConfig, config_differences
from dflbench.recipes.config import build_config, recorded_config
from dflbench.recipes.p2pft import P2PFTConfig

RECORDED = Path(__file__).parents[2] / "docs" / "results" / "aedfl-table1-fmnist-lenet5"


def _recorded_cfg():
    recipe = reproduce.load_recipe("aedfl-emnist-lenet5")
    return recipe, recipe.resolve("paper-cpu", {"methods": "fedavg,fedprox,fednova"}, stand_in=True)


def test_a_recorded_seed_is_still_done(tmp_path, monkeypatch):
    """`reproduce ... --out docs/results/aedfl-table1-fmnist-lenet5`: its seed-0/done.json (recorded before
    `runtime` existed) matches today's config, so the seed is skipped, not run again."""
    assert "runtime" not in json.loads((RECORDED / "seed-0" / "done.json").read_text())["config"]
    shutil.copytree(RECORDED / "seed-0", tmp_path / "seed-0")
    monkeypatch.setattr("dflbench.recipes.aedfl.run_seed", lambda *a, **k: pytest.fail("a finished seed ran again"))
    recipe, cfg = _recorded_cfg()
    assert reproduce.run_seeds(recipe, cfg, tmp_path) == [tmp_path / "seed-0"]
    previous = json.loads((RECORDED / "seed-0" / "results.json").read_text())
    assert config_differences(cfg, previous) == []


def test_recorded_config_fills_only_the_missing_fields():
    old = {"model": "lenet6", "lr": 0.5}
    filled = recorded_config(AEDFLRunConfig, old)
    assert filled["model"] == "lenet6" and filled["lr"] == 0.5 and filled["runtime"] == "simulator"
    assert filled["corrupt"] == [] and filled["methods"] == ["aedfl", "fedavg", "ad-psgd"]     # JSON forms
    assert recorded_config(P2PFTConfig, {})["model_kwargs"] == []
    assert config_differences(AEDFLRunConfig(), {"config": {}}) == []


def test_runtime_is_a_config_field():
    cfg = build_config("p2pft", {"runtime": "distributed", "algorithms": ["local", "pushpull"]})
    assert cfg.runtime == "distributed"
    with pytest.raises(UserError, match="^--runtime: unknown runtime 'mpi'"):
        build_config("aedfl", {"runtime": "mpi"})


def test_a_reproduction_refuses_the_distributed_runtime(tmp_path):
    recipe, cfg = _recorded_cfg()
    from dataclasses import replace

    with pytest.raises(UserError, match="runtime = 'distributed'.*dflbench aedfl --config FILE"):
        reproduce.run_seeds(recipe, replace(cfg, runtime="distributed", methods=("aedfl",)), tmp_path)


def test_aedfl_takes_a_topology():
    cfg = AEDFLRunConfig(devices=6, topology="ring")
    assert cfg.graph().name == "ring" and cfg.graph().n == 6
    assert AEDFLRunConfig().graph().name == "exponential"


def test_experiments_are_registered_once():
    from dflbench.recipes.config import EXPERIMENTS, register_experiment
    from dflbench.recipes.pretrain import PretrainRunConfig

    assert {name: e.config_class() for name, e in EXPERIMENTS.items()} == {"aedfl": AEDFLRunConfig,
                                                                           "p2pft": P2PFTConfig,
                                                                           "pretrain": PretrainRunConfig}
    assert EXPERIMENTS["aedfl"].part_names(AEDFLRunConfig()) == AEDFLRunConfig().methods
    with pytest.raises(ValueError, match="experiment 'p2pft' is already registered"):
        register_experiment(EXPERIMENTS["p2pft"])
