"""Check that CI's benchmarks catch a 1.5x slowdown of each method's own code.

    python bench/inject.py [TARGET ...] [--factor 1.5] [--list]

For each target (default: all), a fresh pytest process runs the benchmarks that guard it, in CI's quick mode, with
the target's functions wrapped so that every call busy-waits (factor - 1) times the CPU time the call itself took
on this thread: a CPU slowdown of exactly `factor` of that code and of nothing else. The target passes the check
when pytest fails and one of the failed tests is a benchmark the target names. Prints one line per target; exit
status 1 if any slowdown went unnoticed. `make bench-inject` runs it; bench/RESULTS.md records its output.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CI_ARGS = ["--benchmark-min-rounds=1", "--benchmark-max-time=0.2", "--benchmark-warmup=off"]
STEPS = "bench/test_method_steps.py::"

# target -> (functions as "module:Class.attr", the benchmarks that must fail: pytest node ids)
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "aedfl-update": (["dflbench.methods.aedfl.step:AEDFLStep.update"],
                     [STEPS + "test_aedfl_update_vs_plain_sgd"]),
    "aedfl-pruning": (["dflbench.methods.aedfl.pruning:AdaptivePruner.prune"],
                      [STEPS + "test_aedfl_pruning_pass_vs_plain_sgd"]),
    "aedfl-rl-selection": (["dflbench.methods.aedfl.selection:PolicySelector.select",
                            "dflbench.methods.aedfl.selection:PolicySelector.reward"],
                           [STEPS + "test_aedfl_rl_selection_vs_plain_sgd"]),
    "fedavg-round": (["dflbench.methods.server.fedavg:FedAvg.on_round"],
                     ["bench/test_fedavg_loop.py::test_fedavg_round_vs_plain_loop"]),
    "fedbuff-server-step": (["dflbench.methods.server.fedbuff:FedBuff.aggregate"],
                            [STEPS + "test_fedbuff_server_step_vs_plain_loop"]),
    "adpsgd-exchange": (["dflbench.methods.gossip.ad_psgd:ADPSGD.on_arrive"],
                        [STEPS + "test_adpsgd_exchange_vs_plain_loop"]),
    "pushpull-step": (["dflbench.mixing:PushPull.step"],
                      ["bench/test_mixing_step.py::test_mixing_pushpull_step_vs_node_loop"]),
}


def slowed(fn, factor: float):
    """`fn`, made `factor` times slower on this thread's CPU clock by a busy-wait after each call."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.thread_time()
        out = fn(*args, **kwargs)
        end = time.thread_time()
        until = end + (factor - 1.0) * (end - start)
        while time.thread_time() < until:
            pass
        return out

    return wrapper


def resolve(spec: str) -> tuple[object, str]:
    """(owner, attribute name) of the function named by `spec` ("module:Class.attr")."""
    module, _, path = spec.partition(":")
    owner_name, _, attr = path.rpartition(".")
    owner = importlib.import_module(module)
    for part in owner_name.split("."):
        owner = getattr(owner, part)
    return owner, attr


def patch(spec: str, factor: float) -> None:
    """Replace the function named by `spec` with its `slowed` version."""
    owner, attr = resolve(spec)
    setattr(owner, attr, slowed(getattr(owner, attr), factor))


def failed_tests(junit: Path) -> list[str]:
    """Node ids ("file::name[param]") of the failed or erroring tests in a pytest junit XML report."""
    failed = []
    for case in ET.parse(junit).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            path = case.get("classname", "").replace(".", "/") + ".py"
            failed.append(f"{path}::{case.get('name')}")
    return failed


def check(target: str, factor: float) -> tuple[bool, str]:
    """Run the target's benchmarks with the slowdown in a fresh process; (caught, one-line report)."""
    _, guards = TARGETS[target]
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, __file__, "--child", target, "--factor", str(factor), "--", *guards, "-q",
               "-p", "no:cacheprovider", f"--junitxml={junit}", *CI_ARGS]
        env = {**os.environ, "DFLBENCH_BENCH_RESULTS": tmp}          # the user's .benchmarks/ stays as it was
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        if not junit.exists():
            return False, f"{target}: pytest did not run (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
        failed = failed_tests(junit)
        records = [json.loads(r.read_text()) for r in sorted(Path(tmp).glob("ratio-*.json"))]
    ratios = "; ".join(f"{r['test'].split('::')[-1]} {r['ratio']:.3g} (floor {r['at_least']})" for r in records)
    caught = [f for f in failed if any(f.startswith(g) for g in guards)]
    if caught:
        return True, f"{target}: caught by {', '.join(caught)}; ratios {ratios}"
    return False, f"{target}: NOT caught at {factor}x (failed: {', '.join(failed) or 'none'}); ratios {ratios}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:                      # the pytest process: patch, then run pytest's arguments
        target, factor, rest = argv[1], float(argv[3]), argv[argv.index("--") + 1:]
        for spec in TARGETS[target][0]:
            patch(spec, factor)
        import pytest
        return pytest.main(rest)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    ap.add_argument("--factor", type=float, default=1.5, help="the slowdown of each target's code (> 1)")
    ap.add_argument("--list", action="store_true", help="list the targets, their functions and benchmarks")
    args = ap.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        print(f"error: unknown target {unknown[0]!r}; valid targets: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    if not args.factor > 1:
        print(f"error: --factor must be > 1, got {args.factor}", file=sys.stderr)
        return 2
    if args.list:
        for name, (specs, guards) in TARGETS.items():
            print(f"{name}: {', '.join(specs)} -> {', '.join(guards)}")
        return 0
    missed = 0
    for target in args.targets or list(TARGETS):
        caught, line = check(target, args.factor)
        missed += not caught
        print(line, flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
