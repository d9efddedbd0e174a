"""Ctrl-C and SIGTERM: what is done stays written, one line says what was saved and the command that continues,
exit 130 / 143; the continued run says what it kept. A failing picture leaves results.json/csv, one warning line,
a non-zero exit."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dflbench.cli.p2pft as p2pft_cli
import dflbench.recipes.aedfl as aedfl_recipe
from dflbench.cli.errors import FIGURE_FAILED

DFLBENCH = Path(sys.executable).with_name("dflbench")


def _continue_args(line: str) -> list[str]:
    """The arguments of the command an interrupted run's line says continues it."""
    command = shlex.split(line.split("; continue with: ", 1)[1])
    assert command[0] == "dflbench"
    return command[1:]


def test_ctrl_c_after_a_finished_method_keeps_it_and_says_how_to_continue(cli, small_npz, tmp_path, monkeypatch):
    real = aedfl_recipe.run_aedfl

    def interrupted_after_the_first(cfg, on_method_done, **kwargs):
        def done(run, so_far):
            on_method_done(run, so_far)
            raise KeyboardInterrupt
        return real(cfg, on_method_done=done, **kwargs)

    monkeypatch.setattr(aedfl_recipe, "run_aedfl", interrupted_after_the_first)
    out = tmp_path / "o"
    args = cli.aedfl_args(small_npz, out, "--methods", "fedavg,fedbuff")
    result = cli.invoke(cli.app, args)
    assert result.exit_code == 130, result.output
    said, line = [x for x in result.output.strip().splitlines() if not x.endswith(": started")]
    assert said.startswith("fedavg: accuracy")
    assert line == (f"interrupted: {out / 'results.json'} holds the finished methods fedavg; continue with: "
                    f"{shlex.join(['dflbench', *args, '--resume'])}")
    assert [r["method"] for r in json.loads((out / "results.json").read_text())["runs"]] == ["fedavg"]
    monkeypatch.setattr(aedfl_recipe, "run_aedfl", real)
    result = cli.invoke(cli.app, _continue_args(line))
    assert result.exit_code == 0, result.output
    assert "kept fedavg (finished earlier, not run again); running fedbuff" in result.output
    assert [r["method"] for r in json.loads((out / "results.json").read_text())["runs"]] == ["fedavg", "fedbuff"]


def test_ctrl_c_before_anything_finished_says_so(cli, small_npz, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(aedfl_recipe, "run_aedfl", interrupted)
    args = cli.aedfl_args(small_npz, tmp_path / "o", "--resume")
    line = cli.one_error_line(args, code=130, prefix="interrupted: ")
    assert line == ("interrupted: no method had finished, nothing was saved; continue with: "
                    f"{shlex.join(['dflbench', *args])}")


def test_p2pft_interrupted_names_the_checkpointed_epochs(cli, tmp_path, monkeypatch):
    real = p2pft_cli.run_p2pft

    def interrupted_after_training(cfg, out, resume):
        real(cfg, out, resume=resume)
        raise KeyboardInterrupt

    monkeypatch.setattr(p2pft_cli, "run_p2pft", interrupted_after_training)
    out = tmp_path / "o"
    line = cli.one_error_line([*cli.TINY, "--algorithms", "local,pushpull", "--out", str(out)], code=130,
                              prefix="interrupted: ")
    assert line.startswith(f"interrupted: {out / 'checkpoints'} holds local at epoch 1 of 1, pushpull at epoch 1 of 1; "
                           "continue with: dflbench p2pft ") and line.endswith(" --resume")
    monkeypatch.setattr(p2pft_cli, "run_p2pft", real)
    result = cli.invoke(cli.app, _continue_args(line))
    assert result.exit_code == 0, result.output
    assert f"resuming from {out / 'checkpoints'}: local (epoch 1), pushpull (epoch 1) of 1 epochs" in result.output


@pytest.mark.skipif(not DFLBENCH.exists(), reason="needs the installed dflbench command")
def test_sigterm_mid_run_exits_143_with_the_finished_method_on_disk(cli, tmp_path):
    data, out = cli.write_npz(tmp_path / "d.npz", 400, 100), tmp_path / "o"
    args = cli.aedfl_args(data, out, "--methods", "fedavg,fedbuff")
    args[args.index("--max-updates") + 1] = "20"
    proc = subprocess.Popen([str(DFLBENCH), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "400"})
    deadline = time.monotonic() + 600
    while not (out / "results.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stdout + stderr
    assert stderr.strip().splitlines()[-1] == (
        f"terminated (SIGTERM): {out / 'results.json'} holds the finished methods fedavg; continue with: "
        f"{shlex.join(['dflbench', *args, '--resume'])}"), stderr
    assert "Traceback" not in stderr
    assert [r["method"] for r in json.loads((out / "results.json").read_text())["runs"]] == ["fedavg"]


def test_a_failing_picture_keeps_the_results_and_exits_non_zero(cli, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dflbench.recipes.p2pft.line_plot", disk_full)
    result = cli.invoke(cli.app, [*cli.TINY, "--algorithms", "local", "--out", str(tmp_path / "p")])
    assert result.exit_code == FIGURE_FAILED and "Traceback" not in result.output
    assert [w for w in result.output.splitlines() if "figure failed" in w] == [
        f"warning: the accuracy figure failed (OSError: [Errno 28] No space left on device); the results in "
        f"{tmp_path / 'p'} are complete"]
    assert json.loads((tmp_path / "p" / "results.json").read_text())["runs"][0]["algorithm"] == "local"
    assert (tmp_path / "p" / "results.csv").is_file()


def test_an_interrupted_reproduction_names_its_finished_seeds_and_checkpoints(cli, tmp_path, monkeypatch):
    def one_seed_then_ctrl_c(recipe, cfg, out, seeds, *callbacks):
        (out / "seed-0").mkdir(parents=True)
        (out / "seed-0" / "done.json").write_text("{}")
        (out / "seed-1").mkdir()
        (out / "seed-1" / "results.json").write_text("{}")
        (out / "seed-1" / "checkpoints").mkdir()
        (out / "seed-1" / "checkpoints" / "fedbuff.pt").write_text("")
        raise KeyboardInterrupt

    monkeypatch.setattr("dflbench.cli.reproduce.run_seeds", one_seed_then_ctrl_c)
    args = ["reproduce", "aedfl-emnist-lenet5", "--scale", "smoke", "--seeds", "2", "--out", str(tmp_path / "r")]
    result = cli.invoke(cli.app, args)
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"interrupted: {tmp_path / 'r'} holds finished seed-0; partial results in seed-1; checkpoints of "
        "seed-1/fedbuff, continued from there; continue with: "
        f"{shlex.join(['dflbench', *args])}")


def test_under_torchrun_the_line_starts_every_rank_again(cli, small_npz, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(aedfl_recipe, "run_aedfl", interrupted)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    args = cli.aedfl_args(small_npz, tmp_path / "o")
    line = cli.one_error_line(args, code=130, prefix="interrupted: ")
    assert line.endswith(f"continue with: {shlex.join(['torchrun', '--nproc-per-node', '4', '-m', 'dflbench', *args])}"
                         " --resume")
