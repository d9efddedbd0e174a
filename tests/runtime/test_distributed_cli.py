"""`dflbench p2pft --runtime ...`: bad runtime names and a distributed run outside torchrun fail with one line
(exit code 2) saying how to fix it; backend choice and node placement follow their documented rules."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from dflbench.cli.main import app
from dflbench.runtime.backend import DistEnv, choose_backend, node_placement


def test_unknown_runtime_is_one_line_error():
    res = CliRunner().invoke(app, ["p2pft", "--runtime", "mpi", "--algorithms", "pushpull"])
    assert res.exit_code == 2 and "valid runtimes: simulator, distributed" in res.output
    assert "Traceback" not in res.output


def test_distributed_outside_torchrun_says_how_to_launch(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    res = CliRunner().invoke(app, ["p2pft", "--runtime", "distributed", "--algorithms", "pushpull", "--device", "cpu"])
    assert res.exit_code == 2 and "torchrun --nproc-per-node" in res.output


def test_backend_choice():
    assert choose_backend("cpu") == "gloo" and choose_backend("cpu", "gloo") == "gloo"
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        choose_backend("cpu", "nccl")
    with pytest.raises(ValueError, match="valid backends: auto, gloo, nccl"):
        choose_backend("cpu", "mpi")
    if torch.cuda.is_available() and torch.distributed.is_nccl_available():
        assert choose_backend("cuda:0") == "nccl"


def test_node_placement_is_contiguous_and_balanced():
    for n, w in [(4, 4), (7, 3), (10, 4), (5, 1)]:
        ranks = node_placement(n, w)
        assert ranks.tolist() == sorted(ranks.tolist())                       # contiguous blocks
        counts = torch.bincount(ranks, minlength=w)
        assert int(counts.min()) >= n // w and int(counts.max()) <= -(-n // w)
    with pytest.raises(ValueError, match="at least one node"):
        node_placement(3, 4)


def test_env_reads_torchrun_variables(monkeypatch):
    env = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    e = DistEnv.from_env(device="cpu")
    assert (e.rank, e.world_size, e.local_rank, e.backend) == (2, 4, 2, "gloo")
    assert e.local_nodes(8).tolist() == [4, 5]


def test_resume_reruns_a_partial_run_and_keeps_the_finished_ones(band_npz, tmp_path):
    """A run record marked partial (what a distributed run that lost a device leaves) is not finished: --resume runs
    that method again, says so in one line, and keeps the other methods; an interrupt line tells them apart."""
    from dflbench.cli.aedfl import _saved

    out = tmp_path / "o"
    args = ["aedfl", "--dataset", band_npz(side=16, train=20, test=5, noise=40, bright=200), "--devices", "4",
            "--max-updates", "1", "--batch-size", "8", "--local-steps", "1", "--eval-samples", "20", "--out", str(out),
            "--methods", "fedavg,fedbuff"]
    assert CliRunner().invoke(app, args).exit_code == 0
    results = json.loads((out / "results.json").read_text())
    reason = "device 2 failed (rank 2: no heartbeat for 10 s, killed, crashed or stopped)"
    results["runs"][1].update(partial=True, stop_reason=reason, failed_nodes=[2])
    (out / "results.json").write_text(json.dumps(results))
    assert _saved(out) == (f"{out / 'results.json'} holds the finished methods fedavg and the partial run (stopped "
                           "early) of fedbuff")
    res = CliRunner().invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    assert (f"resuming from {out / 'results.json'}: kept fedavg (finished earlier, not run again); running fedbuff "
            f"again (its run stopped early: {reason})") in res.output.replace("\n", " ")
    after = json.loads((out / "results.json").read_text())["runs"]
    assert [r["method"] for r in after] == ["fedavg", "fedbuff"] and after[0] == results["runs"][0]
    assert not after[1].get("partial") and after[1]["stop_reason"] != reason


@pytest.mark.parametrize("value", ["0.5", "nan", "-3"])
def test_aedfl_peer_timeout_is_checked_before_anything_runs(value, tmp_path):
    res = CliRunner().invoke(app, ["aedfl", "--runtime", "distributed", "--peer-timeout", value, "--out",
                                   str(tmp_path / "o")])
    assert res.exit_code == 2 and f"--peer-timeout must be a finite number >= 1, got {value}" in res.output
    assert not (tmp_path / "o").exists()


def test_distributed_resume_keeps_a_finished_run_without_launching(band_npz, tmp_path, monkeypatch):
    """--resume of a distributed launch whose method finished earlier runs nothing: rank 0 prints the kept table, the
    other ranks return (no process group or RPC is started)."""
    out = tmp_path / "o"
    args = ["aedfl", "--dataset", band_npz(side=16, train=20, test=5, noise=40, bright=200), "--devices", "2",
            "--max-updates", "1", "--batch-size", "8", "--local-steps", "1", "--eval-samples", "20", "--out", str(out),
            "--methods", "aedfl-dwu"]
    assert CliRunner().invoke(app, args).exit_code == 0
    recorded = json.loads((out / "results.json").read_text())      # as if that finished run were a distributed one
    recorded["config"]["runtime"] = "distributed"                  # (the runtime is part of the configuration)
    (out / "results.json").write_text(json.dumps(recorded))
    before = recorded["runs"]
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        res = CliRunner().invoke(app, [*args, "--runtime", "distributed", "--resume"])
        assert res.exit_code == 0, res.output
        assert ("kept aedfl-dwu (finished earlier, not run again); running nothing" in res.output) == (rank == "0")
    assert "aedfl-dwu" in res.output[res.output.index("accuracy on"):]
    assert json.loads((out / "results.json").read_text())["runs"] == before
