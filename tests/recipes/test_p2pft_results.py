"""P2P-FT recipe: results are written before any picture and survive a failing one; attention maps for ViT/DeiT and
Swin, for any node, skipped (not crashed) when a node holds every class; resume refuses another run's checkpoints;
the default graph exercises push-pull (A != B); a random backbone is flagged; central's step budget is an option."""

import json

import numpy as np
import pytest
import torch

from dflbench.recipes import p2pft as recipe
from dflbench.recipes import p2pft_seeds as seeds_module
from dflbench.recipes.config import parse_model_kwargs
from dflbench.recipes.p2pft import P2PFTConfig, run_p2pft
from dflbench.topology import column_stochastic, row_stochastic

VIT = ("vit_tiny_patch16_224", parse_model_kwargs("img_size=8,patch_size=4,embed_dim=16,depth=2,num_heads=2"))
SWIN = ("swin_tiny_patch4_window7_224", (("img_size", 16), ("patch_size", 2), ("window_size", 2), ("embed_dim", 16),
                                         ("depths", (1, 1)), ("num_heads", (1, 2))))


def _cfg(model=VIT, **kw) -> P2PFTConfig:
    base = dict(model=model[0], model_kwargs=model[1], dataset="digits", nodes=4, algorithms=("local", "pushpull"),
                epochs=1, lr=0.05, batch_size=32, device="cpu", seed=0)
    return P2PFTConfig(**{**base, **kw})


def test_swin_attention_writes_results_and_a_gradcam_map(tmp_path):
    res = run_p2pft(_cfg(SWIN, attention=2, attention_node=2), tmp_path).results
    assert res["attention"]["method"] == "gradcam" and res["attention"]["node"] == 2
    assert (tmp_path / "attention.png").stat().st_size > 1000
    assert not set(res["attention"]["labels"]) & {3, 4, 5}                 # node 2 trains on classes 3-5
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["attention"] == res["attention"] and len(on_disk["runs"]) == 2
    assert (tmp_path / "accuracy.png").stat().st_size > 1000


def test_vit_default_map_is_last_layer_cls_attention(tmp_path):
    res = run_p2pft(_cfg(attention=1), tmp_path).results
    assert res["attention"]["method"] == "cls" and res["attention"]["node"] == 1


def test_node_with_every_class_skips_the_figure_and_keeps_the_results(tmp_path, capsys):
    res = run_p2pft(_cfg(split="iid", attention=2), tmp_path).results
    assert "holds every class" in res["attention"]["skipped"]
    assert "attention maps skipped" in capsys.readouterr().err
    assert json.loads((tmp_path / "results.json").read_text())["attention"]["skipped"]
    assert not (tmp_path / "attention.png").exists()


def test_a_failing_picture_leaves_the_results(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib exploded")

    monkeypatch.setattr("dflbench.vision.plots.compare_attention", broken)
    res = run_p2pft(_cfg(attention=2), tmp_path).results
    assert res["attention"] == {"error": "RuntimeError: matplotlib exploded"}
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["attention"]["error"] and [r["algorithm"] for r in on_disk["runs"]] == ["local", "pushpull"]
    assert "the attention figure failed" in capsys.readouterr().err


def test_results_are_on_disk_before_the_first_picture(tmp_path, monkeypatch):
    seen = {}

    def spy(path, *args, **kwargs):
        seen["runs"] = json.loads((tmp_path / "results.json").read_text())["runs"]
        raise KeyboardInterrupt                                             # the run dies while drawing

    monkeypatch.setattr(recipe, "line_plot", spy)
    with pytest.raises(KeyboardInterrupt):
        run_p2pft(_cfg(), tmp_path)
    assert [r["algorithm"] for r in seen["runs"]] == ["local", "pushpull"]


def test_results_record_the_code_each_algorithm_ran(tmp_path, monkeypatch):
    stamp = {"version": "1", "commit": "c" * 40, "dirty": False}
    monkeypatch.setattr("dflbench.recipes.p2pft.code_provenance", lambda: stamp)
    monkeypatch.setattr("dflbench.recipes.p2pft_results.code_provenance", lambda: stamp)
    run_p2pft(_cfg(), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["code"] == stamp and all(r["code"] == stamp for r in results["runs"])


@pytest.mark.parametrize("change, field", [
    (dict(model=("deit_tiny_patch16_224", VIT[1])), "model"),
    (dict(topology="complete"), "topology"),
    (dict(policy="head_only"), "policy"),
    (dict(model=(VIT[0], parse_model_kwargs("img_size=8,patch_size=4,embed_dim=16,depth=3,num_heads=2"))),
     "model_kwargs"),
])
def test_resume_refuses_another_runs_checkpoint(tmp_path, change, field):
    run_p2pft(_cfg(algorithms=("pushpull",)), tmp_path)
    with pytest.raises(ValueError, match=f"results.json holds results of another configuration \\(differs in "
                                         f".*{field}"):
        run_p2pft(_cfg(algorithms=("pushpull",), **change), tmp_path, resume=True)
    (tmp_path / "results.json").unlink()                  # an interrupted run: only its checkpoints are there
    with pytest.raises(ValueError, match=f"belongs to a different run \\(differs in .*{field}"):
        run_p2pft(_cfg(algorithms=("pushpull",), **change), tmp_path, resume=True)


def test_resume_refuses_a_changed_backbone_checkpoint(tmp_path):
    ckpt = tmp_path / "backbone.pt"
    torch.manual_seed(0)
    model = seeds_module.build_model(_cfg(), 10)
    torch.save(model.state_dict(), ckpt)
    run_p2pft(_cfg(algorithms=("pushpull",), checkpoint=str(ckpt)), tmp_path / "run")
    torch.save({k: v + 1 for k, v in model.state_dict().items()}, ckpt)
    (tmp_path / "run" / "results.json").unlink()          # the checkpoint's fingerprint is what refuses it
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        run_p2pft(_cfg(algorithms=("pushpull",), checkpoint=str(ckpt)), tmp_path / "run", resume=True)


def test_default_graph_is_directed_and_not_weight_balanced():
    cfg = P2PFTConfig()
    topo = cfg.graph()
    w = topo.weights
    assert not torch.equal(w, w.T)
    assert (row_stochastic(w) - column_stochastic(w)).abs().max() > 0.1


def test_random_backbone_is_flagged(tmp_path):
    res = run_p2pft(_cfg(algorithms=("local",)), tmp_path).results
    assert res["backbone"]["kind"] == "random" and "randomly initialised" in res["backbone"]["warning"]


@pytest.mark.parametrize("mode", ["match", "epoch"])
def test_central_step_budget(tmp_path, mode):
    res = run_p2pft(_cfg(algorithms=("pushpull", "central"), central_steps=mode), tmp_path).results
    sizes = res["partition"]["sizes"]
    nodes_steps = int(np.ceil(max(sizes) / 32))
    runs = {r["algorithm"]: r for r in res["runs"]}
    assert runs["pushpull"]["steps_per_epoch"] == nodes_steps
    expected = nodes_steps if mode == "match" else int(np.ceil(sum(sizes) / (4 * 32)))
    assert runs["central"]["steps_per_epoch"] == expected and runs["central"]["steps"] == expected
    if mode == "match":
        assert expected > int(np.ceil(sum(sizes) / (4 * 32)))               # the nodes are unequal: it matters


def test_config_errors():
    with pytest.raises(ValueError, match="--attention-node must be in 1..4"):
        _cfg(attention_node=5)
    with pytest.raises(ValueError, match="unknown attention method 'saliency'"):
        _cfg(attention_method="saliency")
    with pytest.raises(ValueError, match="--central-steps must be one of match, epoch"):
        _cfg(central_steps="double")
