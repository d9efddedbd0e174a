"""The P2P-FT pipeline on 4 gloo ranks (one node each) against the single-process simulator: 20 steps of
push-pull (Algorithm 1) on a tiny ViT give every node the simulator's tail parameters (1e-5), and rank 0's
results.json holds the simulator's per-node accuracies, losses and byte counts. (DGD and GT-DGD run the same
engine path; their per-node equality is checked on a tiny MLP in test_distributed_mixing.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dflbench.recipes.p2pft import P2PFTConfig, run_p2pft
from dflbench.recipes.p2pft_distributed import run_p2pft_distributed
from dflbench.runtime.backend import check_runtime

TINY_VIT = ("vit_tiny_patch16_224", (("img_size", 8), ("patch_size", 4), ("embed_dim", 16), ("depth", 2),
                                      ("num_heads", 2)))
ALGS = ("pushpull",)


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
        run_p2pft_distributed(P2PFTConfig(algorithms=("pushpull", "central")), tmp_path)
    with pytest.raises(ValueError, match="valid runtimes: simulator, distributed"):
        check_runtime("mpi")


def _worker_dies(rank: int, cfg: P2PFTConfig, out: str, die_at: int, timeout_s: float, hang: bool = False) -> None:
    """Rank 2 exits hard (or, with `hang`, stops answering) on its `die_at`-th gradient evaluation; the others
    record the error they stop with."""
    import os
    import time

    from dflbench.runtime.sync import DistributedSyncSimulator

    if rank == 2:
        real = DistributedSyncSimulator.grad_fn

        def dying(self, params):
            if self._calls == die_at:
                time.sleep(120) if hang else os._exit(9)
            return real(self, params)

        DistributedSyncSimulator.grad_fn = dying
    try:
        run_p2pft_distributed(cfg, out, progress=False, backend="gloo", timeout_s=timeout_s)
    except Exception as exc:
        with open(f"{out}/error.rank{rank}.txt", "w") as fh:
            fh.write(f"{type(exc).__name__}: {exc}")
        raise


def _exit_codes(ctx, timeout_s: float, wait_for=(0, 1, 2, 3)) -> list[int | None]:
    """Wait (up to `timeout_s`) for the ranks `wait_for` to end on their own, so the survivors get to write their
    error files (joining the context would terminate them as soon as one rank fails); kill whatever is left."""
    import time

    deadline = time.monotonic() + timeout_s
    for r in wait_for:
        ctx.processes[r].join(max(0.0, deadline - time.monotonic()))
    codes = [p.exitcode for p in ctx.processes]
    for p in ctx.processes:
        if p.is_alive():
            p.kill()
            p.join()
    return codes


def test_a_dead_rank_stops_the_run_with_its_name_and_resume_finishes_it(launch, band_npz, tmp_path):
    import time

    cfg = _config(band_npz(side=8, train=20, test=5, noise=40, bright=200))
    out = tmp_path / "dist"
    out.mkdir()
    start = time.monotonic()
    ranks = launch(_worker_dies, 4, cfg, str(out), 12, 20.0, join=False)   # rank 2 dies in epoch 3 (5 steps/epoch)
    codes = _exit_codes(ranks, 60.0)
    assert codes[2] == 9 and all(codes[r] not in (0, None) for r in (0, 1, 3)), codes
    assert time.monotonic() - start < 60
    for rank in (0, 1, 3):
        message = (out / f"error.rank{rank}.txt").read_text()
        assert message.startswith("PeerFailure: ") and "rank 2" in message and "--resume" in message, message
    for rank in range(4):                                                # two whole epochs are checkpointed
        assert torch.load(out / "checkpoints" / f"pushpull.rank{rank}.pt", weights_only=True)["epoch"] == 2
    assert not (out / "results.json").exists()
    launch(_worker_resume, 4, cfg, str(out))                             # every rank again, with --resume
    sim = run_p2pft(cfg, tmp_path / "sim", progress=False).results
    dist = json.loads((out / "results.json").read_text())
    assert dist["runs"][0]["node_accuracy"] == sim["runs"][0]["node_accuracy"]
    ref = torch.load(tmp_path / "sim" / "checkpoints" / "pushpull.pt", weights_only=True)["state"]["params"]
    for rank in range(4):
        mine = torch.load(out / "checkpoints" / f"pushpull.rank{rank}.pt", weights_only=True)["state"]["params"]
        for k, v in ref.items():
            torch.testing.assert_close(mine[k], v[rank:rank + 1], atol=1e-5, rtol=0)


def _worker_resume(rank: int, cfg: P2PFTConfig, out: str) -> None:
    run_p2pft_distributed(cfg, out, resume=True, progress=False, backend="gloo")


def test_a_hung_rank_is_declared_dead_after_the_peer_timeout(launch, band_npz, tmp_path):
    import time

    cfg = _config(band_npz(side=8, train=20, test=5, noise=40, bright=200))
    start = time.monotonic()
    ranks = launch(_worker_dies, 4, cfg, str(tmp_path), 12, 4.0, True, join=False)
    codes = _exit_codes(ranks, 40.0, wait_for=(0, 1, 3))                  # not the 120 s rank 2 sleeps
    assert all(codes[r] not in (0, None) for r in (0, 1, 3)), codes
    assert time.monotonic() - start < 40
    messages = [(tmp_path / f"error.rank{r}.txt").read_text() for r in (0, 1, 3)]
    assert all(m.startswith("PeerFailure: ") and "rank 2" in m for m in messages), messages


def _worker_dies_before_its_checkpoint(rank: int, cfg: P2PFTConfig, out: str, epoch: int) -> None:
    """Rank 2 exits hard when it is about to write its checkpoint of `epoch` (after that epoch's last exchange)."""
    import os

    from dflbench.runtime.sync import DistributedSyncSimulator

    if rank == 2:
        real = DistributedSyncSimulator.save_checkpoint

        def dying(self, path, payload):
            if payload["epoch"] == epoch:
                os._exit(9)
            return real(self, path, payload)

        DistributedSyncSimulator.save_checkpoint = dying
    run_p2pft_distributed(cfg, out, progress=False, backend="gloo", timeout_s=20.0)


def test_ranks_a_checkpoint_apart_resume_from_the_epoch_all_hold(launch, band_npz, tmp_path):
    """Rank 2 dies between epoch 2's last exchange and its checkpoint: the others hold epoch 2, it holds epoch 1;
    the resume goes back to epoch 1 everywhere (the kept previous checkpoints) and ends as the simulator does."""
    cfg = _config(band_npz(side=8, train=20, test=5, noise=40, bright=200))
    out = tmp_path / "dist"
    out.mkdir()
    _exit_codes(launch(_worker_dies_before_its_checkpoint, 4, cfg, str(out), 2, join=False), 60.0)
    epochs = [torch.load(out / "checkpoints" / f"pushpull.rank{r}.pt", weights_only=True)["epoch"] for r in range(4)]
    assert epochs == [2, 2, 1, 2]
    launch(_worker_resume, 4, cfg, str(out))
    sim = run_p2pft(cfg, tmp_path / "sim", progress=False).results
    dist = json.loads((out / "results.json").read_text())
    assert dist["runs"][0]["node_accuracy"] == sim["runs"][0]["node_accuracy"]
    assert [h["epoch"] for h in dist["runs"][0]["history"]] == list(range(cfg.epochs + 1))
