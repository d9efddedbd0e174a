"""bench/peers (issue 17's peers harness) without any peer framework: the table's arithmetic on fake runner reports,
the report parsing, failures shown as failures, the workload file against dflbench's own partitioner and test
shuffle, and the harness spawning real runners (the plain loop and dflbench) on a tiny synthetic workload."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dflbench.data import load_dataset, partition

PEERS = Path(__file__).resolve().parent.parent / "bench" / "peers"
sys.path.insert(0, str(PEERS))                                   # the runners import `common` as a sibling


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"peers_{name}", PEERS / f"{name}.py")
    mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)     # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


harness, prepare, common = load("harness"), load("prepare"), load("common")


def fake(name, t0, ends, acc, framework=None):
    return {"name": name, "t0": t0, "framework": framework or name, "version": "1.0", "round_ends": ends,
            "accuracy": acc}


def test_summarize_medians_of_rounds_first_result_and_accuracy():
    records = [fake("a", 100.0, [103.0, 104.0, 105.0], 0.5),           # 1.0 s/round, first 3.0
               fake("a", 200.0, [205.0, 208.0, 211.0], 0.7),           # 3.0 s/round, first 5.0
               fake("a", 300.0, [304.0, 306.0, 308.0], 0.6),           # 2.0 s/round, first 4.0
               fake("b", 0.0, [1.0, 1.5], 0.9)]
    a, b = harness.summarize(records, ["a", "b"])
    assert (a["s_per_round"], a["first_result"], a["accuracy"], a["runs"]) == (2.0, 4.0, 0.6, "3/3")
    assert (b["s_per_round"], b["first_result"], b["accuracy"], b["error"]) == (0.5, 1.0, 0.9, None)


def test_failures_are_counted_and_an_all_failed_runner_shows_its_error():
    records = [fake("a", 0.0, [1.0, 3.0], 0.5), {"name": "a", "error": "timed out after 5 s"},
               {"name": "c", "error": "ImportError: no module named flgo"}]
    a, c = harness.summarize(records, ["a", "c"])
    assert a["runs"] == "1/2" and a["s_per_round"] == 2.0 and a["error"] == "timed out after 5 s"
    assert c["runs"] == "0/1" and "s_per_round" not in c
    table = harness.format_table([a, c]).splitlines()
    assert table[2] == "| a | 1.0 | 2.000 | 1.0 | 0.500 | 1/2 |"
    assert table[3] == "| c | - | did not run: ImportError: no module named flgo | - | - | 0/1 |"


def test_one_round_cannot_give_a_time_per_round():
    with pytest.raises(ValueError, match="needs >= 2"):
        harness.summarize([fake("a", 0.0, [1.0], 0.5)], ["a"])


def test_parse_output_takes_the_last_json_line_after_framework_logs():
    out = 'INFO round 1\n{"not": "this"}\nMetrics at iteration 2 ():\n{"accuracy": 0.5}\n   \n'
    assert harness.parse_output(out) == {"accuracy": 0.5}
    with pytest.raises(ValueError, match="no JSON report"):
        harness.parse_output("INFO only logs\n{broken json\n")


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """8 clients over 400 random 28x28 images, 2 per round, 2 rounds; 50 evaluation samples of 60."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (400, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (400,), generator=g)
    x_test = torch.randint(0, 256, (60, 28, 28), dtype=torch.uint8, generator=g)
    y_test = torch.randint(0, 10, (60,), generator=g)
    path = tmp_path_factory.mktemp("peers") / "w.npz"
    prepare.write_workload(path, x, y, x_test, y_test, clients=8, clients_per_round=2, rounds=2, eval_samples=50,
                           seed=3)
    return path, x, y, x_test, y_test


def test_workload_is_dflbenchs_partition_and_evaluation_set(workload):
    """What the peers read equals what `dflbench aedfl --dataset npz:PATH` derives from the same file: its
    partitioner on the stored labels, and the test set shuffled with seed + 1 (recipes.aedfl.load_device_data)."""
    path, x, y, x_test, y_test = workload
    w = common.Workload.load(path)
    img = load_dataset(f"npz:{path}")
    expected = partition(img.y_train.numpy(), 8, "dirichlet:0.5", seed=3, num_classes=10)
    assert len(w.parts) == 8 and all(np.array_equal(p, q) for p, q in zip(w.parts, expected.indices))
    assert sorted(np.concatenate(w.parts).tolist()) == list(range(400))
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(4))[:50]
    assert np.array_equal(w.x_eval, x_test[perm].numpy()) and np.array_equal(w.y_eval, y_test[perm].numpy())
    assert torch.equal(img.x_train[:, 0], x) and np.array_equal(w.x, x.numpy())
    assert (w.clients, w.clients_per_round, w.rounds, w.batch, w.local_steps, w.lr) == (8, 2, 2, 32, 5, 0.05)


def test_harness_runs_the_plain_loop_and_dflbench_as_processes(workload):
    path = workload[0]
    records = [harness.run_one(name, path, Path("/nonexistent/python"), timeout=300) for name in ("plain", "dflbench")]
    for r in records:
        assert "error" not in r, r
        assert len(r["round_ends"]) == 2 and r["t0"] < r["round_ends"][0] <= r["round_ends"][1]
        assert 0.0 <= r["accuracy"] <= 1.0 and r["accuracy"] * 50 == round(r["accuracy"] * 50)   # of 50 samples
    rows = harness.summarize(records, ["plain", "dflbench"])
    assert [r["runs"] for r in rows] == ["1/1", "1/1"]
    missing = harness.run_one("pfl", path, Path("/nonexistent/python"), timeout=300)
    assert "does not exist" in missing["error"] and "make bench-peers" in missing["error"]


def test_a_failing_runner_reports_its_last_error_line(tmp_path, monkeypatch):
    (tmp_path / "run_bad.py").write_text("import sys\nprint('log line')\nsys.exit('bad things happened')\n")
    report = json.dumps({"framework": "g", "version": "0", "round_ends": [1.0, 2.0], "accuracy": 0.25})
    (tmp_path / "run_good.py").write_text(f"print('log')\nprint({report!r})\n")
    monkeypatch.setattr(harness, "HERE", tmp_path)
    monkeypatch.setattr(harness, "RUNNERS", {"bad": ("run_bad.py", False), "good": ("run_good.py", False)})
    assert harness.run_one("bad", tmp_path / "w.npz", tmp_path, timeout=60) == {"name": "bad",
                                                                                "error": "bad things happened"}
    good = harness.run_one("good", tmp_path / "w.npz", tmp_path, timeout=60)
    assert good["accuracy"] == 0.25 and good["framework"] == "g"
