"""The scenario table of this folder's README: per scenario folder (clean, noise-K, labels-K) and method, the honest
devices' accuracy (mean +- sample std over the seeds; a server method: its global model), its change from the
clean runs of the same seeds scored on the same devices (the clean run's per-device accuracies), and the consensus
model's accuracy. Reads every `SCENARIO/seed-S/results.json`.

    python docs/results/aedfl-harmful-fmnist-lenet5/summarize.py
"""

import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
SCENARIOS = ["clean", "noise-2", "noise-4", "labels-2", "labels-4"]


def runs(scenario: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for path in sorted((HERE / scenario).glob("seed-*/results.json")):
        for run in json.loads(path.read_text())["runs"]:
            out.setdefault(run["method"], []).append(run)
    return out


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def honest(run: dict, corrupt: list[int]) -> float:
    """The mean accuracy of the devices not in `corrupt` (one global model: its accuracy)."""
    acc = run["device_accuracy"]
    if len(acc) == 1:
        return acc[0]
    kept = [a for d, a in enumerate(acc) if d not in corrupt]
    return sum(kept) / len(kept)


def main() -> None:
    data = {s: runs(s) for s in SCENARIOS if (HERE / s).is_dir()}
    clean = data.get("clean", {})
    print("| scenario | method | seeds | Acc honest devices | change vs clean (same devices) | Acc consensus |")
    print("|---|---|---|---|---|---|")
    for scenario, methods in data.items():
        for method, rs in methods.items():
            corrupt = json.loads((HERE / scenario / "seed-0" / "results.json").read_text())["config"]["corrupt"]
            now = [honest(r, corrupt) for r in rs]
            before = [honest(r, corrupt) for r in clean.get(method, [])]
            change = f"{statistics.mean(now) - statistics.mean(before):+.3f}" if len(before) == len(now) else "-"
            print(f"| {scenario} | {method} | {len(rs)} | {ms(now)} | {change} | "
                  f"{ms([r['consensus_accuracy'] for r in rs])} |")


if __name__ == "__main__":
    main()
