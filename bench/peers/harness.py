"""The peers harness (issue 17): the same FedAvg workload in a plain PyTorch loop, dflbench, pfl, FLGo and Flower,
each runner its own process (imports and start-up are timed), frameworks alternating within each repetition, one
thread each; prints the table framework | s per round | time to first result | final accuracy.

    python bench/peers/harness.py --clients 100 --clients-per-round 10 --rounds 30 --repeats 3

From a runner's JSON line (`common.Report`) and the time the harness spawned it, t0:
  s per round            (round_ends[-1] - round_ends[0]) / (R - 1): steady rounds, the first left out
  time to first result   round_ends[0] - t0: process start, imports, data, set-up and the first round
  final accuracy         the final global model on the workload's evaluation set
Each is the median over the repetitions that succeeded; a runner that fails or times out is reported with the
last line of its error output, never with a number."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PEER_PYTHON = HERE / ".venv" / "bin" / "python"
# name: (script, runs in the peers venv)
RUNNERS = {
    "plain": ("run_plain.py", False),
    "dflbench": ("run_dflbench.py", False),
    "pfl": ("run_pfl.py", True),
    "flgo": ("run_flgo.py", True),
    "flower": ("run_flower.py", True),
}


def runner_env() -> dict:
    """The runners' environment: one intra-op thread, dflbench and its packages importable from source."""
    paths = [str(ROOT / "src"), *(str(p) for p in sorted((ROOT / "packages").glob("*/src")))]
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def parse_output(stdout: str) -> dict:
    """The runner's report: the last stdout line that is a JSON object (frameworks print their own logs before)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("the runner printed no JSON report")


def run_one(name: str, workload: Path, peer_python: Path, timeout: float) -> dict:
    """Spawn runner `name` on `workload`; its report with the spawn time `t0`, or {"error": why}."""
    script, peer = RUNNERS[name]
    python = peer_python if peer else Path(sys.executable)
    if not python.exists():
        return {"name": name, "error": f"{python} does not exist; run `make bench-peers` to create the peers venv"}
    t0 = time.time()
    try:
        p = subprocess.run([str(python), str(HERE / script), str(workload)], capture_output=True, text=True,
                           timeout=timeout, env=runner_env(), cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0:
        last = [ln for ln in p.stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit status {p.returncode}"]
        return {"name": name, "error": last[0][:200]}
    try:
        return {"name": name, "t0": t0, **parse_output(p.stdout)}
    except ValueError as exc:
        return {"name": name, "error": str(exc)}


def summarize(records: list[dict], order: list[str]) -> list[dict]:
    """One row per runner name in `order`: medians of s per round, time to first result and accuracy over its
    successful records, `runs` = successes / attempts, `error` = the last failure's message (None if none)."""
    rows = []
    for name in order:
        mine = [r for r in records if r["name"] == name]
        ok = [r for r in mine if "error" not in r]
        failed = [r for r in mine if "error" in r]
        row = {"name": name, "runs": f"{len(ok)}/{len(mine)}", "error": failed[-1]["error"] if failed else None,
               "framework": ok[0]["framework"] if ok else name, "version": ok[0]["version"] if ok else "-"}
        if ok:
            for r in ok:
                if len(r["round_ends"]) < 2:
                    raise ValueError(f"{name}: {len(r['round_ends'])} round(s) reported; s per round needs >= 2")
            row["s_per_round"] = statistics.median((r["round_ends"][-1] - r["round_ends"][0]) /
                                                   (len(r["round_ends"]) - 1) for r in ok)
            row["first_result"] = statistics.median(r["round_ends"][0] - r["t0"] for r in ok)
            row["accuracy"] = statistics.median(r["accuracy"] for r in ok)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """The markdown table of `summarize`'s rows; a runner with no successful run shows its error."""
    lines = ["| framework | version | s per round | time to first result (s) | final accuracy | runs |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "s_per_round" in r:
            cells = [f"{r['s_per_round']:.3f}", f"{r['first_result']:.1f}", f"{r['accuracy']:.3f}"]
        else:
            cells = [f"did not run: {r['error']}", "-", "-"]
        lines.append(f"| {r['framework']} | {r['version']} | {' | '.join(cells)} | {r['runs']} |")
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {platform.platform()}, " \
           f"Python {platform.python_version()}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--clients-per-round", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frameworks", default=",".join(RUNNERS), help=f"comma-separated among {', '.join(RUNNERS)}")
    ap.add_argument("--peer-python", type=Path, default=PEER_PYTHON)
    ap.add_argument("--work", type=Path, default=HERE / "work", help="where the workload npz is written")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per runner process")
    ap.add_argument("--json", type=Path, help="also write every record and the rows here")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.frameworks.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown or not names:
        sys.exit(f"unknown frameworks {unknown}; choose among {', '.join(RUNNERS)}")
    if a.rounds < 2:
        sys.exit("--rounds must be >= 2 (s per round leaves the first round out)")
    a.work.mkdir(parents=True, exist_ok=True)
    workload = a.work / f"fmnist-n{a.clients}-c{a.clients_per_round}-r{a.rounds}-s{a.seed}.npz"
    subprocess.run([sys.executable, str(HERE / "prepare.py"), str(workload), "--clients", str(a.clients),
                    "--clients-per-round", str(a.clients_per_round), "--rounds", str(a.rounds), "--seed",
                    str(a.seed)], check=True, env=runner_env())
    records = []
    for rep in range(a.repeats):
        turn = names[rep % len(names):] + names[:rep % len(names)]          # rotate who runs first
        for name in turn:
            rec = run_one(name, workload, a.peer_python, a.timeout)
            print(f"[{rep + 1}/{a.repeats}] {name}: {rec.get('error') or 'ok'}", file=sys.stderr, flush=True)
            records.append(rec)
    rows = summarize(records, names)
    print(f"FedAvg, Fashion-MNIST, Dirichlet(0.5) over {a.clients} clients, {a.clients_per_round} clients/round, "
          f"{a.rounds} rounds, LeNet-5, SGD lr 0.05, batch 32, 5 local steps, 1 thread, medians of {a.repeats}; "
          f"{machine()}\n")
    print(format_table(rows))
    if a.json:
        a.json.write_text(json.dumps({"records": records, "rows": rows, "machine": machine()}, indent=1))


if __name__ == "__main__":
    main()
