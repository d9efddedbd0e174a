"""How a command ends on an exception: a user error is one line and exit code 2, anything else is a bug (traceback,
a line saying so, exit code 1); DFLBENCH_DEBUG=1 re-raises; typer's own exits pass through."""

from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from dflbench.cli.main import app

runner = CliRunner()
TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=8,patch_size=4,embed_dim=16,depth=2,num_heads=2",
        "--device", "cpu", "--threads", "1", "--epochs", "1"]


def _lines(output: str) -> list[str]:
    """Non-blank lines, less run warnings printed before the error (e.g. the random-backbone note)."""
    return [line for line in output.splitlines() if line.strip() and not line.startswith("warning: ")]


def _user_error(args, *needles, env=None) -> str:
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and "bug" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_user_errors_raised_by_the_root_and_by_packages_are_one_line(tmp_path):
    out = ["--out", str(tmp_path / "o")]
    _user_error(["p2pft", "--threads", "-1", *out], "--threads must be >= 0")
    _user_error(["p2pft", "--runtime", "mpi", *out], "unknown runtime 'mpi'")
    # a package's ValueError on user input, named by the option it came from
    _user_error(["p2pft", *TINY, "--policy", "last_two", *out], "--policy: unknown freezing policy 'last_two'")
    _user_error(["p2pft", *TINY, "--momentum", "1.5", *out], "--momentum must be a number in [0, 1), got 1.5")
    _user_error(["topology", "show", "ring", "--nodes", "0"], "topology 'ring' on 0 nodes:", "node count")
    _user_error(["p2pft", *TINY[:2], "--model-kwargs", "img_size=8,patch_size=4,colour=1", "--device", "cpu",
                 "--algorithms", "local", *out], "--model-kwargs", "unexpected keyword argument 'colour'")
    # a path the user gave that does not exist
    _user_error(["p2pft", *TINY, "--topology", f"adjacency:{tmp_path / 'none.txt'}", "--algorithms", "p2pft", *out],
                "adjacency file", "does not exist")


def test_adjacency_of_the_wrong_size_is_a_user_error(tmp_path):
    adj = tmp_path / "adj.txt"
    adj.write_text("1 1 0\n0 1 1\n1 0 1\n")
    _user_error(["p2pft", *TINY, "--topology", f"adjacency:{adj}", "--algorithms", "p2pft", "--out",
                 str(tmp_path / "o")], "has shape (3, 3) but the run has 4 nodes")


def test_divergence_is_a_user_error_naming_the_learning_rate(tmp_path):
    _user_error(["p2pft", *TINY, "--algorithms", "p2pft", "--lr", "1e38", "--out", str(tmp_path / "o")],
                "--lr: ", "NaN/Inf", "lower the learning rate")


@pytest.mark.parametrize("exc", [ValueError("internal invariant broken"), RuntimeError("internal invariant broken")])
def test_any_other_exception_is_a_bug_with_traceback_and_exit_1(monkeypatch, tmp_path, exc):
    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr("dflbench.cli.p2pft.run_p2pft", broken)
    result = runner.invoke(app, ["p2pft", *TINY, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    lines = _lines(result.output)
    assert lines[0] == "Traceback (most recent call last):"
    assert f"{type(exc).__name__}: internal invariant broken" in lines
    assert lines[-1].startswith(f"bug: this is a bug in dflbench {version('dflbench')}")
    assert "report it" in lines[-1] and "traceback" in lines[-1]
    assert not any(line.startswith("error:") for line in lines)


def test_debug_env_re_raises_user_errors_and_bugs(monkeypatch, tmp_path):
    result = runner.invoke(app, ["p2pft", "--threads", "-1"], env={"DFLBENCH_DEBUG": "1"})
    assert isinstance(result.exception, ValueError) and "--threads" in str(result.exception)

    def broken(*args, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr("dflbench.cli.p2pft.run_p2pft", broken)
    result = runner.invoke(app, ["p2pft", *TINY, "--out", str(tmp_path / "o")], env={"DFLBENCH_DEBUG": "1"})
    assert isinstance(result.exception, KeyError)


def test_typer_exit_passes_through(monkeypatch, tmp_path):
    """`dflbench demo` exits 1 when the claim fails: that is the command's answer, not a bug."""

    class Run:
        results = {"partition": {"sizes": [], "class_histograms": []}, "runs": [],
                   "config": {"model": "m", "epochs": 1, "split": "classes"}, "data": {"name": "d"}}

    monkeypatch.setattr("dflbench.cli.demo.run_p2pft", lambda cfg, out: Run())
    monkeypatch.setattr("dflbench.cli.demo.check_claim", lambda results: (False, "claim does NOT hold"))
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "claim does NOT hold" in result.output
    assert "Traceback" not in result.output and "bug" not in result.output


def test_a_run_aborted_by_its_environment_is_one_line_and_exit_3(monkeypatch, tmp_path):
    from dflbench.runtime.comm import PeerFailure

    def dead_peer(*args, **kwargs):
        raise PeerFailure(0, 2, RuntimeError("Connection closed by peer [127.0.0.1]:1234"), "rerun with --resume")

    monkeypatch.setattr("dflbench.cli.p2pft.run_p2pft", dead_peer)
    result = runner.invoke(app, ["p2pft", *TINY, "--out", str(tmp_path)])
    assert result.exit_code == 3, result.output
    lines = _lines(result.output)
    assert lines == ["aborted: rank 0: the exchange with rank 2 failed (Connection closed by peer [127.0.0.1]:1234); "
                     "rank 2 died or stopped answering within the peer timeout; rerun with --resume"], lines
    assert "Traceback" not in result.output
