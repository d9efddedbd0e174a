"""The asynchronous engine against a plain PyTorch loop: CPU per SGD step, where it goes, and peak memory.

    OMP_NUM_THREADS=1 python bench/profile_sim.py --method aedfl --devices 100 --updates 10      # ratio, both orders
    OMP_NUM_THREADS=1 python bench/profile_sim.py --method aedfl --phases                          # + phase profile
    OMP_NUM_THREADS=1 python bench/profile_sim.py --method aedfl --devices 1000 --updates 2 --memory   # RSS only

One process, one intra-op thread. The workload is the AEDFL recipe's (`recipes/aedfl.py`: its data loading, Dirichlet
partition, exponential graph, sampled device profiles, slot width, LeNet-5, batch 32, 5 local steps), with
evaluation off: the simulator runs `--method` until every device has done `--updates` local updates. The reference
is the loop a user writes: per device, one `nn.Module` and `torch.optim.SGD`, T updates of the same 5 SGD steps on
the same minibatches (`DeviceData.indices`), no aggregation. Both are timed by `time.thread_time` (this thread's CPU:
time lost to other processes does not count) in the order simulator-loop, then loop-simulator; the ratio is the
simulator's CPU per SGD step over the loop's, each averaged over the two runs.

`--versus OPTION=VALUE` (repeatable) compares two settings of the method in one process instead: the phase profile
of the base options and of the base plus these, in the order base, versus, versus, base (per-phase ms per SGD step,
each the mean of its two runs, and the ratio of the totals).

`--phases` runs the simulator once more with its work attributed to phases (exclusive thread CPU: a phase nested in
another is taken out of it): SGD, data (minibatch gathering), pruning (Hessian: `device_curvature`; the rest of the
pruning call: rates, scores, masks, MFLOPs), dwu (dynamic weights: eq. 4.6-4.8; the gradient at the aggregate is the
next update's first SGD step, counted in SGD), rl (the policy's selection and REINFORCE step and the reward's loss
pass at the pre-aggregation model), aggregation (cache reads, writes
and the weighted averages), other (the event loop, messages, bookkeeping). `--cprofile N` prints cProfile's top N
functions by own time instead of timing. `--memory` runs the simulator only and prints peak RSS, minor page
faults, user and system CPU of the process (`resource.getrusage`), device-steps per second, and on CUDA the peak
memory torch allocated; `--evaluate` adds AEDFL Table 1's evaluation to that run.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import pstats
import resource
import sys
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from dflbench import malloc
from dflbench.engines.async_sim import AsyncSimulator
from dflbench.engines.devices import sample_profiles
from dflbench.methods.registry import make_method
from dflbench.recipes.aedfl import AEDFLRunConfig, build_model, load_device_data
from dflbench.topology import exponential


@dataclass
class Workload:
    cfg: AEDFLRunConfig
    evaluate: bool
    data: object
    info: dict
    profiles: object
    topology: object


def workload(method: str, devices: int, updates: int, dataset: str, options: dict, data_dir: str | None = None,
             device: str = "cpu", evaluate: bool = False) -> Workload:
    """The recipe's workload; `evaluate`: with AEDFL Table 1's evaluation (`recipes/configs/aedfl-emnist-lenet5`:
    every 0.1 virtual s, 2,000 test samples)."""
    cfg = AEDFLRunConfig(devices=devices, methods=(method,), dataset=dataset, max_updates=updates, data_dir=data_dir,
                         device=device, method_options={method: options} if options else {},
                         **({"eval_interval": 0.1, "eval_samples": 2000} if evaluate else {}))
    data, info = load_device_data(cfg)
    profiles = sample_profiles(cfg.devices, cfg.seed, cfg.time_per_sample, cfg.bandwidth, cfg.latency,
                               cfg.heterogeneity)
    return Workload(cfg, evaluate, data, info, profiles, exponential(devices))


def simulator(w: Workload) -> AsyncSimulator:
    c = w.cfg
    torch.manual_seed(c.seed)
    sim_cfg = replace(c.async_config(), time_budget=None, evaluate=w.evaluate)      # stop on max_updates only
    name = c.methods[0]
    return AsyncSimulator(build_model(c, w.info), w.data, w.topology, w.profiles,
                          make_method(name, c.options(name)), sim_cfg)


def run_simulator(w: Workload) -> tuple[float, int]:
    """(thread CPU seconds, SGD steps) of one simulator run, construction included."""
    start = time.thread_time()
    res = simulator(w).run()
    return time.thread_time() - start, res.device_steps


def run_loop(w: Workload) -> tuple[float, int]:
    """(thread CPU seconds, SGD steps) of the plain per-device loop on the simulator's minibatches."""
    c, data = w.cfg, w.data
    torch.manual_seed(c.seed)
    start = time.thread_time()
    model = build_model(c, w.info)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    steps = torch.arange(c.local_steps)
    for d in range(data.n):
        model.load_state_dict(init)
        opt = torch.optim.SGD(model.parameters(), lr=c.lr)
        model.train()
        for t in range(c.max_updates):
            idx = data.indices(torch.tensor([d]), torch.tensor([t]), steps, c.batch_size, c.seed)[:, 0]
            for s in range(c.local_steps):
                xb, yb = data.gather(idx[s])
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
    return time.thread_time() - start, data.n * c.max_updates * c.local_steps


PHASES = {
    # (module path, attribute, phase, inherit): `inherit` keeps the caller's phase when called inside another one
    "sgd": [("dflbench.methods.aedfl.step", "local_sgd", False), ("dflbench.engines.async_sim", "local_sgd", False),
            ("dflbench.methods.aedfl.step", "AEDFLStep._next_first_step", False)],
    "data": [("dflbench.engines.async_stacked", "DeviceData.gather", False),
             ("dflbench.engines.async_stacked", "DeviceData.indices", False)],
    "pruning": [("dflbench.methods.aedfl.pruning", "AdaptivePruner.prune", False),
                ("dflbench.methods.aedfl.pruning", "ScheduledPruner.observe", False)],
    "hessian": [("dflbench.methods.aedfl.pruning", "device_curvature", False)],
    "dwu": [("dflbench.aggregation.weights", "DynamicWeights.weights", False),
            ("dflbench.aggregation.weights", "DynamicWeights.step", False),
            ("dflbench.engines.async_stacked", "StackedModel.loss_and_grad", True)],
    "rl": [("dflbench.methods.aedfl.selection", "PolicySelector.select", False),
           ("dflbench.methods.aedfl.selection", "PolicySelector.reward", False),
           ("dflbench.engines.async_stacked", "StackedModel.losses", True)],
    "aggregation": [("dflbench.methods.aedfl.step", "_aggregate", False),
                    ("dflbench.aggregation.cache", "NeighborCache.read", False),
                    ("dflbench.aggregation.cache", "NeighborCache.put", False),
                    ("dflbench.aggregation.cache", "NeighborCache.mark_aggregated", False),
                    ("dflbench.methods.aedfl.step", "static_weights", False),
                    ("dflbench.methods.server.fedavg", "rules.fedavg", False)],
}


class PhaseClock:
    """Exclusive thread CPU per phase: wrapping functions push their phase; time goes to the innermost one."""

    def __init__(self):
        self.totals = {name: 0.0 for name in [*PHASES, "other"]}
        self.stack = ["other"]
        self.mark = time.thread_time()

    def _switch(self, phase: str | None) -> None:
        now = time.thread_time()
        self.totals[self.stack[-1]] += now - self.mark
        self.mark = now
        if phase is None:
            self.stack.pop()
        else:
            self.stack.append(phase)

    def wrap(self, fn, phase: str, inherit: bool):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._switch(self.stack[-1] if inherit and len(self.stack) > 1 else phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self._switch(None)
        return timed

    def install(self) -> list:
        undo = []
        for phase, targets in PHASES.items():
            for module, attr, inherit in targets:
                owner = sys.modules[module] if module in sys.modules else __import__(module, fromlist=["_"])
                *path, name = attr.split(".")
                for part in path:
                    owner = getattr(owner, part)
                if name not in vars(owner):
                    continue
                original = vars(owner)[name]
                setattr(owner, name, self.wrap(original, phase, inherit))
                undo.append((owner, name, original))
        return undo

    def stop(self) -> dict:
        self._switch(None)
        return self.totals


def phases(w: Workload) -> tuple[dict, int]:
    """(exclusive thread CPU seconds per phase, SGD steps) of one simulator run."""
    clock = PhaseClock()
    undo = clock.install()
    try:
        clock.mark = time.thread_time()
        res = simulator(w).run()
    finally:
        for owner, name, original in undo:
            setattr(owner, name, original)
    return clock.stop(), res.device_steps


def versus(w: Workload, extra: dict) -> dict:
    """Phase profiles of `w` and of `w` with the method options `extra` added, run base-versus-versus-base: per
    phase the ms per SGD step of each setting (mean of its two runs) and the ratio of the totals."""
    name = w.cfg.methods[0]
    options = {**w.cfg.method_options.get(name, {}), **extra}
    other = replace(w, cfg=replace(w.cfg, method_options={**w.cfg.method_options, name: options}))
    run_simulator(replace(w, cfg=replace(w.cfg, max_updates=1)))                  # warm-up
    ms = {"base": [], "versus": []}
    for label in ("base", "versus", "versus", "base"):
        workload_ = w if label == "base" else other
        totals, steps = phases(workload_)
        ms[label].append({k: 1e3 * v / steps for k, v in totals.items()})
    mean = {label: {k: round(sum(r[k] for r in runs) / len(runs), 3) for k in runs[0]} for label, runs in ms.items()}
    return {"versus": extra, "base_phase_ms_per_step": mean["base"], "versus_phase_ms_per_step": mean["versus"],
            "total_ms_per_step": {label: round(sum(m.values()), 3) for label, m in mean.items()},
            "ratio_versus_base": round(sum(mean["versus"].values()) / sum(mean["base"].values()), 3)}


def memory(w: Workload) -> dict:
    cuda = w.cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    sim = simulator(w)
    res = sim.run()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    out = {"devices": w.cfg.devices, "updates": w.cfg.max_updates, "device": w.cfg.device,
           "evaluations": len(res.history), "device_steps": res.device_steps, "wall_s": round(wall, 2),
           "device_steps_per_s": round(res.device_steps / wall, 1), "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
           "minor_faults": after.ru_minflt - before.ru_minflt, "user_s": round(after.ru_utime - before.ru_utime, 2),
           "system_s": round(after.ru_stime - before.ru_stime, 2)}
    if cuda:
        out["gpu"] = torch.cuda.get_device_name()
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="aedfl", help="a method of `dflbench aedfl --list-methods`")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--updates", type=int, default=10, help="local updates per device (T)")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", help="where the dataset lives (the recipe's default otherwise)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--evaluate", action="store_true", help="with --memory: evaluate as AEDFL Table 1 does")
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", help="a method option")
    ap.add_argument("--phases", action="store_true", help="also profile the simulator by phase")
    ap.add_argument("--versus", action="append", default=[], metavar="OPTION=VALUE",
                    help="profile by phase with these options added, against the base options, in one process")
    ap.add_argument("--cprofile", type=int, default=0, metavar="N", help="print cProfile's top N functions only")
    ap.add_argument("--memory", action="store_true", help="simulator only: peak RSS, page faults, system time")
    ap.add_argument("--no-malloc", action="store_true", help="leave glibc's allocator thresholds as they are")
    ap.add_argument("--json", help="append the result as a JSON line to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.no_malloc:
        malloc.configure()
    options = dict(s.split("=", 1) for s in args.set)
    w = workload(args.method, args.devices, args.updates, args.dataset, options, args.data_dir, args.device,
                 args.evaluate)
    record = {"method": args.method, "devices": args.devices, "updates": args.updates, "malloc": not args.no_malloc}
    if args.memory:
        record.update(memory(w))
    elif args.versus:
        record.update(versus(w, dict(s.split("=", 1) for s in args.versus)))
    elif args.cprofile:
        prof = cProfile.Profile()
        prof.runcall(simulator(w).run)
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.cprofile)
        return
    else:
        run_simulator(replace(w, cfg=replace(w.cfg, max_updates=1)))                  # warm-up
        sims, loops = [], []
        for first, second in ((run_simulator, run_loop), (run_loop, run_simulator)):
            for fn in (first, second):
                (sims if fn is run_simulator else loops).append(fn(w))
        sim_ms = [1e3 * s / n for s, n in sims]
        loop_ms = [1e3 * s / n for s, n in loops]
        record.update(sim_ms_per_step=[round(v, 3) for v in sim_ms], loop_ms_per_step=[round(v, 3) for v in loop_ms],
                      ratio=round(sum(sim_ms) / sum(loop_ms), 3),
                      ratio_per_order=[round(s / lo, 3) for s, lo in zip(sim_ms, loop_ms)])
        if args.phases:
            totals, steps = phases(w)
            record["phase_ms_per_step"] = {k: round(1e3 * v / steps, 3) for k, v in totals.items()}
            record["phase_share"] = {k: round(v / sum(totals.values()), 3) for k, v in totals.items()}
    print(json.dumps(record))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
