import pytest
import torch

from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
from dflbench.engines.devices import sample_profiles
from dflbench.methods.registry import make_method
from dflbench.models import make_model
from dflbench.topology import exponential

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", ["aedfl", "fedbuff", "d-psgd"])
def test_cuda_run_matches_cpu_events(tiny_data, name):
    """Same seed on CUDA and CPU: the same event sequence and (up to kernel rounding) the same models."""
    out = {}
    for device in ("cpu", "cuda"):
        data = tiny_data(4)
        data.x, data.y, data.parts, data.sizes = (t.to(device) for t in (data.x, data.y, data.parts, data.sizes))
        data.x_test, data.y_test = data.x_test.to(device), data.y_test.to(device)
        torch.manual_seed(0)
        sim = AsyncSimulator(make_model("lenet5", 4, 1, 16), data, exponential(4), sample_profiles(4, 1, latency=1e-3),
                             make_method(name, {"aedfl": {"every": 2}, "fedbuff": {"buffer": 2}}.get(name)),
                             AsyncConfig(max_updates=3, batch_size=8, eval_interval=0.05, eval_samples=32,
                                         local_steps=1, slot_width=0.0, time_budget=None, device=device),
                             record_events=True)
        out[device] = (sim, sim.run())
    (sc, rc), (sg, rg) = out["cpu"], out["cuda"]
    assert rc.events == rg.events
    assert sg.x.is_cuda
    torch.testing.assert_close(sg.x.cpu(), sc.x, rtol=1e-3, atol=1e-4)
