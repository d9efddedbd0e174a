"""Compare a benchmark run's same-run ratios with the stored baseline and report regressions.

    python bench/compare.py [RESULTS] [--baseline bench/baseline.json] [--tolerance 0.25]

RESULTS is the folder of `ratio-*.json` records that `make bench` writes (default .benchmarks), or the
pytest-benchmark JSON inside it (`.benchmarks/bench.json`: its folder is read). A ratio (reference time / fast-path
time, measured alternately in one process) regresses when it falls more than `tolerance` below its baseline value,
the median of the runs written in bench/RESULTS.md. Exit status 1 if any ratio regressed; records without a
baseline and baselines without a record are listed, not failed. Absolute times are not compared: machines differ,
ratios travel.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", type=Path, default=HERE.parent / ".benchmarks")
    ap.add_argument("--baseline", type=Path, default=HERE / "baseline.json")
    ap.add_argument("--tolerance", type=float, default=0.25, help="allowed relative drop below the baseline")
    args = ap.parse_args(argv)
    if not 0 <= args.tolerance < 1:
        raise SystemExit(f"error: --tolerance must be in [0, 1), got {args.tolerance}")
    baseline = {k: float(v) for k, v in json.loads(args.baseline.read_text())["ratios"].items()}
    lines, regressed = compare(load_ratios(args.results), baseline, args.tolerance)
    print(f"same-run ratios against {args.baseline} (regression: more than {args.tolerance:.0%} below):")
    print("\n".join(lines))
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
