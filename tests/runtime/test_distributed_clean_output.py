"""A clean distributed AEDFL run under torchrun prints no torch deprecation notice, no traceback and none of
TensorPipe's "pipe closed" / "eof" lines as the agents leave (`dflbench.runtime.backend.quiet_transport`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="needs torchrun")
def test_a_clean_distributed_aedfl_run_prints_no_warnings(band_npz, tmp_path):
    data = band_npz(side=16, train=20, test=5, noise=40, bright=200)
    out = tmp_path / "o"
    proc = subprocess.run([str(TORCHRUN), "--nproc-per-node", "2", "-m", "dflbench", "aedfl", "--runtime",
                           "distributed", "--methods", "aedfl", "--devices", "2", "--max-updates", "3",
                           "--batch-size", "8", "--eval-samples", "20", "--dataset", data, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    noise = [line for line in proc.stderr.splitlines()
             if any(word in line for word in ("Warning", "Traceback", "tensorpipe", "pipe closed", "eof"))]
    assert noise == [], proc.stderr
    assert json.loads((out / "results.json").read_text())["runs"][0]["method"] == "aedfl"
