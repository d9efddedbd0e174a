"""FedAvg on the AsyncSimulator against the plain PyTorch loop a user would write (one nn.Module, one optimizer,
`for client in clients`), same process, timed alternately: LeNet-5 on 28x28 uint8 images, 100 clients, batch 32,
5 local SGD steps, lr 0.05, every client training once: one round of 100 clients or ten rounds of 10 (issue 17's
workload on synthetic data)."""

import pytest
import torch
import torch.nn.functional as F

from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
from dflbench.engines.async_stacked import DeviceData
from dflbench.engines.devices import DeviceProfiles
from dflbench.methods.registry import make_method
from dflbench.models import make_model
from dflbench.topology import exponential

D, PER_CLIENT, BATCH, STEPS, LR = 100, 64, 32, 5, 0.05


@pytest.fixture(scope="module")
def workload():
    g = torch.Generator().manual_seed(0)
    n = D * PER_CLIENT
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    parts = [torch.arange(i, n, D) for i in range(D)]
    return x, y, parts, DeviceData.from_indices(x, y, parts, x[:16], y[:16])


def dflbench_rounds(data: DeviceData, fraction: float, device: str = "cpu") -> torch.Tensor:
    sim = AsyncSimulator(make_model("lenet5", 10, 1, 28), data, exponential(D), DeviceProfiles.homogeneous(D),
                         make_method("fedavg", {"fraction": fraction}),
                         AsyncConfig(batch_size=BATCH, local_steps=STEPS, lr=LR, max_updates=1, evaluate=False,
                                     slot_width=0.0, time_budget=None, device=device))
    sim.run()
    return sim.method.pending


def plain_loop_rounds(x, y, parts, clients: int, gen: torch.Generator) -> dict:
    """FedAvg as a user writes it, D / `clients` rounds: every sampled client trains a copy of the global model
    with SGD on its own random minibatches; the server averages the models weighted by client data size."""
    model = make_model("lenet5", 10, 1, 28).to(x.device)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for chosen in torch.randperm(D, generator=gen).view(-1, clients).tolist():
        total = sum(len(parts[c]) for c in chosen)
        avg = {k: torch.zeros_like(v) for k, v in global_state.items()}
        for c in chosen:
            model.load_state_dict(global_state)
            for _ in range(STEPS):
                idx = parts[c][torch.randint(len(parts[c]), (BATCH,), generator=gen)].to(x.device)
                opt.zero_grad()
                F.cross_entropy(model(x[idx].float().div(127.5).sub(1.0)), y[idx]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                avg[k] += v * (len(parts[c]) / total)
        global_state = avg
    return global_state


# 2-core CPU, 1 thread, CI mode, load 3-9: at 100 clients/round 1.015, 1.006, 0.944; at 10: 0.998, 0.970
# (bench/RESULTS.md, "FedAvg against the plain PyTorch loop"). Issue 17's target, 1.5x at 100 clients/round, is not
# met on this CPU. Recalibrated for issue 29 (2026-12-07, load average ~10, idle / beside a CPU-heavy / beside a
# memory-heavy process): 100 clients 1.04 / 1.08 / 1.04, 10 clients 1.04 / 1.02 / 1.10; the floors sit at about 0.8
# of the lowest and above 1.05 x the highest / 1.5, so a 1.5x slower FedAvg round (0.66-0.72 measured) fails.
FLOORS = {100: 0.84, 10: 0.84}


@pytest.mark.parametrize("clients", list(FLOORS))
def test_fedavg_round_vs_plain_loop(workload, assert_ratio, clients):
    x, y, parts, data = workload
    gen = torch.Generator().manual_seed(0)
    assert_ratio(lambda: dflbench_rounds(data, clients / D), lambda: plain_loop_rounds(x, y, parts, clients, gen),
                 at_least=FLOORS[clients], rounds=3, warmup=1, clients_per_round=clients, model="lenet5", batch=BATCH,
                 local_steps=STEPS, machine="2-core CPU, 1 intra-op thread")


@pytest.mark.gpu
def test_fedavg_round_vs_plain_loop_cuda(workload, assert_ratio, synced):
    """The same on CUDA, 100 clients/round (issue 17's GPU target: 20x the per-device loop). The floor 1.0 is
    provisional: no GPU has measured this yet (bench/gpu.sh records the ratio; set the floor from its runs)."""
    x, y, parts, _ = workload
    xc, yc = x.cuda(), y.cuda()
    data = DeviceData.from_indices(x, y, parts, x[:16], y[:16], device="cuda")
    gen = torch.Generator().manual_seed(0)
    assert_ratio(synced(lambda: dflbench_rounds(data, 1.0, "cuda")),
                 synced(lambda: plain_loop_rounds(xc, yc, parts, D, gen)), at_least=1.0, rounds=3, warmup=1,
                 clients_per_round=D, model="lenet5", batch=BATCH, local_steps=STEPS,
                 machine=torch.cuda.get_device_name())
