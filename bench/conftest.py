"""Benchmark helpers: same-run speed ratios (fast path vs reference) and JSON records under .benchmarks/.

CI asserts ratios measured in one process, never absolute times: machines differ, ratios travel. Each ratio is
the median of reference / fast over pairs of samples timed alternately, on a clock that excludes the time other
processes took the CPU (`_timed`), so an idle and a loaded machine measure nearly the same thing. (Until issue 29 it
was min(reference) / min(fast): with the 5 pairs a loaded machine leaves in the time budget, one quiet reference
sample without a quiet fast one put AEDFL-rl's ratio at 0.51 where its pairs' median was 0.71; bench/RESULTS.md.)
Each floor is set from CI-mode runs idle, beside a CPU-heavy and beside a memory-heavy process (bench/calibrate.py);
the distribution is written beside it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from dflbench.malloc import configure

# Where the ratio records go: .benchmarks/, or DFLBENCH_BENCH_RESULTS (bench/inject.py and bench/calibrate.py keep
# their runs apart from the user's).
RESULTS_DIR = Path(os.environ.get("DFLBENCH_BENCH_RESULTS") or Path(__file__).resolve().parent.parent / ".benchmarks")


SCHEDSTAT = Path("/proc/thread-self/schedstat")


def _runqueue_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat, field 2); 0.0 where the
    kernel does not expose it (then timings are plain wall time)."""
    try:
        return int(SCHEDSTAT.read_text().split()[1]) * 1e-9
    except (OSError, IndexError, ValueError):
        return 0.0


def _timed(fn: Callable[[], object], reps: int = 1) -> float:
    """Seconds per call of `fn` (`reps` calls in a row) on this thread's clock: wall time minus the time the thread
    waited for a CPU that another process held, and never less than the thread's own CPU time (the run-queue
    accounting is updated lazily, so on sub-millisecond spans it can overshoot). Everything the benchmark itself does
    counts (computing, sleeping, waiting for a GPU or a socket); being preempted by a neighbour does not. With one
    intra-op thread (the `one_thread` fixture) all of a CPU benchmark's work runs on the calling thread, so this is
    the time it would take on an idle machine."""
    wait, cpu, start = _runqueue_wait(), time.thread_time(), time.perf_counter()
    for _ in range(reps):
        fn()
    wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
    return max(wall - (_runqueue_wait() - wait), cpu) / reps


def _calls_per_sample(fn: Callable[[], object], target_s: float = 0.02) -> int:
    """How many back-to-back calls make one timed sample of at least `target_s` (sub-millisecond calls are
    dominated by timer and scheduler granularity when timed one by one)."""
    return max(1, math.ceil(target_s / max(_timed(fn), 1e-7)))


def _interleaved_pairs(fast: Callable[[], object], reference: Callable[[], object], rounds: int,
                       warmup: int, budget_s: float = 1.5) -> list[tuple[float, float]]:
    """(fast, reference) seconds per call, timed alternately (fast, reference, fast, ...): both see the same
    background load. A sample is as many calls as take about 20 ms; at least `rounds` pairs, and more while they fit
    in `budget_s` (cheap benchmarks get dozens of pairs, so quiet ones are among them)."""
    for _ in range(warmup):
        fast()
        reference()
    reps = _calls_per_sample(fast), _calls_per_sample(reference)
    pairs, start = [], time.perf_counter()
    while len(pairs) < rounds or time.perf_counter() - start < budget_s:
        pairs.append((_timed(fast, reps[0]), _timed(reference, reps[1])))
    return pairs


def save_record(name: str, record: dict) -> Path:
    """Write `record` atomically to .benchmarks/<name>.json (temp file + rename)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread for every benchmark (module-scoped setups included), restored afterwards: on the
    shared 2-core machine two OpenMP threads mostly wait on each other, which makes tiny-model and
    memory-bound timings 5-10x slower and same-run ratios erratic. Fast path and reference run alike. Also the
    CLI's allocator settings (`dflbench.malloc`), kept for the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    configure()                   # the allocator the CLI runs with: a test's speed never depends on the one before
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def synced():
    """`synced(fn)` -> `fn`, followed by torch.cuda.synchronize() when CUDA is available (so a timing of it
    covers the kernels it launched)."""

    def wrap(fn: Callable[[], object]) -> Callable[[], object]:
        if not torch.cuda.is_available():
            return fn

        def call():
            out = fn()
            torch.cuda.synchronize()
            return out

        return call

    return wrap


@pytest.fixture
def assert_ratio(request):
    """`assert_ratio(fast, reference, at_least, rounds=5, warmup=1, **info)` -> measured ratio.

    Times both callables in this process, alternately (at least `rounds` pairs of samples after `warmup` calls
    each, on the `_timed` clock that excludes time lost to other processes), saves the median over the pairs of
    reference / fast as `ratio` (with min(reference) / min(fast) as `ratio_of_minima` and the fastest samples as
    fast_s / reference_s) to .benchmarks/ratio-<test>.json and asserts the ratio is at least `at_least`.
    """

    def check(fast, reference, at_least: float, rounds: int = 5, warmup: int = 1, **info) -> float:
        pairs = _interleaved_pairs(fast, reference, rounds, warmup)
        fast_s, ref_s = min(p[0] for p in pairs), min(p[1] for p in pairs)
        ratio = statistics.median(r / f for f, r in pairs)
        name = "ratio-" + request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
        save_record(name, {"test": request.node.nodeid, "fast_s": fast_s, "reference_s": ref_s,
                           "ratio": ratio, "ratio_of_minima": ref_s / fast_s, "pairs": len(pairs),
                           "at_least": at_least, **info})
        assert ratio >= at_least, (
            f"{request.node.nodeid}: fast path is only {ratio:.2f}x the reference (median of {len(pairs)} pairs; "
            f"fastest {fast_s * 1e3:.2f} ms vs {ref_s * 1e3:.2f} ms), expected at least {at_least}x")
        return ratio

    return check
