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
                                         eval_samples=1, eval_interval=1e9))
        res = sim.run()
        out[slot] = (sim, res)
        return res

    def fast():
        run(0.0)

    def reference():
        run(None)

    # 2-core CPU, 1 thread: 16 CI-mode runs at 3 rounds (8 idle, 8 beside a CPU-bound process) min 2.86, median 3.2,
    # max 3.5; 10 runs at 5 rounds beside three busy processes min 3.11, median 3.3, max 3.48. Floor 2.4: a fast path
    # slowed by a 0.25 s sleep (about +50%) measured 2.1 and fails.
    ratio = assert_ratio(fast, reference, at_least=2.4, rounds=5, warmup=1, devices=D, model="lenet5",
                         device_steps=2 * D, machine="2-core CPU, 1 intra-op thread")
    (sb, rb), (se, re) = out[0.0], out[None]
    assert rb.device_steps == re.device_steps == 2 * D
    torch.testing.assert_close(sb.x, se.x, rtol=1e-4, atol=1e-5)
    print(f"device-steps/s: batched {rb.device_steps / rb.wall_time:.0f}, "
          f"per-device {re.device_steps / re.wall_time:.0f} (ratio {ratio:.1f}x)")
