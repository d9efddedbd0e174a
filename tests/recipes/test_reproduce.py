"""Reproduction recipes: every shipped recipe parses and resolves at each scale; two recipes' smoke scale run end to
end (on synthetic data of the real shapes: the datasets are not in CI) and write report.md, its PNGs and
results.json with mean +- std over seeds; finished seeds are skipped; `--set` reaches the run; unknown keys fail
naming the key; `--config` on `dflbench p2pft` is overridden by the options given; a missing dataset names the
stand-in."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from dflbench.cli.main import app
from dflbench.errors import UserError
from dflbench.recipes.aedfl import AEDFLRunConfig
from dflbench.recipes.config import build_config, parse_sets, with_config_file
from dflbench.recipes.p2pft import P2PFTConfig
from dflbench.recipes.report import band_on_grid, mean_std, seed_diagnostics_panels
from dflbench.recipes.reproduce import list_recipes, load_recipe

runner = CliRunner()


def _npz(path, shape, classes, n_train, n_test):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
             y_train=np.arange(n_train) % classes, x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
             y_test=np.arange(n_test) % classes)
    return path


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def _error(args):
    """The one `error:` line of a command that exits 2 (a recipe's scale note may come before it)."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_the_papers_tables_are_all_there():
    names = list_recipes()
    assert len([n for n in names if n.startswith("p2pft-")]) == 12           # 3 models x 4 datasets (Table I)
    assert len([n for n in names if n.startswith("aedfl-")]) == 5            # Table 1's five columns


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_parses_and_every_scale_resolves(name):
    recipe = load_recipe(name)
    assert {"paper", "cpu", "smoke"} <= set(recipe.scales) <= {"paper", "paper-cpu", "cpu", "smoke"}
    assert all(recipe.scales[s][0] for s in recipe.scales)                   # each scale says what it is
    paper, cpu, smoke = (recipe.resolve(s) for s in ("paper", "cpu", "smoke"))
    assert recipe.paper and recipe.paper_source
    if recipe.experiment == "aedfl":
        assert isinstance(paper, AEDFLRunConfig) and paper.devices == 100 and len(paper.methods) in (15, 21)
        assert set(recipe.paper) <= set(paper.methods) and len(recipe.paper) == 15
        # one virtual-time budget for every method (docs/EVALUATION.md), never the per-device update cap
        assert all(c.time_budget and c.max_updates is None for c in (paper, cpu, smoke))
        if "paper-cpu" in recipe.scales:
            pc = recipe.resolve("paper-cpu")
            assert (pc.devices, pc.train_samples, pc.time_budget, pc.methods) == \
                (paper.devices, paper.train_samples, paper.time_budget, paper.methods)
        assert paper.target_acc in (0.9, 0.6, 0.17, 0.65)
        assert smoke.devices < paper.devices and smoke.train_samples < cpu.train_samples
    else:
        assert isinstance(paper, P2PFTConfig) and paper.nodes == 4 and paper.lr == 1e-3 and paper.epochs == 100
        assert paper.pretrained and not cpu.pretrained and paper.split.startswith("classes:")
        assert set(recipe.paper) == {"local", "pushpull"} and all(len(r["nodes"]) == 4 for r in recipe.paper.values())
        assert smoke.epochs < cpu.epochs < paper.epochs


def test_paper_numbers_are_the_tables():
    assert load_recipe("aedfl-cifar10-resnet8").paper["aedfl"] == {"acc": 0.7453, "time": 314, "mfp": 1.29}
    assert "time" not in load_recipe("aedfl-tinyimagenet-vgg9").paper["ad-psgd"]            # "/" in Table 1
    assert load_recipe("p2pft-deit-flowers").paper["pushpull"]["nodes"] == [92.81, 92.98, 92.87, 92.84]


def test_stand_in_only_when_asked():
    recipe = load_recipe("aedfl-emnist-lenet5")
    assert recipe.resolve("cpu").dataset == "emnist-letters"
    assert recipe.resolve("cpu", stand_in=True).dataset == "fashion-mnist"
    assert any("Fashion-MNIST" in n for n in recipe.notes("cpu", stand_in=True))
    with pytest.raises(UserError, match="no stand-in"):
        load_recipe("aedfl-cifar10-resnet8").resolve(stand_in=True)


def test_missing_dataset_is_one_line_naming_download_and_stand_in(tmp_path):
    line = _error(["reproduce", "aedfl-emnist-lenet5", "--scale", "smoke", "--data-dir", str(tmp_path / "none"),
                   "--out", str(tmp_path / "o")])
    assert "emnist-letters" in line and "--download" in line and "--stand-in to run on fashion-mnist" in line


def test_sets_are_typed_nested_and_merged():
    sets = parse_sets(["lr=0.01", "methods=aedfl,fedbuff", "method_options.fedbuff.buffer=3", "train_samples=none"])
    cfg = build_config("aedfl", {"methods": ["aedfl"], "train_samples": 10}, sets)
    assert cfg.lr == 0.01 and cfg.methods == ("aedfl", "fedbuff") and cfg.train_samples is None
    assert cfg.options("fedbuff").buffer == 3 and cfg.method_options == {"fedbuff": {"buffer": 3}}  # typed record
    p2p = build_config("p2pft", {"model_kwargs": {"img_size": 32, "depths": [1, 1]}}, parse_sets(["epochs=2"]))
    assert p2p.model_kwargs == (("img_size", 32), ("depths", [1, 1])) and p2p.epochs == 2
    for bad, match in ((["lrr=1"], "unknown key 'lrr'"), (["lr=fast"], "lr"), (["epochs"], "KEY=VALUE")):
        with pytest.raises(UserError, match=match):
            build_config("p2pft", parse_sets(bad))


def test_unknown_keys_in_a_file_are_named(tmp_path):
    for text, key in (('experiment = "aedfl"\n[config]\nlrr = 0.1\n', "'lrr'"),
                      ('experiment = "aedfl"\nseeds = 3\n', "'seeds'"),
                      ('experiment = "p2pft"\n[scales.cpu]\nnotes = "x"\n', "'notes'"),
                      ('experiment = "p2pft"\n[scales.huge]\n', "'huge'"),
                      ('experiment = "nope"\n', "'nope'"),
                      ('experiment = "aedfl"\nlr = 0.1\n', "'lr' must go under [config]")):
        path = tmp_path / "bad.toml"
        path.write_text(text)
        assert key in _error(["run", str(path), "--out", str(tmp_path / "o")])


def test_config_file_then_command_line_options(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('experiment = "p2pft"\n[config]\nepochs = 7\nlr = 0.5\nmodel_kwargs = { img_size = 8 }\n')
    cfg = with_config_file(P2PFTConfig, path, {"lr": 1e-3})
    assert cfg.epochs == 7 and cfg.lr == 1e-3 and cfg.model_kwargs == (("img_size", 8),)   # defaults < file < given
    assert cfg.nodes == P2PFTConfig().nodes and cfg.cache
    with pytest.raises(UserError, match="dflbench p2pft"):
        with_config_file(AEDFLRunConfig, path, {})


def test_p2pft_command_takes_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('experiment = "p2pft"\n[config]\nmodel = "vit_tiny_patch16_224"\ndataset = "digits"\n'
                    'model_kwargs = { img_size = 8, patch_size = 4, embed_dim = 16, depth = 2, num_heads = 2 }\n'
                    'algorithms = ["local"]\nepochs = 1\nlr = 0.5\ndevice = "cpu"\n')
    _ok(["p2pft", "--config", str(path), "--lr", "0.01", "--out", str(tmp_path / "o"), "--threads", "1"])
    cfg = json.loads((tmp_path / "o" / "results.json").read_text())["config"]
    assert cfg["lr"] == 0.01 and cfg["epochs"] == 1 and cfg["model_kwargs"]["embed_dim"] == 16


def test_aedfl_command_takes_config(tmp_path):
    data = _npz(tmp_path / "g.npz", (28, 28), 10, 200, 50)
    path = tmp_path / "c.toml"
    path.write_text(f'experiment = "aedfl"\n[config]\ndataset = "npz:{data}"\ndevices = 4\nmax_updates = 1\n'
                    'methods = ["fedbuff"]\neval_samples = 20\n[config.method_options.fedbuff]\nbuffer = 3\n')
    _ok(["aedfl", "--config", str(path), "--method-opt", "fedbuff.server_lr=0.5", "--out", str(tmp_path / "o")])
    run = json.loads((tmp_path / "o" / "results.json").read_text())["runs"][0]
    assert run["method"] == "fedbuff" and run["options"]["buffer"] == 3 and run["options"]["server_lr"] == 0.5
    _ok(["run", str(path), "--set", "devices=5", "--out", str(tmp_path / "r")])         # the same file, as a run
    assert json.loads((tmp_path / "r" / "seed-0" / "results.json").read_text())["config"]["devices"] == 5
    assert "| fedbuff |" in (tmp_path / "r" / "report.md").read_text()


def test_aedfl_resume_keeps_finished_methods_and_refuses_another_setting(tmp_path, monkeypatch):
    data = _npz(tmp_path / "g.npz", (28, 28), 10, 200, 50)
    base = ["aedfl", "--dataset", f"npz:{data}", "--devices", "4", "--max-updates", "1", "--eval-samples", "20",
            "--out", str(tmp_path / "o")]
    monkeypatch.setattr("dflbench.recipes.aedfl.code_provenance", lambda: {"version": "1", "commit": "a" * 40,
                                                                           "dirty": False})
    _ok([*base, "--methods", "fedbuff"])
    first = json.loads((tmp_path / "o" / "results.json").read_text())["runs"][0]
    assert first["code"]["commit"] == "a" * 40
    monkeypatch.setattr("dflbench.recipes.aedfl.code_provenance", lambda: {"version": "1", "commit": "b" * 40,
                                                                           "dirty": False})
    _ok([*base, "--methods", "fedavg,fedbuff", "--resume"])         # an interrupted two-method run, continued
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    runs = results["runs"]
    assert [r["method"] for r in runs] == ["fedavg", "fedbuff"]
    assert runs[1] == first                                       # kept as written, not run again
    assert runs[0]["code"]["commit"] == results["code"]["commit"] == "b" * 40   # each run names the code it ran
    said = _ok([*base, "--methods", "fedavg", "--resume"])        # a subset runs nothing and keeps every method
    assert f"resuming from {tmp_path / 'o' / 'results.json'}: kept fedavg, fedbuff (finished earlier" in said
    assert "running nothing" in said
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["fedavg", "fedbuff"] and results["runs"][1] == first
    assert results["config"]["methods"] == ["fedavg", "fedbuff"]
    line = _error([*base, "--methods", "fedavg", "--lr", "0.01", "--resume"])
    assert "another configuration" in line and "lr" in line


def test_aedfl_smoke_recipe_writes_the_report(tmp_path):
    data = _npz(tmp_path / "letters.npz", (28, 28), 26, 1000, 100)
    out = tmp_path / "o"
    args = ["reproduce", "aedfl-emnist-lenet5", "--scale", "smoke", "--seeds", "2", "--out", str(out), "--set",
            f"dataset=npz:{data}", "--set", "methods=aedfl,fedavg", "--set", "lr=0.02", "--threads", "1"]
    output = _ok(args)
    for seed, method in ((0, "aedfl"), (0, "fedavg"), (1, "aedfl"), (1, "fedavg")):  # progress lines for a log
        assert f"seed {seed} {method}: started" in output
        assert re.search(rf"seed {seed} {method}: accuracy [\d.]+ after [\d.]+ virtual s \([\d.]+ s wall\)", output)
    seed = json.loads((out / "seed-1" / "results.json").read_text())
    assert seed["config"]["lr"] == 0.02 and seed["config"]["seed"] == 1 and seed["config"]["devices"] == 8
    report = (out / "report.md").read_text()
    for png in ("accuracy_vs_time", "consensus_vs_time", "costs"):
        assert (out / f"{png}.png").stat().st_size > 1000 and f"({png}.png)" in report
    assert "| aedfl | " in report and "0.9326" in report and "## Claims" in report
    summary = json.loads((out / "results.json").read_text())
    accs = [s["runs"][0]["accuracy"] for s in summary["per_seed"]]
    assert summary["rows"]["aedfl"]["accuracy"] == pytest.approx(list(mean_std(accs)))
    again = runner.invoke(app, args)                                        # finished seeds are skipped
    assert again.exit_code == 0 and "seed 0" not in again.output and "seed 1" not in again.output
    other = runner.invoke(app, [*args, "--set", "lr=0.03"])
    assert other.exit_code == 2 and "another configuration (differs in lr)" in other.output


def test_a_finished_aedfl_seed_takes_more_methods(tmp_path):
    data = _npz(tmp_path / "letters.npz", (28, 28), 26, 1000, 100)
    out = tmp_path / "o"
    args = ["reproduce", "aedfl-emnist-lenet5", "--scale", "smoke", "--out", str(out), "--set",
            f"dataset=npz:{data}", "--threads", "1", "--set"]
    _ok([*args, "methods=fedbuff"])
    first = json.loads((out / "seed-0" / "results.json").read_text())["runs"][0]
    _ok([*args, "methods=fedavg,fedbuff"])                       # a method added to a finished seed
    runs = json.loads((out / "seed-0" / "results.json").read_text())["runs"]
    assert [r["method"] for r in runs] == ["fedavg", "fedbuff"] and runs[1] == first
    assert "| fedavg |" in (out / "report.md").read_text()
    _ok([*args, "methods=fedbuff"])                              # a report of some of a seed's methods
    report = (out / "report.md").read_text()
    assert "| fedbuff |" in report and "| fedavg |" not in report
    assert [r["method"] for r in json.loads((out / "seed-0" / "results.json").read_text())["runs"]] == \
        ["fedavg", "fedbuff"]                                    # the seed keeps both, run once
    assert json.loads((out / "results.json").read_text())["per_seed"][0]["runs"] == [first]
    line = _error([*args, "methods=fedbuff,aedfl"])               # adding one while leaving out another
    assert "fedavg" in line and "leaves out" in line


def test_p2pft_smoke_recipe_writes_the_report_and_fig2(tmp_path):
    data = _npz(tmp_path / "cifar.npz", (32, 32, 3), 10, 200, 60)
    out = tmp_path / "o"
    _ok(["reproduce", "p2pft-vit-cifar10", "--scale", "smoke", "--out", str(out), "--set", f"dataset=npz:{data}",
         "--set", "algorithms=local,pushpull,central", "--threads", "1"])
    report = (out / "report.md").read_text()
    for png in ("accuracy_vs_epoch", "consensus_vs_epoch", "node_accuracy"):
        assert (out / f"{png}.png").stat().st_size > 1000 and f"({png}.png)" in report
    assert "(seed-0/attention.png)" in report and (out / "seed-0" / "attention.png").is_file()
    assert "| paper pushpull | 97.44 |" in report and "randomly initialised" in report
    history = json.loads((out / "seed-0" / "results.json").read_text())["runs"][1]["history"]
    assert all(h["consensus"] >= 0 for h in history)


def test_band_on_grid_holds_a_finished_seed_and_averages():
    xs, mean, std = band_on_grid([([0, 1, 2], [0.0, 1.0, 2.0]), ([0, 1], [0.0, 3.0])])
    assert xs[0] == 0 and xs[-1] == 2
    assert mean[-1] == pytest.approx(2.5) and std[-1] == pytest.approx(np.std([2.0, 3.0], ddof=1))
    assert mean_std([1.0]) == (1.0, 0.0)


def _aedfl_seed(seed, acc, time_to_target, diagnostics):
    times = [0.2 * i for i in range(11)]                  # 11 evaluations: the convergence rule needs 10
    history = [{"time": t, "accuracy": a - 0.05, "consensus_accuracy": a, "consensus": 0.5}
               for t, a in zip(times, [0.15, 0.3] + [acc] * 9)]
    run = {"method": "aedfl", "accuracy": acc - 0.05, "consensus_accuracy": acc, "time_to_target": None,
           "consensus_time_to_target": time_to_target, "mflops": 0.2, "bytes_sent": 2e6, "final_consensus": 0.5,
           "wall_time": 60.0 * (seed + 1), "history": history, "diagnostics": diagnostics}
    base = {**run, "method": "fedavg", "accuracy": acc - 0.4, "consensus_time_to_target": None, "diagnostics": {},
            "history": [{"time": t, "accuracy": a, "consensus_accuracy": a, "consensus": 0.0}      # runs longer
                        for t, a in zip([0.5 * i for i in range(11)],
                                        [0.1] * 5 + [0.2] * 4 + [acc - 0.45, acc - 0.4])]}
    return {"config": {"model": "lenet5", "dataset": "x", "devices": 4, "target_acc": 0.5, "seed": seed},
            "code": {"commit": f"{seed}abcdef0123", "dirty": seed == 1}, "runs": [run, base]}


def test_aedfl_report_numbers_and_diagnostics(tmp_path):
    from dflbench.recipes.report import write_report

    # dflbench.methods.aedfl.diagnostics' layout: per evaluation, one value per device (None: none recorded)
    lam = {"time": [0.0, 1.0], "selection_probability": [[0.5, None], [1.0, 0.0]], "lambda": [[1.0, 3.0], [2.0, 2.0]],
           "pruning_rate": [], "selection_by_bucket": {"fresh": [0.9, None], "stale": [0.2, 0.1],
                                                       "aggregated": [0.0, 0.0]}}
    folders = []
    for seed, (acc, ttt) in enumerate(((0.6, 1.0), (0.8, None), (0.7, 2.0))):
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        doc = _aedfl_seed(seed, acc, ttt, lam)
        if seed == 2:
            del doc["runs"][1]["wall_time"]                   # recorded before runs timed themselves
        (folder / "results.json").write_text(json.dumps(doc))
        folders.append(folder)
    report = write_report(load_recipe("aedfl-emnist-lenet5"), "smoke", [], folders, tmp_path).read_text()
    # by hand: std of .6,.8,.7 is .1; aedfl's plateau (last 20%: 2 evaluations, both at acc) is acc, flat
    assert "| aedfl | 0.6500 ± 0.1000 | 0.7000 ± 0.1000 | 0.7000 ± 0.1000 | 3/3 | 0.7000 ± 0.1000 | 1.5 ± 0.7 | 2/3 |" \
        in report
    # fedavg: plateau mean(acc - .45, acc - .4), gaining 5 points (not flat); at t* = 2.0 its value there, 0.1
    fedavg = "| fedavg | 0.3000 ± 0.1000 | 0.3000 ± 0.1000 | 0.2750 ± 0.1000 | 0/3 | 0.1000 ± 0.0000 | / | 0/3 |"
    assert fedavg in report
    assert "| 0.200 ± 0.000 | 2.0 ± 0.0 | 0.500 ± 0.000 | 2.0 ± 1.0 | 0.9326 |" in report    # ... wall: 1, 2, 3 min
    assert "| 0.200 ± 0.000 | 2.0 ± 0.0 | 0.500 ± 0.000 | - | 0.9159 |" in report      # fedavg: one seed untimed
    # per seed: plateau, time to target, wall, commit (+: dirty); seed 1's aedfl never reached 0.5
    assert ("| aedfl | 0.6000, 1 s, 1 min, 0abcdef | 0.8000, never, 2 min, 1abcdef+ | 0.7000, 2 s, 3 min, 2abcdef |"
            in report)
    assert ("| fedavg | 0.1750 rising, never, 1 min, 0abcdef | 0.3750 rising, never, 2 min, 1abcdef+ | "
            "0.2750 rising, never, -, 2abcdef |") in report                     # plateau mean(acc - .45, acc - .4)
    assert "AEDFL has the highest convergence accuracy (consensus column) (Sec. 6.2): holds" in report
    assert "AEDFL has the highest accuracy at equal virtual time (t*, 2.0 s on average) (Sec. 6.2): holds" in report
    assert "AEDFL reaches the target first (Sec. 6.2): not testable (aedfl reached it in 2/3 seeds)" in report
    assert "AEDFL has the smallest computation cost (Sec. 6.2): tie within the seeds' spread" in report
    assert "ended (2.0, 2.0, 2.0 s)" in report
    assert "(diagnostics.png)" in report and (tmp_path / "diagnostics.png").stat().st_size > 1000
    panels = seed_diagnostics_panels({"aedfl": [_aedfl_seed(0, 0.6, 1.0, lam)["runs"][0]]})
    assert [p.ylabel for p in panels] == ["selection probability", "lambda_ij (eq. 4.6-4.8)", "selection probability"]
    (xs, ys), = panels[1].curves.values()                                     # lambda: mean over the two devices
    assert ys[0] == pytest.approx(2.0) and ys[-1] == pytest.approx(2.0)
    assert panels[0].curves["aedfl"][1][0] == pytest.approx(0.5)              # None skipped
    assert set(panels[2].curves) == {"aedfl fresh", "aedfl stale", "aedfl aggregated"}
    spread = {"aedfl": [_aedfl_seed(s, 0.6, 1.0, lam)["runs"][0] for s in range(2)]}
    spread["aedfl"][1]["diagnostics"]["selection_probability"] = [[1.0, 1.0]] * 2     # seeds at 0.5 and 1.0
    _, lo, hi = seed_diagnostics_panels(spread)[0].bands["aedfl"]
    assert max(hi) == 1.0 and min(lo) >= 0.0                                  # mean + std = 1.10 is clipped
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["rows"]["aedfl"]["time_to_target"] == pytest.approx([1.5, np.std([1.0, 2.0], ddof=1)])
    assert summary["common_time"] == [2.0, 2.0, 2.0]
    assert summary["rows"]["fedavg"]["accuracy_at_common_time"] == pytest.approx([0.1, 0.0])
    one = write_report(load_recipe("aedfl-emnist-lenet5"), "smoke", [], folders[:1], tmp_path / "one").read_text()
    assert one.count("not tested: one seed") == 3


def _p2pft_seed(seed, accs):
    """A seed's results.json with `accs[name] = per-node accuracy` (central: one model, repeated per node)."""
    runs = []
    for name, nodes in accs.items():
        history = [{"epoch": e, "mean_accuracy": float(np.mean(nodes)) * e, "consensus": (1.0 if name == "local" else
                                                                                           1e-6) * e}
                   for e in (0, 1)]
        runs.append({"algorithm": name, "node_accuracy": nodes, "mean_accuracy": float(np.mean(nodes)),
                     "bytes_sent": 1e6, "history": history, "single_model": name == "central"})
    return {"config": {"model": "vit", "split": "classes:cifar10", "seed": seed}, "data": {"name": "npz"},
            "backbone": {"kind": "checkpoint"}, "runs": runs}


def test_p2pft_report_numbers_and_claims(tmp_path):
    from dflbench.recipes.report import write_report

    folders = []
    for seed, shift in enumerate((0.1, -0.1)):
        accs = {"local": [0.2, 0.2, 0.3, 0.3], "p2pft": [0.7 + shift] * 4, "dgd": [0.75] * 4, "gt-dgd": [0.5] * 4,
                "central": [0.72] * 4}
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(_p2pft_seed(seed, accs)))
        folders.append(folder)
    report = write_report(load_recipe("p2pft-vit-cifar10"), "cpu", [], folders, tmp_path).read_text()
    # the seeds hold the former names p2pft and gt-dgd (recorded before the rename): read as today's
    assert "| pushpull | 70.00 ± 14.14 | 70.00 ± 14.14 |" in report             # by hand: std of 80, 60
    assert "| gtdgd | 50.00 ± 0.00 |" in report and "| paper pushpull | 97.44 |" in report
    # claims beyond the seeds' spread: p2pft 70 +- 14.14 (80, 60) per node and on the mean
    assert "P2P-FT beats Local-FT on every node (Sec. IV-C): holds (mean 70.00% vs 25.00%)" in report
    assert "similar to centralized (Sec. IV-C; read as within 5 points): holds (gap 2.00 points)" in report
    assert "P2P-FT beats DGD on the mean (Sec. II: inexact convergence under heterogeneous data): tie within the " \
           "seeds' spread (70.00% vs 75.00%)" in report                  # 5 points < 14.14
    assert "P2P-FT beats GT-DGD on the mean (Sec. II: designed for weight-balanced graphs, ours is not): holds" \
        in report                                                            # 20 points > 14.14
    assert (tmp_path / "consensus_vs_epoch.png").stat().st_size > 1000      # log scale with zeros at epoch 0
    changed = "Changed from scale `cpu` (by `--set` or `--stand-in`): model = vit (scale: vit_small_patch16_224)."
    assert changed in report                                                 # split, the same, is not listed
