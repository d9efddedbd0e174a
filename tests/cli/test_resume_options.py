"""A resume keeps a finished run only when it ran with the method options the resuming run gives that method: a
default that changed since (AEDFL's pruning cap, 0.45 -> 0.40) must not mix two settings in one table."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dflbench.cli.main import app
from dflbench.errors import UserError
from dflbench.recipes import reproduce
from dflbench.recipes.aedfl import AEDFLRunConfig, finished_runs, option_differences

RECORDED = Path(__file__).parents[2] / "docs" / "results" / "aedfl-table1-fmnist-lenet5"


def _run(method, **options):
    cfg = AEDFLRunConfig(methods=(method,))
    return {"method": method, "options": {**json.loads(json.dumps(vars(cfg.options(method)))), **options}}


def test_option_differences_names_what_changed():
    cfg = AEDFLRunConfig(methods=("aedfl",))
    assert option_differences(cfg, _run("aedfl")) == []
    assert option_differences(cfg, _run("aedfl", max_rate=0.45)) == ["max_rate (recorded 0.45, now 0.4)"]
    given = AEDFLRunConfig(methods=("aedfl",), method_options={"aedfl": {"max_rate": 0.45}})
    assert option_differences(given, _run("aedfl", max_rate=0.45)) == []
    older = _run("aedfl")
    del older["options"]["policy_reward"]                 # an option added since: it held its default
    assert option_differences(cfg, older) == []
    older["options"]["policy_reward"] = "loss"
    assert option_differences(cfg, older) == ["policy_reward (recorded 'loss', now 'change')"]
    assert option_differences(cfg, {"method": "aedfl"}) == []     # recorded before runs carried their options


def test_finished_runs_refuses_a_run_of_other_options_among_the_methods_asked():
    cfg = AEDFLRunConfig(methods=("aedfl", "fedavg"))
    previous = {"config": json.loads(json.dumps(vars(cfg), default=list)),
                "runs": [_run("aedfl", max_rate=0.45), _run("fedavg"), _run("fedbuff", buffer=99)]}
    with pytest.raises(UserError, match=r"^X hold finished runs with other method options than this run gives them "
                                        r"\(aedfl: max_rate \(recorded 0.45, now 0.4\)\)"):
        finished_runs(cfg, previous, "X")
    kept = finished_runs(AEDFLRunConfig(methods=("fedavg",)), previous)      # fedbuff is not asked: kept as it is
    assert list(kept) == ["aedfl", "fedavg", "fedbuff"]


def test_cli_resume_refuses_a_run_whose_options_changed(tmp_path, cli):
    data, out = cli.write_npz(tmp_path / "d.npz"), tmp_path / "o"
    assert CliRunner().invoke(app, cli.aedfl_args(data, out, "--methods", "fedbuff")).exit_code == 0
    doc = json.loads((out / "results.json").read_text())
    buffer = doc["runs"][0]["options"]["buffer"]
    doc["runs"][0]["options"]["buffer"] = buffer + 1                 # as if the default had changed since
    (out / "results.json").write_text(json.dumps(doc))
    before = (out / "results.json").read_bytes()
    line = cli.one_error_line(cli.aedfl_args(data, out, "--methods", "fedbuff", "--resume"))
    assert f"fedbuff: buffer (recorded {buffer + 1}, now {buffer})" in line and "another output folder" in line
    assert (out / "results.json").read_bytes() == before
    del doc["runs"][0]["options"]["buffer"]                          # an option added since: kept
    (out / "results.json").write_text(json.dumps(doc))
    result = CliRunner().invoke(app, cli.aedfl_args(data, out, "--methods", "fedbuff", "--resume"))
    assert result.exit_code == 0 and "kept fedbuff" in result.output, result.output


def test_a_done_seed_of_other_options_is_refused_not_reported(tmp_path, monkeypatch):
    """The recorded Table 1 seed ran every method with today's options (so `reproduce` skips it); the same seed with
    AEDFL's run at the former cap is refused, naming it, instead of being reported as today's setting."""
    recipe = reproduce.load_recipe("aedfl-emnist-lenet5")
    cfg = recipe.resolve("paper-cpu", {"methods": "aedfl,fedavg,aedfl-0"}, stand_in=True)
    shutil.copytree(RECORDED / "seed-0", tmp_path / "seed-0", ignore=shutil.ignore_patterns("*.png"))
    monkeypatch.setattr("dflbench.recipes.aedfl.run_seed", lambda *a, **k: pytest.fail("a finished seed ran again"))
    assert reproduce.run_seeds(recipe, cfg, tmp_path) == [tmp_path / "seed-0"]
    results = tmp_path / "seed-0" / "results.json"
    doc = json.loads(results.read_text())
    next(r for r in doc["runs"] if r["method"] == "aedfl")["options"]["max_rate"] = 0.45
    results.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"seed-0/results.json hold finished runs with other method options .*"
                                        r"\(aedfl: max_rate \(recorded 0.45, now 0.4\)\)"):
        reproduce.run_seeds(recipe, cfg, tmp_path)
    fedavg_only = recipe.resolve("paper-cpu", {"methods": "fedavg"}, stand_in=True)
    assert reproduce.run_seeds(recipe, fedavg_only, tmp_path) == [tmp_path / "seed-0"]   # aedfl not asked
