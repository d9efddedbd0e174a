"""Where the asynchronous simulator spends its time: one FedAvg run at 100 clients/round and AEDFL-0 slots at 100
devices, LeNet-5 on synthetic 28x28 uint8 images, batch 32, 5 local steps, one thread.

    OMP_NUM_THREADS=1 python bench/profile_sim.py [--rounds 3] [--top 15]

Prints cProfile's top functions by own time (Python-level: event loop, per-device work, data indexing,
evaluation) and torch.profiler's top operators by self CPU time (the kernels) for each workload.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch
from torch.profiler import ProfilerActivity, profile

from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
from dflbench.engines.async_stacked import DeviceData
from dflbench.engines.devices import DeviceProfiles
from dflbench.methods.registry import make_method
from dflbench.models import make_model
from dflbench.topology import exponential

D, PER_DEVICE, BATCH, STEPS = 100, 64, 32, 5


def synthetic_data(devices: int = D, per_device: int = PER_DEVICE, test: int = 1000) -> DeviceData:
    g = torch.Generator().manual_seed(0)
    n = devices * per_device
    y = torch.randint(0, 10, (n + test,), generator=g)
    x = torch.randint(0, 256, (n + test, 1, 28, 28), generator=g, dtype=torch.uint8)
    return DeviceData.from_indices(x[:n], y[:n], [list(range(i, n, devices)) for i in range(devices)], x[n:], y[n:])


def simulator(method: str, options: dict, rounds: int, data: DeviceData) -> AsyncSimulator:
    torch.manual_seed(0)
    prof = DeviceProfiles.homogeneous(D, latency=1e-4)
    cfg = AsyncConfig(batch_size=BATCH, local_steps=STEPS, max_updates=rounds, slot_width=0.0, eval_interval=1e9,
                      eval_samples=1000)
    return AsyncSimulator(make_model("lenet5", 10, 1, 28), data, exponential(D), prof,
                          make_method(method, options), cfg)


def report(title: str, method: str, options: dict, rounds: int, top: int, data: DeviceData) -> None:
    simulator(method, options, 1, data).run()                            # warm-up
    sim = simulator(method, options, rounds, data)
    start = time.perf_counter()
    prof = cProfile.Profile()
    prof.enable()
    res = sim.run()
    prof.disable()
    wall = time.perf_counter() - start
    print(f"\n=== {title}: {res.device_steps // STEPS} local updates of {STEPS} steps, {wall:.2f} s "
          f"({wall / res.device_steps * 1e3:.2f} ms per client-step, profiler overhead included) ===")
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)
    sim = simulator(method, options, rounds, data)
    with profile(activities=[ProfilerActivity.CPU]) as p:
        sim.run()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=50))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = synthetic_data()
    report("FedAvg, 100 clients/round", "fedavg", {"fraction": 1.0}, args.rounds, args.top, data)
    report("AEDFL-0, 100 devices per slot", "aedfl-0", {}, args.rounds, args.top, data)


if __name__ == "__main__":
    main()
