"""bench/compare.py: same-run ratios of a benchmark run against bench/baseline.json."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_compare", ROOT / "bench" / "compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


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
    assert compare.main([str(results), "--baseline", str(base)]) == 1
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
