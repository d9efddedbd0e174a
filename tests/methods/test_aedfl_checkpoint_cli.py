"""`dflbench aedfl` killed mid-method continues with --resume from OUT/checkpoints/METHOD.pt to the results of an
uninterrupted run; without --resume the checkpoint is never silently dropped, and another run's is refused."""

import json

import pytest
from typer.testing import CliRunner

from dflbench.cli.main import app
from dflbench.engines.async_checkpoint import Checkpoint

ARGS = ["aedfl", "--model", "lenet5", "--devices", "4", "--alpha", "0.5", "--max-updates", "4", "--batch-size", "8",
        "--eval-interval", "0.05", "--eval-samples", "32", "--seed", "1", "--prune-every", "2",
        "--checkpoint-every", "1e-9"]
WALL = ("wall_time", "steps_per_s")


def comparable(out):
    runs = json.loads((out / "results.json").read_text())["runs"]
    return [{k: ([{f: v for f, v in h.items() if f != "wall"} for h in r["history"]] if k == "history" else r[k])
             for k in r if k not in WALL} for r in runs]


@pytest.fixture
def killed_at(monkeypatch):
    """killed_at(method, n): the n-th checkpoint `method` writes is the last thing its process does."""

    def arm(method, n):
        real, count = Checkpoint.save, {"n": 0}

        def save(self, sim):
            path = real(self, sim)
            if sim.method.name == method:
                count["n"] += 1
                if count["n"] == n:
                    monkeypatch.setattr(Checkpoint, "save", real)
                    raise KeyboardInterrupt
            return path

        monkeypatch.setattr(Checkpoint, "save", save)

    return arm


def test_killed_run_resumes_from_its_checkpoint(aedfl_npz, tmp_path, killed_at):
    data = ["--dataset", f"npz:{aedfl_npz}", "--methods", "fedavg,aedfl"]
    runner = CliRunner()
    whole = tmp_path / "whole"
    assert runner.invoke(app, [*ARGS, *data, "--out", str(whole)]).exit_code == 0
    out = tmp_path / "run"
    killed_at("aedfl", 7)
    res = runner.invoke(app, [*ARGS, *data, "--out", str(out)])
    assert res.exit_code == 130, res.output
    assert f"{out / 'checkpoints'} holds the checkpoints of aedfl" in res.output
    assert [r["method"] for r in json.loads((out / "results.json").read_text())["runs"]] == ["fedavg"]
    res = runner.invoke(app, [*ARGS, *data, "--out", str(out)])
    assert res.exit_code == 2 and "holds the checkpoints of unfinished runs of aedfl; continue them with --resume" \
        in res.output
    res = runner.invoke(app, [*ARGS, *data, "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert "running aedfl (from its checkpoint)" in res.output
    assert comparable(out) == comparable(whole)
    assert not list((out / "checkpoints").glob("*.pt"))


def test_a_checkpoint_of_another_run_is_refused(aedfl_npz, tmp_path, killed_at):
    data = ["--dataset", f"npz:{aedfl_npz}", "--methods", "aedfl-0"]
    out = tmp_path / "run"
    killed_at("aedfl-0", 3)
    assert CliRunner().invoke(app, [*ARGS, *data, "--out", str(out)]).exit_code == 130
    (out / "results.json").unlink(missing_ok=True)
    res = CliRunner().invoke(app, [*ARGS, *data, "--lr", "0.1", "--out", str(out), "--resume"])
    assert res.exit_code == 2 and "aedfl-0.pt is the checkpoint of another run (differs in config.lr)" in res.output
    assert "delete" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, [*ARGS, *data, "--lr", "0.1", "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / "checkpoints" / "aedfl-0.pt").exists()


def test_a_damaged_checkpoint_is_a_user_error(aedfl_npz, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "aedfl-0.pt").write_bytes(b"not a checkpoint")
    res = CliRunner().invoke(app, [*ARGS, "--dataset", f"npz:{aedfl_npz}", "--methods", "aedfl-0", "--out", str(out),
                                   "--resume"])
    assert res.exit_code == 2 and "aedfl-0.pt (checkpoint) cannot be read" in res.output
    assert "delete" in res.output and "Traceback" not in res.output
