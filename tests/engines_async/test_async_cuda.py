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


def test_cuda_checkpoint_resumes_exactly(tiny_data, tmp_path):
    """A CUDA run of AEDFL checkpointed at its 10th event boundary and resumed (its tensors back on the GPU, the
    host-side counters on the CPU) ends with the uninterrupted CUDA run's events and, up to kernel rounding, its
    models."""
    from dflbench.engines.async_checkpoint import Checkpoint
    from tests.methods.test_checkpoint_resume import KillAfter, Killed

    def build():
        data = tiny_data(4)
        data.x, data.y, data.parts, data.sizes = (t.to("cuda") for t in (data.x, data.y, data.parts, data.sizes))
        data.x_test, data.y_test = data.x_test.to("cuda"), data.y_test.to("cuda")
        torch.manual_seed(0)
        return AsyncSimulator(make_model("lenet5", 4, 1, 16), data, exponential(4), sample_profiles(4, 1, latency=1e-3),
                              make_method("aedfl", {"every": 2}),
                              AsyncConfig(max_updates=4, batch_size=8, eval_interval=0.05, eval_samples=32,
                                          local_steps=1, slot_width=0.0, time_budget=None, device="cuda"))

    ref = build()
    want = ref.run()
    path = tmp_path / "ck.pt"
    with pytest.raises(Killed):
        build().run(checkpoint=KillAfter(path, 10))
    again = build()
    got = again.run(checkpoint=Checkpoint(path, {"run": 1}))
    assert again.x.is_cuda and not again.t.is_cuda
    assert [h["time"] for h in got.history] == [h["time"] for h in want.history]        # the same events
    assert torch.equal(again.t, ref.t) and got.bytes_sent == want.bytes_sent
    torch.testing.assert_close(again.x, ref.x, rtol=1e-4, atol=1e-5)      # CUDA kernels may round differently
