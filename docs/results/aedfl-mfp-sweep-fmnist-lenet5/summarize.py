"""Accuracy against structural MFP over AEDFL's pruning-rate bounds: the table of this folder's README and
mfp_sweep.png. Reads `bounds-MIN-MAX/seed-S/results.json` (AEDFL-P and AEDFL at those bounds) and, as the dense
point, AEDFL-0 from ../aedfl-harmful-fmnist-lenet5/clean (the same setting and seeds). Table 1's MFP for AEDFL on
LeNet-5 (0.172 of a dense 0.283) is the dotted line; its accuracy is EMNIST's, so it is not drawn.

    python docs/results/aedfl-mfp-sweep-fmnist-lenet5/summarize.py
"""

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
DENSE = HERE.parent / "aedfl-harmful-fmnist-lenet5" / "clean"
TABLE1 = 0.172 / 0.283


def seeds(folder: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("seed-*/results.json")):
        for run in json.loads(path.read_text())["runs"]:
            out.setdefault(run["method"], []).append(run)
    return out


def point(rs: list[dict], dense: float) -> dict:
    def ms(values):
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mfp": ms([r["mflops"] / dense for r in rs]), "consensus": ms([r["consensus_accuracy"] for r in rs]),
            "plateau": ms([r["convergence"]["consensus_accuracy"]["accuracy"] for r in rs]),
            "devices": ms([r["accuracy"] for r in rs]), "seeds": len(rs)}


def main() -> None:
    rows = []
    base = seeds(DENSE).get("aedfl-0", [])
    dense = base[0]["mflops"] if base else 0.28164
    if base:
        rows.append(("aedfl-0 (dense)", "-", point(base, dense)))
    for folder in sorted(HERE.glob("bounds-*")):
        bounds = folder.name.removeprefix("bounds-").replace("-", " / ")
        for method, rs in seeds(folder).items():
            rows.append((method, bounds, point(rs, dense)))
    print("| method | rate bounds | seeds | MFP / dense | Acc consensus | Conv. acc (consensus) | Acc devices |")
    print("|---|---|---|---|---|---|---|")
    for method, bounds, p in rows:
        f = " | ".join(f"{p[k][0]:.3f} ± {p[k][1]:.3f}" for k in ("mfp", "consensus", "plateau", "devices"))
        print(f"| {method} | {bounds} | {p['seeds']} | {f} |")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, marker in (("aedfl-p", "o"), ("aedfl", "s"), ("aedfl-0 (dense)", "*")):
        pts = sorted((p["mfp"], p["plateau"]) for m, _, p in rows if m == method)
        if pts:
            ax.errorbar([x[0] for x, _ in pts], [y[0] for _, y in pts], xerr=[x[1] for x, _ in pts],
                        yerr=[y[1] for _, y in pts], marker=marker, capsize=3, label=method,
                        linestyle="-" if len(pts) > 1 else "none")
    ax.axvline(TABLE1, color="grey", linestyle=":", label="Table 1: AEDFL's MFP on LeNet-5")
    ax.set_xlabel("structural MFP / dense (final models, mean over devices)")
    ax.set_ylabel("convergence accuracy, consensus model")
    ax.set_title("Accuracy against compute: AEDFL's rate bounds (16 devices, 3 seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "mfp_sweep.png", dpi=120)


if __name__ == "__main__":
    main()
