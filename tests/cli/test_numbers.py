"""Every numeric option is checked by one validator (`dflbench.errors.check_numbers`) when the config is built:
finite and in range, the option named, from the command line, a TOML file and --set alike; a run whose models
diverge stops with one line and never writes NaN into results.json (strict JSON)."""

import json
import math

import pytest

from dflbench.errors import UserError, check_numbers
from dflbench.io import atomic_write_json, non_finite


@pytest.mark.parametrize("args, says", [
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--lr", "-1"], "--lr must be a finite number > 0, got -1.0"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--devices", "1"], "--devices must be a finite number >= 2, got 1"),
    (["--alpha", "nan"], "--alpha must be a finite number > 0, got nan"),
    (["--target-acc", "1.5"], "--target-acc must be a number in (0, 1], got 1.5"),
    (["--fault-prob", "1"], "--fault-prob must be a number in [0, 1), got 1.0"),
    (["--batch-size", "0"], "--batch-size must be a finite number >= 1, got 0"),
    (["--local-steps", "0"], "--local-steps must be a finite number >= 1, got 0"),
    (["--eval-interval", "0"], "--eval-interval must be a finite number > 0, got 0.0"),
    (["--eval-samples", "0"], "--eval-samples must be a finite number >= 1, got 0"),
    (["--heterogeneity", "-0.1"], "--heterogeneity must be a finite number >= 0, got -0.1"),
    (["--time-budget", "inf"], "--time-budget must be a finite number > 0, got inf"),
    (["--seed", "-1"], "--seed must be a finite number >= 0, got -1"),
    (["--max-updates", "0", "--time-budget", "0"], "the run has no end: give --time-budget SECONDS or --max-updates T "
                                                   "(0 turns each off)"),
    (["--train-samples", "3"], "--train-samples 3 leaves devices without data: give at least one sample per device "
                               "(--devices 4)"),
])
def test_aedfl_numbers_are_checked_naming_the_option(cli, tmp_path, args, says):
    missing = tmp_path / "missing.npz"                   # checked before the data loads
    assert cli.one_error_line(cli.aedfl_args(missing, tmp_path / "o", *args)) == f"error: {says}"


@pytest.mark.parametrize("args, says", [
    (["--epochs", "0"], "--epochs must be a finite number >= 1, got 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--momentum", "1"], "--momentum must be a number in [0, 1), got 1.0"),
    (["--nodes", "1"], "--nodes 1: pushpull exchanges models over a graph of nodes; give --nodes 2 or more (or only "
                       "--algorithms local,central)"),
    (["--batch-size", "0"], "--batch-size must be a finite number >= 1, got 0"),
    (["--peer-timeout", "0"], "--peer-timeout must be a finite number > 0, got 0.0"),
    (["--attention", "-1"], "--attention must be a finite number >= 0, got -1"),
])
def test_p2pft_numbers_are_checked_naming_the_option(cli, tmp_path, args, says):
    assert cli.one_error_line([*cli.TINY, "--algorithms", "local,pushpull", *args, "--out", str(tmp_path / "o")]) == \
        f"error: {says}"


def test_toml_and_set_values_meet_the_same_check(cli, tmp_path):
    data = cli.write_npz(tmp_path / "d.npz")
    path = tmp_path / "c.toml"
    path.write_text(f'experiment = "aedfl"\n[config]\ndataset = "npz:{data}"\ndevices = 4\nlr = nan\n')
    assert cli.one_error_line(["aedfl", "--config", str(path), "--out", str(tmp_path / "o")]) == \
        "error: --lr must be a finite number > 0, got nan"
    path.write_text(f'experiment = "aedfl"\n[config]\ndataset = "npz:{data}"\ndevices = 4\n')
    assert cli.one_error_line(["run", str(path), "--set", "lr=-1", "--out", str(tmp_path / "r")]) == \
        "error: --lr must be a finite number > 0, got -1.0"
    assert cli.one_error_line(["run", str(path), "--set", "max_updates=0", "--out", str(tmp_path / "r")]) == \
        "error: --max-updates must be a finite number >= 1, got 0"


def test_the_validator_reads_its_intervals():
    check_numbers({"a": 0.0, "b": None, "c": 1}, {"a": ("a", "[0, 1)"), "b": ("b", "(0, inf)"), "c": ("c", "(0, 1]")})
    for value, interval in ((1.0, "[0, 1)"), (0, "(0, 1]"), (math.nan, "[0, inf)"), (-math.inf, "(-inf, 0]"),
                            (True, "[0, 2]"), ("1", "[0, 2]")):
        with pytest.raises(UserError, match="^x must be"):
            check_numbers({"x": value}, {"x": ("x", interval)})


def test_results_json_is_strict(cli, tmp_path):
    with pytest.raises(ValueError, match=r"NaN at runs\[0\].loss is not JSON compliant"):
        atomic_write_json(tmp_path / "r.json", {"runs": [{"loss": math.nan}]})
    assert list(tmp_path.iterdir()) == []                # no file, no temporary left behind
    atomic_write_json(tmp_path / "r.json", {"threshold": math.inf, "low": (-math.inf, 1.5)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"threshold": "inf", "low": ["-inf", 1.5]}
    assert non_finite({"runs": [{"history": [{"loss": 1.0}, {"loss": math.inf}]}]}) == "runs[0].history[1].loss"
    assert non_finite({"a": [1.0, 2, "x", None]}) is None


def test_a_diverging_method_stops_with_one_line_and_keeps_the_finished_ones(cli, tmp_path, monkeypatch):
    from dflbench.recipes import aedfl as recipe

    real = recipe.AsyncSimulator.run

    def diverges_in_fedbuff(sim, *args, **kwargs):       # fedbuff's models become NaN, as a too large --lr does
        res = real(sim, *args, **kwargs)
        if sim.method.name == "fedbuff":
            res.history[-1]["test_loss"] = math.nan
        return res

    monkeypatch.setattr(recipe.AsyncSimulator, "run", diverges_in_fedbuff)
    data, out = cli.write_npz(tmp_path / "d.npz"), tmp_path / "o"
    result = cli.invoke(cli.app, cli.aedfl_args(data, out, "--methods", "fedavg,fedbuff,ad-psgd"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    said, line = [x for x in result.output.strip().splitlines() if not x.endswith(": started")]  # fedavg's, the error
    assert said.startswith("fedavg: accuracy")
    assert line.startswith("error: --lr: fedbuff diverged (history[") and "test_loss is not finite); lower the " \
        f"learning rate; {out / 'results.json'} holds the finished methods fedavg" in line
    results = json.loads((out / "results.json").read_text())           # strict JSON, the finished method kept
    assert [r["method"] for r in results["runs"]] == ["fedavg"]


def test_a_huge_learning_rate_ends_in_one_line_and_writes_no_nan(cli, tmp_path):
    data, out = cli.write_npz(tmp_path / "d.npz"), tmp_path / "o"
    line = cli.one_error_line(cli.aedfl_args(data, out, "--methods", "fedavg", "--lr", "1e30"))
    assert line.startswith("error: --lr: fedavg diverged") and "no method had finished, nothing was saved" in line
    assert not (out / "results.json").exists()
