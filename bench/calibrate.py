"""Run CI's bench step repeatedly, idle and beside a busy neighbour, and summarise each ratio's distribution.

    python bench/calibrate.py [--runs 3] [--loads idle,cpu,memory] [--out .benchmarks/calibration] [-- PYTEST ARGS]

Each run is CI's bench line (`pytest bench` in quick mode, or the pytest arguments after `--`) in a fresh process;
its `ratio-*.json` records are written to OUT/<load>-<i>/. Loads: `idle` (nothing added), `cpu` (a
`while True: pass` process), `memory` (a process copying a 256 MB numpy array in a loop); the neighbour starts
before the run and is stopped after it. Prints, per benchmark and load, the ratio's min / median / max and the
floor, and the window a floor must lie in to hold on every run with margin (at most HOLD x the lowest ratio) and
still fail when the method's code is SLOWDOWN x slower (at least CATCH x the highest / SLOWDOWN); then how many runs
passed. Writes the same as OUT/summary.json (atomically). The benchmarks' floors are set from these distributions
(bench/RESULTS.md, "Calibration").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / ".benchmarks"
CI_LINE = ["bench", "-q", "-p", "no:cacheprovider", "--benchmark-min-rounds=1", "--benchmark-max-time=0.2",
           "--benchmark-warmup=off"]
# A floor holds with margin when it is at most HOLD x the lowest ratio seen, and catches a `SLOWDOWN` of the method's
# code when it is at least CATCH x the highest ratio seen / SLOWDOWN (bench/inject.py checks the latter directly).
HOLD, CATCH, SLOWDOWN = 0.9, 1.05, 1.5
NEIGHBOURS = {
    "idle": None,
    "cpu": "while True: pass",
    "memory": "import numpy as np\na = np.ones(1 << 25)\nb = np.empty_like(a)\nwhile True: np.copyto(b, a)",
}


def run_once(pytest_args: list[str], load: str, dest: Path) -> dict:
    """One CI bench run beside the `load` neighbour, its records written to `dest` (DFLBENCH_BENCH_RESULTS; the
    user's .benchmarks/ records stay as they were). {passed, exit, seconds, load1}."""
    dest.mkdir(parents=True, exist_ok=True)
    neighbour = None if NEIGHBOURS[load] is None else subprocess.Popen([sys.executable, "-c", NEIGHBOURS[load]])
    start = time.perf_counter()
    try:
        rc = subprocess.run([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "DFLBENCH_BENCH_RESULTS": str(dest)}
                            ).returncode
    finally:
        if neighbour is not None:
            neighbour.terminate()
            neighbour.wait()
    seconds = time.perf_counter() - start
    return {"passed": rc == 0, "exit": rc, "seconds": round(seconds, 1), "load1": os.getloadavg()[0]}


def summarise(out: Path) -> dict:
    """{benchmark: {load: {min, median, max, n}, "floor": at_least}} over the run folders in `out`."""
    table: dict[str, dict] = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        load = folder.name.rsplit("-", 1)[0]
        for record in folder.glob("ratio-*.json"):
            data = json.loads(record.read_text())
            entry = table.setdefault(record.stem, {"floor": data["at_least"], "ratios": {}})
            entry["ratios"].setdefault(load, []).append(data["ratio"])

    for entry in table.values():
        everything = [r for v in entry["ratios"].values() for r in v]
        entry["window"] = [CATCH * max(everything) / SLOWDOWN, HOLD * min(everything)]
        entry["loads"] = {load: {"min": min(v), "median": statistics.median(v), "max": max(v), "n": len(v)}
                          for load, v in entry.pop("ratios").items()}
    return table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, pytest_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, CI_LINE)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per load")
    ap.add_argument("--loads", default="idle,cpu,memory", help=f"comma-separated, of {', '.join(NEIGHBOURS)}")
    ap.add_argument("--out", type=Path, default=RESULTS / "calibration")
    args = ap.parse_args(own)
    loads = [x for x in args.loads.split(",") if x]
    bad = [x for x in loads if x not in NEIGHBOURS]
    if bad or args.runs < 1:
        print(f"error: --loads takes {', '.join(NEIGHBOURS)} and --runs >= 1; got {args.loads!r}, {args.runs}",
              file=sys.stderr)
        return 2
    runs = []
    for i in range(args.runs):
        for load in loads:                                       # alternate the loads run by run
            result = run_once(pytest_args, load, args.out / f"{load}-{i}")
            runs.append({"load": load, **result})
            print(f"{load} run {i}: {'passed' if result['passed'] else 'FAILED'} in {result['seconds']} s "
                  f"(load average {result['load1']:.1f})", flush=True)
    table = summarise(args.out)
    summary = {"runs": runs, "benchmarks": table}
    tmp = args.out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
    os.replace(tmp, args.out / "summary.json")
    for name, entry in sorted(table.items()):
        cells = ", ".join(f"{load} {s['min']:.2f}/{s['median']:.2f}/{s['max']:.2f}"
                          for load, s in sorted(entry["loads"].items()))
        low, high = entry["window"]
        verdict = "ok" if low <= entry["floor"] <= high else "OUTSIDE" if low <= high else "NO WINDOW"
        print(f"{name}: floor {entry['floor']} ({verdict}: holds and catches {SLOWDOWN}x in [{low:.3g}, {high:.3g}]);"
              f" min/median/max {cells}")
    for load in loads:
        mine = [r for r in runs if r["load"] == load]
        print(f"{load}: {sum(r['passed'] for r in mine)} of {len(mine)} runs passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
