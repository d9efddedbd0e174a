"""The output folder: created and probed before any data loads, and a finished result is never overwritten or
dropped: another configuration or other methods are refused (one line: what is there, --resume, another --out,
--overwrite); --resume with another method list keeps every finished method."""

import json

import pytest
from typer.testing import CliRunner

from dflbench.cli.main import app

runner = CliRunner()


def methods_in(out) -> list[str]:
    return [r["method"] for r in json.loads((out / "results.json").read_text())["runs"]]


def test_an_out_that_cannot_hold_results_is_refused_before_the_data_loads(tmp_path, cli):
    file = tmp_path / "file"
    file.write_text("x")
    missing = tmp_path / "missing.npz"                              # the data would fail, but --out is checked first
    line = cli.one_error_line(cli.aedfl_args(missing, file))
    assert f"--out {file} is a file, not a folder" in line
    line = cli.one_error_line(cli.aedfl_args(missing, file / "sub"))
    assert f"--out {file / 'sub'}: cannot write there" in line
    assert "--out" in cli.one_error_line(["p2pft", "--out", str(file), "--dataset", f"npz:{missing}"])
    assert "--out" in cli.one_error_line(["reproduce", "aedfl-emnist-lenet5", "--scale", "smoke", "--out", str(file)])


def test_a_folder_of_other_methods_or_another_setting_is_refused_until_resume_or_overwrite(tmp_path, cli):
    data, out = cli.write_npz(tmp_path / "d.npz"), tmp_path / "o"
    assert runner.invoke(app, cli.aedfl_args(data, out, "--methods", "fedavg,fedbuff")).exit_code == 0
    before = (out / "results.json").read_bytes()
    line = cli.one_error_line(cli.aedfl_args(data, out, "--methods", "fedbuff"))
    assert line == (f"error: {out / 'results.json'} holds finished runs of fedavg, fedbuff, and --methods fedbuff "
                    "would drop fedavg; keep them with --resume (runs only the methods not there yet), give another "
                    "--out, or replace them with --overwrite")
    line = cli.one_error_line(cli.aedfl_args(data, out, "--methods", "fedavg,fedbuff", "--lr", "0.01"))
    assert "of another configuration (differs in lr); give another --out, or replace them with --overwrite" in line
    assert "--overwrite" in cli.one_error_line(cli.aedfl_args(data, out, "--lr", "0.01", "--resume"))
    assert "give one of them" in cli.one_error_line(cli.aedfl_args(data, out, "--resume", "--overwrite"))
    assert (out / "results.json").read_bytes() == before             # nothing refused touched the results
    # the same setting again (a superset of methods) reruns: nothing is lost
    assert runner.invoke(app, cli.aedfl_args(data, out, "--methods", "fedavg,fedbuff,ad-psgd")).exit_code == 0
    assert methods_in(out) == ["fedavg", "fedbuff", "ad-psgd"]
    result = runner.invoke(app, cli.aedfl_args(data, out, "--methods", "fedbuff", "--lr", "0.01", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert methods_in(out) == ["fedbuff"]


def test_resume_with_another_method_list_keeps_every_finished_method(tmp_path, cli):
    data, out = cli.write_npz(tmp_path / "d.npz"), tmp_path / "o"
    assert runner.invoke(app, cli.aedfl_args(data, out, "--methods", "fedavg,fedbuff")).exit_code == 0
    first = json.loads((out / "results.json").read_text())["runs"]
    result = runner.invoke(app, cli.aedfl_args(data, out, "--methods", "ad-psgd,fedbuff", "--resume"))
    assert result.exit_code == 0, result.output
    assert "kept fedavg, fedbuff (finished earlier, not run again); running ad-psgd" in result.output
    table = result.output[result.output.index("accuracy on"):]
    assert "ad-psgd" in table and "fedbuff" in table and "fedavg" not in table      # the table: the asked ones
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["method"] for r in runs] == ["ad-psgd", "fedbuff", "fedavg"]
    assert runs[1] == first[1] and runs[2] == first[0]                              # as written, not run again
    assert len((out / "results.csv").read_text().splitlines()) == 4


def test_p2pft_keeps_finished_algorithms_and_unfinished_checkpoints(tmp_path, cli):
    out = tmp_path / "o"
    assert runner.invoke(app, [*cli.TINY, "--algorithms", "local,pushpull", "--out", str(out)]).exit_code == 0
    line = cli.one_error_line([*cli.TINY, "--algorithms", "local", "--out", str(out)])
    assert "holds finished runs of local, pushpull, and --algorithms local would drop pushpull; keep them with " \
           "--resume" in line
    assert "differs in lr" in cli.one_error_line([*cli.TINY, "--algorithms", "local,pushpull", "--lr", "0.01", "--out",
                                              str(out)])
    result = runner.invoke(app, [*cli.TINY, "--algorithms", "central", "--resume", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [r["algorithm"] for r in results["runs"]] == ["central", "local", "pushpull"]
    assert results["config"]["algorithms"] == ["central", "local", "pushpull"]
    (out / "results.json").unlink()                                  # an interrupted run leaves its checkpoints
    line = cli.one_error_line([*cli.TINY, "--algorithms", "local", "--out", str(out)])
    assert line == (f"error: {out / 'checkpoints'} holds unfinished runs of central, local, pushpull; continue them "
                    "with --resume, give another --out, or replace them with --overwrite")
    result = runner.invoke(app, [*cli.TINY, "--algorithms", "local,pushpull", "--resume", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"resuming from {out / 'checkpoints'}: local (epoch 1), pushpull (epoch 1) of 1 epochs" in result.output


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_the_flags_are_documented(flag):
    for command in ("aedfl", "p2pft"):
        assert flag in runner.invoke(app, [command, "--help"]).output
