import json

from typer.testing import CliRunner

from dflbench.cli.main import app


def test_cli_writes_table1_results(aedfl_npz, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["aedfl", "--model", "lenet5", "--dataset", f"npz:{aedfl_npz}", "--devices", "6",
                                   "--methods", "aedfl,fedavg,ad-psgd", "--alpha", "0.5", "--target-acc", "0.3",
                                   "--max-updates", "3", "--batch-size", "8", "--eval-interval", "0.05",
                                   "--eval-samples", "32", "--prune-every", "2", "--seed", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert all(h in res.output for h in ("devices", "consens.", "plateau", "MFP", "ad-psgd"))
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["devices"] == 6 and results["config"]["alpha"] == 0.5
    assert [r["method"] for r in results["runs"]] == ["aedfl", "fedavg", "ad-psgd"]
    for r in results["runs"]:
        assert {"accuracy", "time_to_target", "mflops", "bytes_sent", "history"} <= set(r)
        assert 0 <= r["accuracy"] <= 1 and r["bytes_sent"] > 0 and r["history"]
        hit = [h["time"] for h in r["history"] if h["accuracy"] >= 0.3]
        assert r["time_to_target"] == (hit[0] if hit else None)
        assert r["history"][-1]["accuracy"] == r["accuracy"]
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].startswith("method,accuracy,consensus_accuracy,time_to_target,consensus_time_to_target,mflops")
    assert len(lines) == 4
    assert (out / "accuracy_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_user_errors_are_one_line(aedfl_npz, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["aedfl", "--dataset", f"npz:{aedfl_npz}", "--methods", "aedfl,fedfoo",
                              "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown methods ['fedfoo']" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["aedfl", "--dataset", f"npz:{tmp_path / 'none.npz'}", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["aedfl", "--dataset", f"npz:{aedfl_npz}", "--model", "alexnet", "--devices", "4",
                              "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown model 'alexnet'" in res.output


def test_cli_rejects_bad_budgets(aedfl_npz, tmp_path):
    res = CliRunner().invoke(app, ["aedfl", "--dataset", f"npz:{aedfl_npz}", "--devices", "4", "--max-updates", "0",
                                   "--time-budget", "-1", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--time-budget must be a finite number > 0, got -1.0" in res.output


BASE = ["aedfl", "--model", "lenet5", "--devices", "4", "--alpha", "0.5", "--max-updates", "2", "--batch-size", "8",
        "--eval-interval", "0.05", "--eval-samples", "32", "--seed", "1"]


def test_a_method_that_fails_leaves_the_ones_before_it_on_disk(aedfl_npz, tmp_path, monkeypatch):
    from dflbench.recipes import aedfl as recipe

    real = recipe.make_method

    def failing(name, options=None):
        if name == "fedavg":
            raise RuntimeError("simulated crash inside fedavg")
        return real(name, options)

    monkeypatch.setattr(recipe, "make_method", failing)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [*BASE, "--dataset", f"npz:{aedfl_npz}", "--methods", "aedfl-0,ad-psgd,fedavg",
                                   "--out", str(out)])
    assert res.exit_code == 1 and "simulated crash inside fedavg" in res.output and "bug" in res.output
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["aedfl-0", "ad-psgd"]
    assert len((out / "results.csv").read_text().splitlines()) == 3


def test_a_failing_figure_leaves_the_results(aedfl_npz, tmp_path, monkeypatch):
    from dflbench.recipes import aedfl as recipe

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(recipe, "panels_plot", broken)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [*BASE, "--dataset", f"npz:{aedfl_npz}", "--methods", "aedfl-0", "--out", str(out)])
    assert res.exit_code == 3, res.output                         # not a success: a picture is missing
    warnings = [line for line in res.output.splitlines() if "figure failed" in line]
    assert warnings == [f"warning: the {what} figure failed (RuntimeError: no display); {out / 'results.json'} is "
                        "complete" for what in ("accuracy", "diagnostics")], res.output      # one line per picture
    assert "Traceback" not in res.output
    assert json.loads((out / "results.json").read_text())["runs"][0]["method"] == "aedfl-0"
    assert not (out / "accuracy_vs_time.png").exists()
