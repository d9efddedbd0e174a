"""StackedModel's kernel paths ("loop", chunked "vmap", "auto") against the plain per-client PyTorch loop: one
nn.Module per client, loss.backward(), torch.optim.SGD."""

import pytest
import torch
import torch.nn.functional as F

from dflbench.engines.async_stacked import StackedModel, local_sgd
from dflbench.errors import UserError
from dflbench.models import make_model


def stacked(path: str, chunk: int = 3) -> StackedModel:
    torch.manual_seed(0)
    net = StackedModel(make_model("lenet5", 4, 1, 16), path=path)
    net.CPU_CHUNK = chunk                       # several chunks for 7 devices, so chunk joins are covered
    return net


def models(net: StackedModel, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return net.init.unsqueeze(0) + 0.05 * torch.randn(n, net.numel, generator=g)


def reference_module(flat: torch.Tensor) -> torch.nn.Module:
    model = make_model("lenet5", 4, 1, 16)
    torch.nn.utils.vector_to_parameters(flat, model.parameters())
    return model


@pytest.mark.parametrize("path", ["loop", "vmap", "auto"])
@pytest.mark.parametrize("n", [1, 7, 12])
def test_loss_and_grad_equal_plain_backward(tiny_data, path, n):
    data = tiny_data(n)
    net = stacked(path)
    flat = models(net, n)
    xb, yb = data.batch(torch.arange(n), torch.zeros(n, dtype=torch.long), 0, 8, 0)
    loss, g = net.loss_and_grad(flat, xb, yb)
    assert loss.shape == (n,) and g.shape == (n, net.numel)
    for i in range(n):
        model = reference_module(flat[i])
        ref = F.cross_entropy(model(xb[i]), yb[i])
        ref.backward()
        torch.testing.assert_close(loss[i], ref.detach())
        torch.testing.assert_close(g[i], torch.cat([p.grad.flatten() for p in model.parameters()]),
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_accuracy_and_loss_equal_per_model_evaluation(tiny_data, path):
    data = tiny_data(4)
    net = stacked(path)
    flat = models(net, 7)
    x, y = data.prepare(data.x_test), data.y_test
    acc, loss = net.accuracy_and_loss(flat, x, y, chunk=24)          # 64 samples: chunks of 24, 24, 16
    for i in range(7):
        with torch.no_grad():
            out = reference_module(flat[i]).eval()(x)
        torch.testing.assert_close(acc[i], (out.argmax(1) == y).double().mean())
        torch.testing.assert_close(loss[i], F.cross_entropy(out, y).double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_local_sgd_equals_per_client_optimizer_loop(tiny_data, path):
    """Five SGD steps of 7 devices at once = the loop a user writes: for each client, a module, torch.optim.SGD,
    its own minibatches (the same counter-keyed draws)."""
    n, steps, lr = 7, 5, 0.05
    data = tiny_data(n)
    net = stacked(path)
    x0 = models(net, n)
    devs, t = torch.arange(n), torch.full((n,), 3)
    x, loss, _ = local_sgd(net, data, devs, t, x0, steps=steps, lr=lr, batch_size=8, seed=11)
    for i in range(n):
        model = reference_module(x0[i])
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        losses = []
        for s in range(steps):
            xb, yb = data.batch(devs[i:i + 1], t[i:i + 1], s, 8, 11)
            opt.zero_grad()
            li = F.cross_entropy(model(xb[0]), yb[0])
            li.backward()
            opt.step()
            losses.append(li.item())
        torch.testing.assert_close(x[i], torch.nn.utils.parameters_to_vector(model.parameters()).detach(),
                                   rtol=1e-4, atol=1e-5)
        assert float(loss[i]) == pytest.approx(sum(losses) / steps, rel=1e-5)


def test_local_sgd_takes_a_given_first_step_for_the_known_rows(tiny_data):
    """`first = (loss, grad, known)`: rows `known` use the given step-0 loss and gradient, the others compute theirs;
    given the true ones, the result is the plain run's (masked), and a known row's given gradient is what it steps
    with."""
    n, lr = 4, 0.05
    data = tiny_data(n)
    net = stacked("loop")
    x0 = models(net, n)
    masks = torch.rand(n, net.numel, generator=torch.Generator().manual_seed(3)) < 0.8
    devs, t = torch.arange(n), torch.full((n,), 2)
    kw = dict(steps=3, lr=lr, batch_size=8, seed=11, masks=masks)
    plain = local_sgd(net, data, devs, t, x0, **kw)
    xb, yb = data.batch(devs, t, 0, 8, 11)
    loss0, g0 = net.loss_and_grad(x0 * masks, xb, yb)
    known = torch.tensor([True, False, True, False])
    given = local_sgd(net, data, devs, t, x0, first=(loss0.clone(), g0.clone(), known), **kw)
    for a, b in zip(plain, given):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    wrong = g0 + 1.0
    moved = local_sgd(net, data, devs, t, x0, first=(loss0, wrong, known), **kw)[0]
    assert not torch.allclose(moved[0], plain[0]) and torch.equal(moved[1], plain[0][1])


def test_auto_path_choice():
    net = StackedModel(make_model("lenet5", 4, 1, 16))
    cpu, small = torch.device("cpu"), net.CPU_VMAP_MAX_BATCH
    assert net.kernel_path(100, cpu, batch=32) == ("loop", 1)
    assert net.kernel_path(100, cpu, batch=small) == ("vmap", net.CPU_CHUNK)
    assert net.kernel_path(1, cpu, batch=small) == ("loop", 1)
    assert net.kernel_path(100, cpu) == ("loop", 1)                                 # evaluation
    assert net.kernel_path(100, torch.device("cuda"), batch=32) == ("vmap", 100)
    assert net.kernel_path(100, torch.device("cuda")) == ("vmap", 100)
    forced = StackedModel(make_model("lenet5", 4, 1, 16), path="vmap")
    assert forced.kernel_path(100, cpu, batch=32) == ("vmap", forced.CPU_CHUNK)


def test_unknown_path_is_a_user_error():
    with pytest.raises(UserError, match="path must be"):
        StackedModel(make_model("lenet5", 4, 1, 16), path="fold")


def test_evaluation_equals_per_model_mean_and_equal_models_once(tiny_data):
    from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
    from dflbench.engines.devices import DeviceProfiles
    from dflbench.methods.registry import make_method
    from dflbench.topology import exponential

    torch.manual_seed(0)
    sim = AsyncSimulator(make_model("lenet5", 4, 1, 16), tiny_data(4), exponential(4), DeviceProfiles.homogeneous(4),
                         make_method("aedfl-0"), AsyncConfig(max_updates=1, eval_samples=48, local_steps=1,
                                                                   slot_width=0.0, time_budget=None))
    sim.method.setup(sim)

    def per_model_mean(models):
        accs = []
        for row in models:
            with torch.no_grad():
                out = reference_module(row).eval()(sim._x_eval)
            accs.append((out.argmax(1) == sim._y_eval).double().mean())
        return float(torch.stack(accs).mean())

    assert sim._evaluate()["accuracy"] == pytest.approx(per_model_mean(sim.x), abs=1e-12)   # 4 equal models
    sim.x[1:] += 0.3 * torch.randn(3, sim.P, generator=torch.Generator().manual_seed(2))
    assert sim._evaluate()["accuracy"] == pytest.approx(per_model_mean(sim.x), abs=1e-12)


class PartlyUsed(torch.nn.Module):
    """A frozen bias and a layer the forward never uses: the flat gradient still has every entry (zero there)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)
        self.unused = torch.nn.Linear(2, 2)
        self.fc.bias.requires_grad_(False)

    def forward(self, x):
        return self.fc(x)


def test_paths_agree_with_unused_and_frozen_parameters():
    torch.manual_seed(0)
    model = PartlyUsed()
    flat = StackedModel(model).init.repeat(3, 1) + 0.1 * torch.randn(3, 27)
    x, y = torch.randn(3, 5, 6), torch.randint(0, 3, (3, 5))
    (ll, gl), (lv, gv) = (StackedModel(model, path=p).loss_and_grad(flat, x, y) for p in ("loop", "vmap"))
    torch.testing.assert_close(ll, lv)
    torch.testing.assert_close(gl, gv)
    assert gl[:, 21:].abs().sum() == 0 and gl[:, 18:21].abs().sum() > 0          # unused: 0; frozen bias: a gradient
