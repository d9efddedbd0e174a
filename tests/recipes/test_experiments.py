"""The experiment registry (`recipes.config.EXPERIMENTS`): every experiment's metadata names what exists, and the
`pretrain` experiment runs from a TOML file like the others (`dflbench run`), its report included."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import torch
from typer.testing import CliRunner

from dflbench.cli.main import app
from dflbench.recipes import report
from dflbench.recipes.config import EXPERIMENTS

runner = CliRunner()


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_names_what_exists(name):
    kind = EXPERIMENTS[name]
    cls = kind.config_class()
    assert dataclasses.is_dataclass(cls) and "seed" in {f.name for f in dataclasses.fields(cls)}
    fields = {f.name for f in dataclasses.fields(cls)}
    assert kind.parts is None or kind.parts in fields
    assert callable(getattr(report, kind.report))
    module = importlib.import_module(kind.module)
    assert callable(module.run_seed) and (not kind.stacked or callable(module.run_seeds_stacked))
    assert kind.part_names(cls()) and all(isinstance(n, str) for n in kind.part_names(cls()))


def test_a_part_recorded_under_a_former_name_reads_as_today():
    p2pft, aedfl = EXPERIMENTS["p2pft"], EXPERIMENTS["aedfl"]
    doc = {"config": {"algorithms": ["local", "p2pft", "gt-dgd"], "lr": 0.1},
           "runs": [{"algorithm": "p2pft", "x": 1}, {"algorithm": "central"}]}
    up = p2pft.upgrade_results(doc)
    assert up["config"] == {"algorithms": ["local", "pushpull", "gtdgd"], "lr": 0.1}
    assert [r["algorithm"] for r in up["runs"]] == ["pushpull", "central"] and up["runs"][0]["x"] == 1
    assert doc["runs"][0]["algorithm"] == "p2pft"                                  # the record itself is left
    assert aedfl.part_name("p2pft") == "p2pft"                                      # AEDFL renamed nothing


def test_pretrain_runs_from_a_toml_file_with_its_report(tmp_path):
    torch.set_num_threads(1)
    path = tmp_path / "pre.toml"
    path.write_text('experiment = "pretrain"\n[config]\nmodel = "vit_tiny_patch16_224"\ndataset = "digits"\n'
                    'epochs = 2\nbatch_size = 64\ndevice = "cpu"\nimage_size = 8\n'
                    '[config.model_kwargs]\nimg_size = 8\npatch_size = 4\nembed_dim = 16\ndepth = 1\nnum_heads = 2\n'
                    '[paper]\nsource = "none: a check"\n[paper.results.pretrain]\ntest_accuracy = 1.0\n')
    out = tmp_path / "o"
    args = ["run", str(path), "--seeds", "2", "--out", str(out), "--threads", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    seeds = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [s["config"]["seed"] for s in seeds] == [0, 1]
    assert all(set(s["code"]) == {"version", "commit", "dirty"} for s in seeds)       # which code made them
    for s, seed in enumerate(seeds):
        run = seed["runs"][0]
        assert run["run"] == "pretrain" and len(run["history"]) == 2
        assert run["accuracy"] == run["history"][-1]["test_accuracy"]
        assert (out / f"seed-{s}" / "backbone.pt").is_file() and (out / f"seed-{s}" / "done.json").is_file()
    text = (out / "report.md").read_text()
    accs = [100 * s["runs"][0]["accuracy"] for s in seeds]
    mean, std = sum(accs) / 2, abs(accs[0] - accs[1]) / 2 ** 0.5                    # the sample std of two values
    assert f"| pretrain | {mean:.2f} ± {std:.2f} |" in text and text.rstrip().endswith("```")
    assert (out / "accuracy_vs_epoch.png").stat().st_size > 1000
    before = [(out / f"seed-{s}" / "results.json").read_text() for s in (0, 1)]
    assert runner.invoke(app, args).exit_code == 0                                # finished seeds are skipped
    assert [(out / f"seed-{s}" / "results.json").read_text() for s in (0, 1)] == before
