import numpy as np
import pytest
import torch


@pytest.fixture
def aedfl_npz(tmp_path):
    """npz dataset: 16x16 grayscale, 4 classes (class c brightens the image by 40 c), 240 train / 64 test."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 4, n)
        x = np.clip(rng.normal(60, 40, (n, 16, 16)) + 40 * y[:, None, None], 0, 255).astype(np.uint8)
        return x, y

    x_tr, y_tr = make(240)
    x_te, y_te = make(64)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


@pytest.fixture
def aedfl_sim():
    """make(method, D=4, faults=None, **config) -> AsyncSimulator on 16x16 synthetic data, exponential graph,
    LeNet-5."""
    from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
    from dflbench.engines.async_stacked import DeviceData
    from dflbench.engines.devices import sample_profiles
    from dflbench.models import make_model
    from dflbench.topology import exponential

    def make(method, D=4, faults=None, **cfg):
        g = torch.Generator().manual_seed(0)
        n = 48 * D
        y = torch.randint(0, 4, (n,), generator=g)
        x = (torch.randn(n, 1, 16, 16, generator=g) * 40 + 60 + 40 * y.view(-1, 1, 1, 1)).clamp(0, 255)
        x = x.to(torch.uint8)
        data = DeviceData.from_indices(x, y, [list(range(i, n, D))[: 8 + 8 * i] for i in range(D)], x[:32], y[:32])
        cfg = {"max_updates": 3, "batch_size": 8, "eval_interval": 0.05, "eval_samples": 32, "slot_width": 0.005,
               "local_steps": 1, "time_budget": None, **cfg}
        torch.manual_seed(0)
        return AsyncSimulator(make_model("lenet5", 4, 1, 16), data, exponential(D),
                              sample_profiles(D, 2, latency=0.001), method, AsyncConfig(**cfg), faults=faults,
                              record_events=True)

    return make


@pytest.fixture
def small_options():
    """small_options(name) -> the small-run settings (prune every 2nd update, sample half the devices, buffer 2
    arrivals) that method `name` has among its options."""
    from dflbench.methods.registry import METHODS

    small = {"every": 2, "fraction": 0.5, "buffer": 2}

    def pick(name):
        return {k: v for k, v in small.items() if k in {f.name for f in METHODS.get(name).fields()}}

    return pick


@pytest.fixture
def ref_local():
    """ref_local(sim, d, x0, t, steps, lr, mu=0) -> the reference local update (a plain loop, autograd)."""
    import torch.nn.functional as F

    from dflbench.models import make_model

    def ref_local(sim, d: int, x0: torch.Tensor, t: int, steps: int, lr: float, mu: float = 0.0):
        """Device d's local update from x0 (the `aedfl_sim` LeNet-5) as a plain loop: `steps` SGD steps on its
        minibatches keyed (d, t, step), with FedProx's proximal gradient mu (w - x0) when mu > 0."""
        model = make_model("lenet5", 4, 1, 16)
        torch.nn.utils.vector_to_parameters(x0.clone(), model.parameters())
        for s in range(steps):
            model.zero_grad()
            xb, yb = sim.data.batch(torch.tensor([d]), torch.tensor([t]), s, sim.cfg.batch_size, sim.cfg.seed)
            w = torch.nn.utils.parameters_to_vector(model.parameters())
            loss = F.cross_entropy(model(xb[0]), yb[0]) + 0.5 * mu * ((w - x0) ** 2).sum()
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= lr * p.grad
        return torch.nn.utils.parameters_to_vector(model.parameters()).detach()

    return ref_local
