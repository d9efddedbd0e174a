"""bench/compare.py (same-run ratios of a run against the committed baseline, and --update), bench/inject.py (the
1.5x slowdown and its bookkeeping) and bench/calibrate.py's summary."""

import ast
import importlib.util
import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare, inject, calibrate = load("compare"), load("inject"), load("calibrate")


def write(folder: Path, name: str, ratio: float) -> None:
    (folder / f"{name}.json").write_text(json.dumps({"ratio": ratio, "fast_s": 1.0}))


@pytest.fixture
def run(tmp_path):
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"ratios": {"ratio-a": 2.0, "ratio-b": 4.0, "ratio-gone": 1.0}}))
    results = tmp_path / "results"
    results.mkdir()
    return base, results


def test_drop_beyond_tolerance_is_a_regression(run, capsys):
    base, results = run
    write(results, "ratio-a", 1.6)                 # -20%: within 25%
    write(results, "ratio-b", 2.9)                 # -27.5%
    write(results, "ratio-new", 3.0)
    assert compare.main([str(results), "--baseline", str(base), "--tolerance", "0.25"]) == 1
    out = capsys.readouterr().out
    assert "ok         ratio-a: 1.60x" in out and "REGRESSED  ratio-b: 2.90x" in out
    assert "new        ratio-new" in out and "not run    ratio-gone" in out


def test_no_regression_exit_zero_and_bench_json_path(run):
    base, results = run
    write(results, "ratio-a", 2.5)
    write(results, "ratio-b", 3.1)
    (results / "bench.json").write_text("{}")      # the pytest-benchmark file: its folder is read
    assert compare.main([str(results / "bench.json"), "--baseline", str(base)]) == 0
    assert compare.main([str(results), "--baseline", str(base), "--tolerance", "0.2"]) == 1


def test_stored_baseline_names_the_ratio_records():
    names = json.loads((ROOT / "bench" / "baseline.json").read_text())["ratios"]
    assert "ratio-test_fedavg_round_vs_plain_loop-100" in names and all(n.startswith("ratio-test_") for n in names)


def test_update_writes_the_median_of_the_runs_and_a_run_passes_against_it(tmp_path, capsys):
    runs = []
    for i, (a, b) in enumerate([(2.0, 5.0), (2.4, 4.0), (1.8, 4.4)]):
        runs.append(tmp_path / f"run-{i}")
        runs[-1].mkdir()
        write(runs[-1], "ratio-a", a)
        write(runs[-1], "ratio-b", b)
    base = tmp_path / "baseline.json"
    assert compare.main(["--update", *map(str, runs), "--baseline", str(base)]) == 0
    record = json.loads(base.read_text())
    assert record["ratios"] == {"ratio-a": 2.0, "ratio-b": 4.4} and record["runs"] == 3 and record["commit"]
    only_a = tmp_path / "only-a"
    only_a.mkdir()
    write(only_a, "ratio-a", 3.0)
    compare.main(["--update", str(only_a), "--baseline", str(base)])
    assert json.loads(base.read_text())["ratios"] == {"ratio-a": 3.0, "ratio-b": 4.4}     # b kept
    compare.main(["--update", *map(str, runs), "--baseline", str(base)])
    assert compare.main([str(runs[1]), "--baseline", str(base)]) == 0          # 4.0 vs 4.4: -9%
    write(runs[1], "ratio-b", 2.9)                                              # -34%
    assert compare.main([str(runs[1]), "--baseline", str(base)]) == 1
    assert "REGRESSED  ratio-b: 2.90x vs baseline 4.40x (-34%)" in capsys.readouterr().out


def test_slowed_costs_the_factor_in_thread_cpu_time():
    def work():
        """Pure-Python CPU work; returns the thread CPU time it took itself."""
        start, x = time.thread_time(), 0
        for i in range(200_000):
            x += i * i
        return time.thread_time() - start

    slow = inject.slowed(work, 1.5)
    assert slow.__wrapped__ is work
    for _ in range(3):                   # the same call measured inside and around the wrapper: load cannot move it
        start = time.thread_time()
        inner = slow()
        total = time.thread_time() - start
        assert 1.45 < total / inner < 1.6


def test_every_target_names_real_functions_and_ci_benchmarks(monkeypatch):
    for specs, guards in inject.TARGETS.values():
        for spec in specs:
            owner, attr = inject.resolve(spec)
            original = getattr(owner, attr)
            assert callable(original), spec
            monkeypatch.setattr(owner, attr, original)          # restored after the test
            inject.patch(spec, 1.5)
            assert getattr(owner, attr).__wrapped__ is original
        for guard in guards:
            file, _, test = guard.partition("::")
            tree = ast.parse((ROOT / file).read_text())
            assert test in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}, guard


def test_failed_tests_reads_junit(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="bench.test_method_steps" name="test_fedbuff_server_step_vs_plain_loop"><failure/>'
        '</testcase><testcase classname="bench.test_method_steps" name="test_aedfl_update_vs_plain_sgd[aedfl-0]"/>'
        '<testcase classname="bench.test_fedavg_loop" name="test_fedavg_round_vs_plain_loop[10]"><error/></testcase>'
        '</testsuite></testsuites>')
    assert inject.failed_tests(junit) == ["bench/test_method_steps.py::test_fedbuff_server_step_vs_plain_loop",
                                          "bench/test_fedavg_loop.py::test_fedavg_round_vs_plain_loop[10]"]


def test_inject_rejects_bad_input(capsys):
    assert inject.main(["no-such-target"]) == 2
    assert "unknown target 'no-such-target'; valid targets: aedfl-update" in capsys.readouterr().err
    assert inject.main(["--factor", "1.0"]) == 2


def test_calibration_summary_per_load(tmp_path):
    for load, ratios in {"idle": [2.0, 2.2], "cpu": [1.9, 2.1, 2.0]}.items():
        for i, ratio in enumerate(ratios):
            folder = tmp_path / f"{load}-{i}"
            folder.mkdir()
            (folder / "ratio-a.json").write_text(json.dumps({"ratio": ratio, "at_least": 1.5}))
    table = calibrate.summarise(tmp_path)
    assert table["ratio-a"]["floor"] == 1.5
    assert table["ratio-a"]["loads"]["idle"] == {"min": 2.0, "median": 2.1, "max": 2.2, "n": 2}
    assert table["ratio-a"]["loads"]["cpu"] == {"min": 1.9, "median": 2.0, "max": 2.1, "n": 3}
    assert table["ratio-a"]["window"] == pytest.approx([1.05 * 2.2 / 1.5, 0.9 * 1.9])


def test_calibration_run_beside_a_neighbour_reports_pytest_exit(tmp_path):
    ok = calibrate.run_once(["--version"], "cpu", tmp_path / "cpu-0")
    bad = calibrate.run_once([str(tmp_path / "missing_test.py")], "idle", tmp_path / "idle-0")
    assert ok["passed"] and ok["exit"] == 0 and (tmp_path / "cpu-0").is_dir()
    assert not bad["passed"] and bad["exit"] == 4          # pytest: file not found
