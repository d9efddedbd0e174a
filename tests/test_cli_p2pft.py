"""`dflbench p2pft`, `pretrain` and `demo` on the command line: tiny runs and one-line user errors (exit 2)."""

import json

import torch
from typer.testing import CliRunner

from dflbench.cli.main import app
from dflbench.topology import is_doubly_stochastic, make_topology, row_stochastic
from dflbench.vision import create_model

runner = CliRunner()
TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=8,patch_size=4,embed_dim=16,depth=2,num_heads=2",
        "--device", "cpu", "--threads", "1"]


def _one_line_error(args, *needles):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    warnings = [line for line in lines if line.startswith("warning:")]     # e.g. the random-backbone note
    assert len(warnings) <= 1 and len(lines) - len(warnings) == 1, result.output
    lines = [line for line in lines if not line.startswith("warning:")]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_random_backbone_warning_is_one_stderr_line(tmp_path):
    result = runner.invoke(app, ["p2pft", *TINY, "--algorithms", "local", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if "randomly initialised" in line] == [
        "warning: the backbone is randomly initialised (no --pretrained or --checkpoint): fine-tuning its last block "
        "says little about P2P-FT; see `dflbench pretrain`"]
    assert json.loads((tmp_path / "results.json").read_text())["backbone"]["kind"] == "random"


def test_baseline_variants_run_on_the_topology_graph(tmp_path):
    """--algorithms reaches every DGD / GT-DGD form, by its former recipe name too (recorded under the mixing
    registry's one name); each runs on --topology's own row-stochastic weights (hub_ring: not doubly stochastic)."""
    result = runner.invoke(app, ["p2pft", *TINY, "--algorithms", "dgd-eq1,dgd-cta,gt-dgd-atc,gt-dgd",
                                 "--topology", "hub_ring", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [r["mixing"] for r in runs] == [r["algorithm"] for r in runs] == ["dgd_eq1", "dpsgd", "gtdgd_atc", "gtdgd"]
    A = row_stochastic(make_topology("hub_ring", 4))
    assert not is_doubly_stochastic(A)
    assert all(r["matrices"] == {"W": A.tolist()} for r in runs)


def test_user_errors_are_one_line_exit_2(tmp_path):
    base = ["p2pft", *TINY, "--epochs", "1", "--out", str(tmp_path / "o")]
    _one_line_error(base + ["--algorithms", "local,fedavg"], "fedavg",
                    "valid: centralized, dgd, dgd_eq1, dpsgd, gtdgd,", "pushsum, central")
    _one_line_error(base + ["--dataset", "mnist"], "unknown dataset 'mnist'", "cifar10", "digits")
    _one_line_error(base + ["--topology", "moebius"], "unknown topology 'moebius'", "exponential", "adjacency:PATH")
    _one_line_error(base + ["--split", "halves"], "unknown split 'halves'", "dirichlet:ALPHA", "shards:K")
    _one_line_error(base + ["--split", "dirichlet"], "needs an argument")
    _one_line_error(["p2pft", "--model", "vit_nonexistent_model", "--epochs", "1", "--out", str(tmp_path / "m")],
                    "unknown timm model 'vit_nonexistent_model'")
    _one_line_error(base + ["--dataset", "cifar10", "--data-dir", str(tmp_path)], "not found", str(tmp_path),
                    "--download")
    adj = tmp_path / "adj.txt"
    adj.write_text("1 1 0 0\n1 1 0 0\n0 0 1 1\n0 0 1 1\n")  # two islands
    _one_line_error(base + ["--topology", f"adjacency:{adj}"], "not strongly connected")
    _one_line_error(["pretrain", *TINY, "--dataset", "nope", "--out", str(tmp_path / "b.pt")], "unknown dataset")


def test_p2pft_run_writes_results_and_prints_table(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["p2pft", *TINY, "--algorithms", "local,pushpull", "--epochs", "1", "--lr", "0.05",
                                 "--batch-size", "16", "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert [r["algorithm"] for r in res["runs"]] == ["local", "pushpull"]
    for r in res["runs"]:
        assert f"{100 * r['mean_accuracy']:.2f}" in result.output
    assert "node 4" in result.output and (out / "results.csv").is_file()
    assert (out / "checkpoints" / "pushpull.pt").is_file()


def test_pretrain_backbone_feeds_p2pft_checkpoint(tmp_path):
    ckpt = tmp_path / "backbone.pt"
    result = runner.invoke(app, ["pretrain", *TINY, "--dataset", "digits", "--epochs", "2", "--lr", "0.003",
                                 "--out", str(ckpt)])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "backbone.pt.json").read_text())
    assert info["history"][-1]["test_accuracy"] > 0.3  # two epochs of AdamW on digits beat chance (0.1)
    kwargs = dict(img_size=8, patch_size=4, embed_dim=16, depth=2, num_heads=2)
    loaded = create_model("vit_tiny_patch16_224", 3, checkpoint=ckpt, **kwargs)
    saved = torch.load(ckpt, weights_only=True)
    assert torch.equal(loaded.state_dict()["blocks.0.attn.qkv.weight"], saved["blocks.0.attn.qkv.weight"])
    out = tmp_path / "ft"
    result = runner.invoke(app, ["p2pft", *TINY, "--checkpoint", str(ckpt), "--algorithms", "local", "--epochs", "1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.json").read_text())["config"]["checkpoint"] == str(ckpt)


def test_train_samples_keeps_the_same_subset_for_every_seed(tmp_path):
    """--train-samples shrinks the training set (the cpu scales): results.json records the size, the nodes' class
    histograms sum to it, and two seeds fine-tune on the same images (drawn with seed 0)."""
    hists = []
    for seed in (0, 1):
        out = tmp_path / f"s{seed}"
        result = runner.invoke(app, ["p2pft", *TINY, "--dataset", "digits", "--train-samples", "300",
                                     "--algorithms", "local", "--seed", str(seed), "--out", str(out)])
        assert result.exit_code == 0, result.output
        res = json.loads((out / "results.json").read_text())
        assert res["data"]["train"] == 300 and res["config"]["train_samples"] == 300
        hists.append(torch.tensor(res["partition"]["class_histograms"]).sum(0))
    assert int(hists[0].sum()) == 300 and torch.equal(hists[0], hists[1])
    _one_line_error(["p2pft", *TINY, "--train-samples", "5000", "--out", str(tmp_path / "x")],
                    "train_samples must be in 1..")
