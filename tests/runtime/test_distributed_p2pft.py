"""The P2P-FT pipeline on 4 gloo ranks (one node each) against the single-process simulator: 20 steps of
push-pull (Algorithm 1) on a tiny ViT give every node the simulator's tail parameters (1e-5), and rank 0's
results.json holds the simulator's per-node accuracies, losses and byte counts. (DGD and GT-DGD run the same
engine path; their per-node equality is checked on a tiny MLP in test_distributed_mixing.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dflbench.recipes.p2pft_distributed import run_p2pft_distributed
from dflbench.runtime.backend import check_runtime
from dflbench.recipes.p2pft import P2PFTConfig, run_p2pft

TINY_VIT = ("vit_tiny_patch16_224", (("img_size", 8), ("patch_size", 4), ("embed_dim", 16), ("depth", 2),
                                      ("num_heads", 2)))
ALGS = ("p2pft",)


def _config(dataset: str) -> P2PFTConfig:
    # 80 samples, iid over 4 nodes: 20 per node, batch 4 -> 5 steps per epoch, 4 epochs = 20 steps
    return P2PFTConfig(model=TINY_VIT[0], model_kwargs=TINY_VIT[1], dataset=dataset, nodes=4, split="iid",
                       algorithms=ALGS, epochs=4, lr=0.05, batch_size=4, device="cpu", seed=0)


def _worker(rank: int, cfg: P2PFTConfig, out: str) -> None:
    run_p2pft_distributed(cfg, out, progress=False, backend="gloo")


def test_pipeline_matches_the_simulator(launch, band_npz, tmp_path):
    cfg = _config(band_npz(side=8, train=20, test=5, noise=40, bright=200))
    sim = run_p2pft(cfg, tmp_path / "sim", progress=False).results
    launch(_worker, 4, cfg, str(tmp_path / "dist"))
    dist = json.loads((tmp_path / "dist" / "results.json").read_text())
    assert dist["runtime"] == {"kind": "distributed", "world_size": 4, "backend": "gloo"}
    for a, b in zip(sim["runs"], dist["runs"]):
        assert a["algorithm"] == b["algorithm"] and b["steps"] == 20
        assert a["node_accuracy"] == b["node_accuracy"]
        assert a["bytes_sent_per_node"] == b["bytes_sent_per_node"]
        for ha, hb in zip(a["history"], b["history"]):
            np.testing.assert_allclose(hb["train_loss"] or [], ha["train_loss"] or [], atol=1e-5)
        ref = torch.load(tmp_path / "sim" / "checkpoints" / f"{a['algorithm']}.pt", weights_only=True)["state"]
        for rank in range(4):
            mine = torch.load(tmp_path / "dist" / "checkpoints" / f"{a['algorithm']}.rank{rank}.pt",
                              weights_only=True)["state"]
            for k, v in ref["params"].items():
                torch.testing.assert_close(mine["params"][k], v[rank:rank + 1], atol=1e-5, rtol=0)
    assert {k for k in sim if k != "runs"} | {"runtime"} == {k for k in dist if k != "runs"}


def test_refuses_central_and_unknown_runtime(tmp_path):
    with pytest.raises(ValueError, match="cannot run with --runtime distributed"):
        run_p2pft_distributed(P2PFTConfig(algorithms=("p2pft", "central")), tmp_path)
    with pytest.raises(ValueError, match="valid runtimes: simulator, distributed"):
        check_runtime("mpi")
