"""Progress that reaches a log: `dflbench aedfl` with stdout to a file prints each method's start and end while it
runs, and evaluation lines (virtual time, accuracy, wall time) at most every `EVERY` wall seconds."""

import os
import re
import subprocess
import sys
import time

from typer.testing import CliRunner

from dflbench.cli import progress
from dflbench.cli.main import app
from dflbench.engines.async_sim import AsyncSimulator

TINY = ["--model", "lenet5", "--devices", "4", "--max-updates", "3", "--batch-size", "8", "--eval-interval", "0.1",
        "--eval-samples", "32"]


def test_progress_lines_reach_a_file_before_the_run_ends(aedfl_npz, tmp_path):
    log = tmp_path / "log.txt"
    with log.open("w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "dflbench", "aedfl", *TINY, "--dataset", f"npz:{aedfl_npz}",
                                 "--methods", "aedfl-0,ad-psgd", "--out", str(tmp_path / "run")],
                                stdout=stdout, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        snapshots = []                                   # what the log held while the command ran
        while proc.poll() is None:
            snapshots.append(log.read_text())
            time.sleep(0.05)
    out = log.read_text()
    assert proc.returncode == 0, out
    end = re.compile(r"^aedfl-0: accuracy [\d.]+ after [\d.]+ virtual s \([\d.]+ s wall\)$", re.M)
    during = [s for s in snapshots if end.search(s) and "ad-psgd: accuracy" not in s]
    assert during, snapshots[-1:]                         # aedfl-0's lines were there while ad-psgd ran
    assert re.search(r"^aedfl-0: started$", during[0], re.M), during[0]
    assert re.findall(r"^(\S+): started$", out, re.M) == ["aedfl-0", "ad-psgd"]
    assert out.index("ad-psgd: started") < out.index("ad-psgd: accuracy") < out.index("wrote")


def test_evaluation_lines_at_most_every_interval(aedfl_npz, tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "EVERY", 0.0)         # every evaluation the progress hook sees,
    monkeypatch.setattr(AsyncSimulator, "PROGRESS_EVERY", 0.0)    # and the hook sees every one
    res = CliRunner().invoke(app, ["aedfl", *TINY, "--dataset", f"npz:{aedfl_npz}", "--methods", "aedfl-0",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    evals = re.findall(r"^aedfl-0: virtual time ([\d.]+) s, accuracy ([\d.]+), (\d+)% done, (\d+) s wall$",
                       res.output, re.M)
    assert evals, res.output
    times = [float(t) for t, *_ in evals]
    assert times == sorted(set(times))                  # one line per evaluation, in order
    assert all(0 <= float(a) <= 1 and 0 <= int(p) < 100 for _, a, p, _ in evals)


def test_log_lines_rate():
    printed = []

    class Console:
        def print(self, text, **kwargs):
            printed.append(text)

    lines = progress.LogLines(Console(), every=3600.0)
    lines("m", 0.0, None)
    for k in range(10):
        lines("m", 0.1 * k, {"time": float(k), "accuracy": 0.5})
    assert printed == ["m: started"]                     # nothing within the interval
    lines.shown -= 3600.0
    lines("m", 0.5, {"time": 9.0, "accuracy": 0.5})
    lines("m", 0.6, {"time": 9.0, "accuracy": 0.5})
    assert printed[1:] == ["m: virtual time 9.0 s, accuracy 0.5000, 50% done, 0 s wall"]
