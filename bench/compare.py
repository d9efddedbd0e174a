"""Compare a benchmark run's same-run ratios with the previous commit's saved record and report regressions.

    python bench/compare.py [RESULTS] [--baseline bench/baseline.json] [--tolerance 0.3]
    python bench/compare.py --update RUN [RUN ...] [--baseline bench/baseline.json]

RESULTS is the folder of `ratio-*.json` records that `make bench` writes (default .benchmarks), or the
pytest-benchmark JSON inside it (`.benchmarks/bench.json`: its folder is read). A ratio (reference time / method
time, measured alternately in one process) regresses when it falls more than `tolerance` below its value in the
baseline, the record committed with the code (CI has only the clean clone). Exit status 1 if any ratio regressed;
records without a baseline and baselines without a record are listed, not failed. Absolute times are not
compared: machines differ, ratios travel.

`--update` rewrites the baseline from one or more run folders (e.g. bench/calibrate.py's): each ratio they hold is
the median over the runs (the others keep their value), stamped with the commit (`git rev-parse HEAD`); commit it
with the change that moved it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The default threshold: above the largest drop below the baseline median that unmodified code showed in the
# calibration runs (idle, beside a CPU-heavy and beside a memory-heavy process; bench/RESULTS.md, "Calibration").
TOLERANCE = 0.3
ABOUT = ("Same-run ratios (reference time / method time) that bench/compare.py checks a run against: per ratio, the "
         "median of the runs named in `runs` (bench/compare.py --update), measured at `commit`. A run regresses "
         "when a ratio falls more than the tolerance below its value here.")


def load_ratios(results: Path) -> dict[str, float]:
    """{record name: ratio} from the `ratio-*.json` records in `results` (a folder, or a file inside it)."""
    folder = results if results.is_dir() else results.parent
    if not folder.is_dir():
        raise SystemExit(f"error: no benchmark results at {results}; run `make bench` first")
    return {p.stem: float(json.loads(p.read_text())["ratio"]) for p in sorted(folder.glob("ratio-*.json"))}


def compare(ratios: dict[str, float], baseline: dict[str, float], tolerance: float) -> tuple[list[str], bool]:
    """Report lines (one per benchmark) and whether any ratio regressed."""
    lines, regressed = [], False
    for name in sorted(set(ratios) | set(baseline)):
        if name not in baseline:
            lines.append(f"  new        {name}: {ratios[name]:.2f}x (no baseline)")
        elif name not in ratios:
            lines.append(f"  not run    {name}: baseline {baseline[name]:.2f}x")
        else:
            change = ratios[name] / baseline[name] - 1
            bad = change < -tolerance
            regressed |= bad
            lines.append(f"  {'REGRESSED' if bad else 'ok':<10} {name}: {ratios[name]:.2f}x vs baseline "
                         f"{baseline[name]:.2f}x ({change:+.0%})")
    return lines, regressed


def update(runs: list[Path], baseline: Path) -> dict:
    """Write `baseline` atomically: per ratio, the median over the run folders `runs` (ratios the runs lack keep
    their value from the existing baseline); returns the record."""
    seen: dict[str, list[float]] = {}
    for run in runs:
        for name, ratio in load_ratios(run).items():
            seen.setdefault(name, []).append(ratio)
    if not seen:
        raise SystemExit(f"error: no ratio-*.json records in {', '.join(map(str, runs))}; run `make bench` first")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    kept = json.loads(baseline.read_text())["ratios"] if baseline.is_file() else {}
    ratios = {**kept, **{name: round(statistics.median(v), 3) for name, v in seen.items()}}
    record = {"about": ABOUT, "commit": git.stdout.strip() or "unknown", "runs": len(runs),
              "ratios": dict(sorted(ratios.items()))}
    tmp = baseline.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, baseline)
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", type=Path, default=HERE.parent / ".benchmarks")
    ap.add_argument("--baseline", type=Path, default=HERE / "baseline.json")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE, help="allowed relative drop below the baseline")
    ap.add_argument("--update", type=Path, nargs="+", metavar="RUN",
                    help="rewrite the baseline from these run folders (median per ratio) instead of comparing")
    args = ap.parse_args(argv)
    if args.update:
        record = update(args.update, args.baseline)
        print(f"wrote {args.baseline}: {len(record['ratios'])} ratios, median of {record['runs']} runs at "
              f"{record['commit']}")
        return 0
    if not 0 <= args.tolerance < 1:
        raise SystemExit(f"error: --tolerance must be in [0, 1), got {args.tolerance}")
    if not args.baseline.is_file():
        raise SystemExit(f"error: no baseline at {args.baseline}; write one with --update RUN")
    baseline = {k: float(v) for k, v in json.loads(args.baseline.read_text())["ratios"].items()}
    lines, regressed = compare(load_ratios(args.results), baseline, args.tolerance)
    print(f"same-run ratios against {args.baseline} (regression: more than {args.tolerance:.0%} below):")
    print("\n".join(lines))
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
