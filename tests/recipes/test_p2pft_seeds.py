"""Batched seeds for synchronous P2P-FT: seeds 0, 1, 2 stacked into one run per algorithm give, per seed, the
per-node accuracies, parameters, losses and bytes of three sequential runs (the smoke scale's tiny random ViT,
synthetic data of CIFAR shape); `reproduce --seeds` batches by default, `--set batch_seeds=false` keeps the sequential
path and the finished folders; seeds that cannot be stacked are split with a note, or refused under
batch_seeds=true; the distributed runtime refuses batch_seeds=true."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dflbench.cli.main import app
from dflbench.errors import UserError
from dflbench.recipes.p2pft import P2PFTRuntime, run_p2pft, run_p2pft_seeds
from dflbench.recipes.reproduce import load_recipe

ALGORITHMS = "local,pushpull,dgd,gtdgd,central"


def _npz(path, n_train=160, n_test=40):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), y_train=np.arange(n_train) % 10,
             x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), y_test=np.arange(n_test) % 10)
    return path


def _smoke(data, **sets):
    base = {"dataset": f"npz:{data}", "algorithms": ALGORITHMS, "attention": 0, "epochs": 2, "batch_size": 8,
            "lr": 0.05, "momentum": 0.5}
    return load_recipe("p2pft-vit-cifar10").resolve("smoke", {**base, **sets})


def test_batched_seeds_equal_sequential_runs(tmp_path):
    torch.set_num_threads(1)
    cfg = _smoke(_npz(tmp_path / "c.npz"))
    cfgs = [replace(cfg, seed=s) for s in (0, 1, 2)]
    batched = run_p2pft_seeds(cfgs, [tmp_path / "b" / f"seed-{s}" for s in (0, 1, 2)], progress=False)
    for s, (c, got) in enumerate(zip(cfgs, batched)):
        ref = run_p2pft(c, tmp_path / "s" / f"seed-{s}", progress=False)
        for name in ALGORITHMS.split(","):
            a, b = got.sim_results[name], ref.sim_results[name]
            assert a.steps == b.steps > 0 and a.bytes_sent == b.bytes_sent, (s, name)
            for k in b.params:
                assert torch.allclose(a.params[k], b.params[k], atol=1e-5, rtol=0), (s, name, k)
            for ha, hb in zip(a.history, b.history, strict=True):
                assert ha["node_accuracy"] == hb["node_accuracy"], (s, name, ha["epoch"])
                if hb["train_loss"] is not None:
                    assert np.allclose(ha["train_loss"], hb["train_loss"], atol=1e-5, rtol=0)
                assert ha["consensus"] == pytest.approx(hb["consensus"], abs=1e-6)
        runs = {r["algorithm"]: r for r in got.results["runs"]}
        assert all(r["stacked_seeds"] == [0, 1, 2] for r in runs.values())        # really one stacked run each
        assert all(r["stacked_seeds"] == [s] for r in ref.results["runs"])
        assert runs["pushpull"]["matrices"] == {r["algorithm"]: r for r in ref.results["runs"]}["pushpull"]["matrices"]
    # the seeds differ (own head init, split order, batches): a stacked run must not have made them one
    p0, p1 = (batched[s].sim_results["pushpull"].params["head.head.weight"] for s in (0, 1))
    assert not torch.allclose(p0, p1)


def test_reproduce_batches_and_the_sequential_path_keeps_its_folders(tmp_path):
    torch.set_num_threads(1)
    data = _npz(tmp_path / "c.npz", 80, 20)
    out = tmp_path / "o"
    args = ["reproduce", "p2pft-vit-cifar10", "--scale", "smoke", "--seeds", "2", "--out", str(out), "--set",
            f"dataset=npz:{data}", "--set", "algorithms=local,pushpull", "--set", "attention=0", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for s in (0, 1):
        runs = json.loads((out / f"seed-{s}" / "results.json").read_text())["runs"]
        assert [r["stacked_seeds"] for r in runs] == [[0, 1], [0, 1]]
        assert (out / f"seed-{s}" / "done.json").is_file()
        assert (out / f"seed-{s}" / "checkpoints" / "pushpull.pt").is_file()
    before = (out / "seed-1" / "results.json").read_text()
    again = CliRunner().invoke(app, [*args, "--set", "batch_seeds=false"])                 # finished seeds are kept
    assert again.exit_code == 0, again.output
    assert (out / "seed-1" / "results.json").read_text() == before
    for s in (0, 1):                      # as recorded before the rename (pushpull was p2pft): still finished
        for name in ("results.json", "done.json"):
            path = out / f"seed-{s}" / name
            path.write_text(path.read_text().replace('"pushpull"', '"p2pft"'))
    old = [(out / f"seed-{s}" / "results.json").read_text() for s in (0, 1)]
    for algorithms in ("local,p2pft", "local,pushpull"):
        resumed = CliRunner().invoke(app, [*args, "--set", f"algorithms={algorithms}"])
        assert resumed.exit_code == 0, resumed.output
        assert [(out / f"seed-{s}" / "results.json").read_text() for s in (0, 1)] == old    # nothing ran again
        assert "| pushpull |" in (out / "report.md").read_text()


def test_unstackable_seeds_split_with_a_note_or_are_refused(tmp_path, capsys):
    torch.set_num_threads(1)
    data = _npz(tmp_path / "c.npz", 120, 20)
    cfg = _smoke(data, split="dirichlet:0.3", algorithms="local", epochs=1, batch_size=2)
    cfgs = [replace(cfg, seed=s) for s in (0, 1)]
    runs = run_p2pft_seeds(cfgs, [tmp_path / "a0", tmp_path / "a1"], progress=False)
    assert "differ in steps_per_epoch" in capsys.readouterr().err
    assert [r.results["runs"][0]["stacked_seeds"] for r in runs] == [[0], [1]]
    forced = [replace(c, batch_seeds=True) for c in cfgs]
    with pytest.raises(UserError, match="batch_seeds=true.*steps_per_epoch"):
        run_p2pft_seeds(forced, [tmp_path / "b0", tmp_path / "b1"], progress=False)


def test_the_distributed_runtime_refuses_batch_seeds(tmp_path):
    from dflbench.runtime.sync import DistributedSyncSimulator

    cfg = _smoke(tmp_path / "none.npz", batch_seeds=True)
    with pytest.raises(UserError, match="batch_seeds=true needs the simulator runtime"):
        run_p2pft_seeds([cfg], [tmp_path / "o"], runtime=P2PFTRuntime(DistributedSyncSimulator, "cpu"))
