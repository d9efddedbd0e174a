"""Fault injection under torchrun, as a user meets it: 3 CPU ranks (gloo / TensorPipe), rank 2 killed (SIGKILL) or
stopped (SIGSTOP) mid-run, for `dflbench p2pft --runtime distributed` and `dflbench aedfl --runtime distributed`.
Every surviving rank ends within --peer-timeout + 10 s of the fault with one line naming rank 2, the launch exits
non-zero, what finished is on disk (P2P-FT: the checkpointed epochs; AEDFL: the survivors' partial record), and
the same command with --resume completes the run. A stopped rank is killed by the test once the survivors have
ended (torchrun itself would SIGKILL it 30 s after their exit)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TORCHRUN = Path(sys.executable).with_name("torchrun")
RANKS, VICTIM, PEER_TIMEOUT = 3, 2, 4.0

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(not TORCHRUN.exists(), reason="needs torchrun next to the Python that runs the tests"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the ranks' pids and states from /proc"),
]

TINY_VIT = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=8,patch_size=4,embed_dim=16,depth=2,"
            "num_heads=2"]


def _bands(path: Path, side: int, train: int, test: int) -> str:
    """4 classes of side x side uint8 images: noise plus a bright band of rows per class (seeded)."""
    g = np.random.default_rng(0)
    k = side // 4

    def split(per_class):
        y = np.repeat(np.arange(4), per_class)
        x = g.integers(0, 40, size=(len(y), side, side))
        for c in range(4):
            x[y == c, k * c: k * (c + 1), :] += 200
        return x.astype(np.uint8), y.astype(np.int64)

    (x_tr, y_tr), (x_te, y_te) = split(train), split(test)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return f"npz:{path}"


class Launch:
    """`torchrun --nproc-per-node 3 -m dflbench ARGS` in its own session, its output (all ranks) in `log`. torchrun
    checks its workers every `--monitor-interval` s (0.1 by default) and SIGTERMs the survivors once one died, which
    races with the survivors' own detection (up to --peer-timeout when they are not talking to the dead rank); the
    interval is set past the test's limit so the test sees dflbench's detection, the thing under test."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        with open(log, "w") as fh:
            self.proc = subprocess.Popen([str(TORCHRUN), "--nproc-per-node", str(RANKS), "--monitor-interval",
                                          str(PEER_TIMEOUT + 40), "-m", "dflbench", *args],
                                         stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"torchrun ended before {what}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.text()}"
            time.sleep(0.1)

    def ranks(self) -> dict[int, int]:
        """{rank: pid} of the worker processes (torchrun's children with RANK in their environment)."""
        found = {}
        for pid in subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = [e[5:] for e in env if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0])] = int(pid)
        return found

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie not yet reaped by torchrun counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _inject(run: Launch, sig: signal.Signals) -> float:
    """Send `sig` to rank 2; wait until the other ranks have ended (killing a stopped rank 2 then); return the
    seconds from the fault to the survivors' end. torchrun's exit status is left in run.proc.returncode."""
    pids = run.ranks()
    assert sorted(pids) == list(range(RANKS)), pids
    survivors = [pid for rank, pid in pids.items() if rank != VICTIM]
    start = time.monotonic()
    os.kill(pids[VICTIM], sig)
    limit = PEER_TIMEOUT + 10
    while any(_running(pid) for pid in survivors) and time.monotonic() - start < limit + 30:
        time.sleep(0.05)
    ended = time.monotonic() - start
    if sig == signal.SIGSTOP:
        os.kill(pids[VICTIM], signal.SIGKILL)
    run.proc.wait(60)
    return ended


def _rank_tracebacks(text: str) -> int:
    """Tracebacks printed by the ranks (torchrun's own ChildFailedError traceback, its report that a worker
    failed, is not dflbench's)."""
    lines = text.splitlines()
    return sum(1 for k, line in enumerate(lines) if line.startswith("Traceback")
               and not (k + 1 < len(lines) and "torchrun" in lines[k + 1]))


def _fault(args: list[str], tmp_path: Path, ready, what: str, sig: signal.Signals) -> str:
    """Launch `args`, wait until `ready(run)`, inject `sig` into rank 2; check that the survivors ended within
    --peer-timeout + 10 s, each with one line naming rank 2 (returned: {rank: line}), torchrun exited non-zero, and
    no rank printed a traceback, a warning or a TensorPipe line."""
    run = Launch(args, tmp_path / "run.log")
    try:
        run.wait_for(lambda: ready(run), 120, what)
        ended = _inject(run, sig)
    finally:
        run.kill()
    text = run.text()
    assert run.proc.returncode != 0 and ended < PEER_TIMEOUT + 10, (ended, text)
    assert _rank_tracebacks(text) == 0, text
    assert not [line for line in text.splitlines() if "tensorpipe" in line or "Warning" in line], text
    lines = {line.split(":")[1].strip(): line for line in text.splitlines() if line.startswith("aborted: ")}
    assert sorted(lines) == [f"rank {r}" for r in range(RANKS) if r != VICTIM], text
    return lines


def _resume(args: list[str], tmp_path: Path) -> str:
    """The same command with --resume, which must succeed; its output."""
    resumed = Launch([*args, "--resume"], tmp_path / "resume.log")
    try:
        assert resumed.proc.wait(180) == 0, resumed.text()
    finally:
        resumed.kill()
    return resumed.text()


def _p2pft_args(data: str, out: Path) -> list[str]:
    return ["p2pft", "--runtime", "distributed", "--backend", "gloo", "--device", "cpu", "--nodes", str(RANKS),
            "--algorithms", "pushpull", "--split", "iid", "--epochs", "60", "--batch-size", "4", "--lr", "0.05",
            *TINY_VIT, "--dataset", data, "--out", str(out), "--peer-timeout", str(PEER_TIMEOUT)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_p2pft_rank_fault_is_named_and_resume_completes(tmp_path, sig):
    out = tmp_path / "out"
    args = _p2pft_args(_bands(tmp_path / "bands.npz", 8, 30, 5), out)
    lines = _fault(args, tmp_path, lambda run: (out / "checkpoints" / f"pushpull.rank{VICTIM}.pt").exists(),
                   "first checkpoint", sig)
    assert all(f"rank {VICTIM} died or stopped answering" in line and "--resume" in line for line in lines.values())
    assert not (out / "results.json").exists()
    assert "resuming from" in _resume(args, tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert results["runs"][0]["algorithm"] == "pushpull" and results["runs"][0]["history"][-1]["epoch"] == 60


def _aedfl_args(data: str, out: Path) -> list[str]:
    return ["aedfl", "--runtime", "distributed", "--methods", "aedfl-dwu", "--devices", str(RANKS), "--max-updates",
            "100000", "--time-budget", "6", "--batch-size", "8", "--local-steps", "1", "--eval-samples", "20",
            "--dataset", data, "--out", str(out), "--peer-timeout", str(PEER_TIMEOUT)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_aedfl_rank_fault_is_named_partial_record_written_and_resume_completes(tmp_path, sig):
    out = tmp_path / "out"
    args = _aedfl_args(_bands(tmp_path / "bands.npz", 16, 40, 10), out)
    lines = _fault(args, tmp_path, lambda run: "aedfl-dwu: training on" in run.text(), "training", sig)
    failure = f"device {VICTIM} failed (rank {VICTIM}: no heartbeat for {PEER_TIMEOUT:g} s, killed, crashed or stopped)"
    assert all(failure in line and "--resume" in line for line in lines.values()), lines
    assert f"wrote the reporting devices' results to {out / 'results.json'} as a partial run" in lines["rank 0"]
    partial = json.loads((out / "results.json").read_text())["runs"][0]
    assert partial["partial"] is True and partial["failed_nodes"] == [VICTIM] and partial["stop_reason"] == failure
    assert [n["node"] for n in partial["per_node"]] == [r for r in range(RANKS) if r != VICTIM]
    assert f"running aedfl-dwu again (its run stopped early: {failure})" in _resume(args, tmp_path)
    record = json.loads((out / "results.json").read_text())["runs"][0]
    assert record["partial"] is False and record["failed_nodes"] == [] and record["stop_reason"] == "time budget"
    assert [n["node"] for n in record["per_node"]] == list(range(RANKS))
