"""AsyncSimulator throughput (device-steps per wall second) at 100 devices with LeNet-5 on 28x28 inputs:
batched mode (devices finishing in the same time slot run as ONE vmapped batch) vs the exact mode's
one-device-at-a-time loop, same seed, same method (AEDFL-0: SGD + cache aggregation + send)."""

import torch

from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
from dflbench.engines.async_stacked import DeviceData
from dflbench.engines.devices import DeviceProfiles
from dflbench.methods.registry import make_method
from dflbench.models import make_model
from dflbench.topology import exponential

D = 100


def make_data():
    g = torch.Generator().manual_seed(0)
    n = 32 * D
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    return DeviceData.from_indices(x, y, [list(range(i, n, D)) for i in range(D)], x[:16], y[:16])


def test_aedfl_async_batched_vs_per_device(assert_ratio):
    data = make_data()
    topo = exponential(D)
    prof = DeviceProfiles.homogeneous(D, latency=1e-4)      # everyone finishes together: one slot per round
    out = {}

    def run(slot):
        torch.manual_seed(0)
        sim = AsyncSimulator(make_model("lenet5", 10, 1, 28), data, topo, prof, make_method("aedfl-0"),
                             AsyncConfig(batch_size=8, max_updates=2, slot_width=slot, evaluate=False,
                                         eval_samples=1, eval_interval=1e9, local_steps=1, time_budget=None))
        res = sim.run()
        out[slot] = (sim, res)
        return res

    def fast():
        run(0.0)

    def reference():
        run(None)

    # 2-core CPU, 1 thread, CI mode. Since issue 17 the per-device reference runs StackedModel's loop path (one device:
    # the plain PyTorch step, 4.7x faster than the vmap of one it was), so the ratio fell with it: 2.13, 2.22, 2.22,
    # 2.13 at load 3-8 (it was min 2.86, median 3.2 with floor 2.4); idle 1.96, 2.08; 1.48 in a clean-clone CI run
    # beside ResNet-8 training (the batched slot, 100 models at once, is memory-bound: a memory-heavy neighbour slows
    # it 1.6x, the one-model reference 1.16x, on the CPU-time clock). Floor 1.2 at 0.8 of the lowest.
    ratio = assert_ratio(fast, reference, at_least=1.2, rounds=5, warmup=1, devices=D, model="lenet5",
                         device_steps=2 * D, machine="2-core CPU, 1 intra-op thread")
    (sb, rb), (se, re) = out[0.0], out[None]
    assert rb.device_steps == re.device_steps == 2 * D
    torch.testing.assert_close(sb.x, se.x, rtol=1e-4, atol=1e-5)
    print(f"device-steps/s: batched {rb.device_steps / rb.wall_time:.0f}, "
          f"per-device {re.device_steps / re.wall_time:.0f} (ratio {ratio:.1f}x)")
