"""bench/gpu.sh parses, and its AEDFL-at-scale stage runs on CPU (`DEVICE=cpu SCALE_ONLY=1`) on a tiny npz data set,
writing one record per run with device-steps/s and peak memory, and the summary's markdown rows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu.sh")], check=True)


def test_gpu_script_scale_stage_runs_on_cpu(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (240, 28, 28), dtype=np.uint8),
             y_train=np.arange(240) % 10, x_test=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
             y_test=np.arange(40) % 10)
    env = {**os.environ, "PY": sys.executable, "DEVICE": "cpu", "SCALE_ONLY": "1", "SCALE_DEVICES": "4",
           "SCALE_UPDATES": "1", "TABLE1_DEVICES": "4", "TABLE1_UPDATES": "1", "DATASET": f"npz:{tmp_path / 'd.npz'}",
           "SCALE_JSON": str(tmp_path / "scale.jsonl"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "scale.jsonl").read_text().splitlines()]
    assert [(r["devices"], r["updates"], r["evaluations"] > 0) for r in records] == [(4, 1, False), (4, 1, True)]
    assert all(r["device_steps"] == 4 * 5 and r["device_steps_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in records)
    assert out.stdout.count("| cpu | aedfl | 4 | 1 |") == 2
