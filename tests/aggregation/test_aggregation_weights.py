"""Dynamic weights (eq. 4.6-4.8), their lambda gradient against autograd, and staleness features."""

import pytest
import torch

from dflbench.aggregation import (
    DynamicWeights,
    DynamicWeightsConfig,
    dynamic_weights,
    lambda_grad,
    masked_average,
    selection_features,
    staleness,
)

CFG = DynamicWeightsConfig()


def test_weights_form_a_distribution():
    g = torch.Generator().manual_seed(0)
    d, k = 5, 6
    lam = torch.rand(d, k, generator=g) + 0.1
    samples = torch.randint(1, 100, (d, k), generator=g).float()
    dt = torch.randint(0, 10, (d, k), generator=g).float()
    dt[:, 0] = 0
    loss = torch.rand(d, k, generator=g) * 3
    loss[0, 2] = 0.0
    active = torch.rand(d, k, generator=g) < 0.6
    active[:, 0] = True
    w = dynamic_weights(lam, samples, dt, loss, active)
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(d))
    assert (w[~active] == 0).all() and (w[active] > 0).all()
    # eq. 4.6/4.7 by hand for one device, with the floors of the division-by-zero rule
    i = 3
    imp = [float(active[i, j]) * lam[i, j] * samples[i, j] / ((max(dt[i, j], 1.0) * max(loss[i, j], 1e-6)) ** 0.5)
           for j in range(k)]
    assert torch.allclose(w[i], torch.stack(imp) / sum(imp))


def test_weights_decrease_with_staleness_and_loss():
    k = 5
    lam, samples = torch.ones(k), torch.full((k,), 10.0)
    dt = torch.tensor([0.0, 1.0, 2.0, 5.0, 9.0])
    w = dynamic_weights(lam, samples, dt, torch.full((k,), 0.5))
    assert w[0] == w[1], "delta_t = 0 counts as the floor staleness 1"
    assert (w[1:-1] > w[2:]).all()
    loss = torch.tensor([0.0, 1e-7, 0.1, 0.5, 2.0])
    w = dynamic_weights(lam, samples, torch.full((k,), 3.0), loss)
    assert torch.isfinite(w).all() and w[0] == w[1], "loss below the floor counts as the floor"
    assert (w[1:-1] > w[2:]).all()
    assert torch.allclose(w[2] / w[3], torch.tensor(5.0).sqrt())   # 1 / sqrt(loss) scaling


def test_rejects_bad_inputs():
    ones = torch.ones(2, 3)
    with pytest.raises(ValueError, match="local model"):
        dynamic_weights(ones, ones, ones, ones, torch.tensor([[False, True, True], [True, True, True]]))
    with pytest.raises(ValueError, match="lambda"):
        dynamic_weights(-ones, ones, ones, ones)
    with pytest.raises(ValueError, match="shape"):
        dynamic_weights(ones, torch.ones(3), ones, ones)
    with pytest.raises(ValueError, match="staleness_floor"):
        DynamicWeightsConfig(staleness_floor=0.0)


def _problem(seed, d=3, k=4, p=11):
    g = torch.Generator().manual_seed(seed)
    lam = (torch.rand(d, k, generator=g, dtype=torch.float64) + 0.5)
    samples = torch.randint(1, 50, (d, k), generator=g).double()
    dt = torch.randint(0, 6, (d, k), generator=g).double()
    loss = torch.rand(d, k, generator=g, dtype=torch.float64) + 0.1
    models = torch.randn(d, k, p, generator=g, dtype=torch.float64)
    masks = torch.rand(d, k, p, generator=g) < 0.6
    active = torch.rand(d, k, generator=g) < 0.7
    active[:, 0] = True
    target = torch.randn(d, p, generator=g, dtype=torch.float64)
    return lam, samples, dt, loss, models, masks, active, target


def local_loss(m, target):
    """A smooth non-quadratic local loss F_i of the aggregated model."""
    return (torch.log1p((m - target) ** 2) + 0.1 * m ** 3).sum()


@pytest.mark.parametrize("masked", [False, True])
def test_lambda_grad_equals_autograd(masked):
    lam, samples, dt, loss, models, masks, active, target = _problem(1)
    lam = lam.requires_grad_(True)
    w = dynamic_weights(lam, samples, dt, loss, active)
    agg = masked_average(models, w, masks if masked else None)
    local_loss(agg, target).backward()
    g = torch.func.grad(local_loss)(agg.detach(), target)         # gradient of F_i at the aggregated model
    ours = lambda_grad(lam.detach(), samples, dt, loss, models, g, masks if masked else None, active)
    assert torch.allclose(ours, lam.grad, atol=1e-10, rtol=1e-8)
    assert (ours[~active] == 0).all()


@pytest.mark.parametrize("block_size", [None, 3])
def test_lambda_grad_with_a_new_local_mask_equals_autograd(block_size):
    """AEDFL re-prunes the full aggregate: x = o_new * mu(lambda) with mu eq. 4.11 over the old masks; `out_mask`
    gives dF/dlambda through that (autograd reference), including entries the new mask regrows."""
    lam, samples, dt, loss, models, masks, active, target = _problem(3)
    new = torch.rand(masks.shape[0], masks.shape[2], generator=torch.Generator().manual_seed(9)) < 0.5
    assert (new & ~masks[:, 0]).any() and (~new & masks[:, 0]).any()
    lam = lam.requires_grad_(True)
    x = masked_average(models, dynamic_weights(lam, samples, dt, loss, active), masks, remask=False) * new
    local_loss(x, target).backward()
    g = torch.func.grad(local_loss)(x.detach(), target)
    ours = lambda_grad(lam.detach(), samples, dt, loss, models, g, masks, active, block_size=block_size,
                       out_mask=new)
    assert torch.allclose(ours, lam.grad, atol=1e-10, rtol=1e-8)
    default = lambda_grad(lam.detach(), samples, dt, loss, models, g, masks, active)
    assert torch.equal(default, lambda_grad(lam.detach(), samples, dt, loss, models, g, masks, active,
                                            out_mask=masks[:, 0]))
    with pytest.raises(ValueError, match="out_mask"):
        lambda_grad(lam.detach(), samples, dt, loss, models, g, None, active, out_mask=new)


def test_masked_gradient_reduces_to_plain_with_full_masks():
    lam, samples, dt, loss, models, _, active, target = _problem(2)
    g = torch.randn(models.shape[0], models.shape[-1], dtype=torch.float64)
    full = torch.ones_like(models, dtype=torch.bool)
    a = lambda_grad(lam, samples, dt, loss, models, g, None, active)
    b = lambda_grad(lam, samples, dt, loss, models, g, full, active)
    assert torch.allclose(a, b)


def test_dynamic_weights_step_is_eq_4_8_and_lowers_the_loss():
    lam, samples, dt, loss, models, masks, active, target = _problem(3)
    cfg = DynamicWeightsConfig(lr=0.05, step_rule="plain")
    dw = DynamicWeights(num_devices=6, num_slots=4, config=cfg, dtype=torch.float64)
    devices = torch.tensor([4, 1, 2])
    dw.lam[devices] = lam
    before = dw.lam.clone()
    w0 = dw.weights(samples, dt, loss, active, devices)
    agg = masked_average(models, w0, masks)
    g = torch.func.grad(local_loss)(agg, target)
    w1 = dw.step(models, g, samples, dt, loss, masks, active, devices)
    expected = (lam - 0.05 * lambda_grad(lam, samples, dt, loss, models, g, masks, active)).clamp_min(cfg.lambda_min)
    expected[:, 0] = lam[:, 0]                                       # the local lambda is the fixed scale
    assert torch.allclose(dw.lam[devices], expected)
    untouched = torch.tensor([0, 3, 5])
    assert torch.equal(dw.lam[untouched], before[untouched])
    assert torch.allclose(w1, dynamic_weights(expected, samples, dt, loss, active))
    # a few descent steps on a fixed set of models lower the local loss of the aggregate
    losses = []
    for _ in range(20):
        w = dw.weights(samples, dt, loss, active, devices)
        agg = masked_average(models, w, masks)
        losses.append(float(local_loss(agg, target)))
        dw.step(models, torch.func.grad(local_loss)(agg, target), samples, dt, loss, masks, active, devices)
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="distinct"):
        dw.weights(samples, dt, loss, active, torch.tensor([1, 1, 2]))


def test_staleness_and_features():
    t = torch.tensor([5, 9])
    stamps = torch.tensor([[5, 3, 7], [9, 9, 0]])
    dt = staleness(t, stamps)
    assert torch.equal(dt, torch.tensor([[0.0, 2.0, -2.0], [0.0, 0.0, 9.0]]))
    f = selection_features(torch.tensor([[False, True, False], [False, False, True]]), dt, torch.ones(2, 3))
    assert f.shape == (2, 3, 3) and torch.equal(f[..., 1], dt) and f[0, 1, 0] == 1.0
    with pytest.raises(ValueError, match="stamps shape"):
        staleness(t, torch.zeros(3, 3))


def test_normalized_step_moves_the_most_sensitive_lambda_by_eta_in_eq_4_8s_direction():
    lam, samples, dt, loss, models, masks, active, target = _problem(3)
    cfg = DynamicWeightsConfig(lr=0.3)                                # step_rule="normalized" is the default
    dw = DynamicWeights(num_devices=3, num_slots=4, config=cfg, dtype=torch.float64)
    dw.lam[:] = lam
    agg = masked_average(models, dw.weights(samples, dt, loss, active), masks)
    g = torch.func.grad(local_loss)(agg, target)
    raw = lambda_grad(lam, samples, dt, loss, models, g, masks, active)
    raw[:, 0] = 0.0
    dw.step(models, g, samples, dt, loss, masks, active)
    step = lam - dw.lam
    expected = 0.3 * raw / raw.abs().amax(1, keepdim=True)
    clipped = (lam - expected < cfg.lambda_min) | (lam - expected > cfg.lambda_max)
    assert torch.allclose(step[~clipped], expected[~clipped])
    assert torch.allclose(step.abs().amax(1)[~clipped.any(1)], torch.full((int((~clipped.any(1)).sum()),), 0.3,
                                                                          dtype=torch.float64))
    # a zero gradient leaves lambda where it is
    before = dw.lam.clone()
    dw.step(models, torch.zeros_like(g), samples, dt, loss, masks, active)
    assert torch.equal(dw.lam, before)
    with pytest.raises(ValueError, match="step_rule"):
        DynamicWeightsConfig(step_rule="adam")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("block_size", [None, 1, 7])
def test_lambda_grad_of_float32_models_in_blocks_equals_the_float64_computation(masked, block_size):
    """float32 models with float64 lambdas, block by block (no [..., K, P] float64 copy): the numbers of the whole
    computation on the models converted to float64 first."""
    lam, samples, dt, loss, models, masks, active, _ = _problem(4)
    g = torch.randn(models.shape[0], models.shape[-1], dtype=torch.float64)
    m32, g32 = models.float(), g.float()
    ours = lambda_grad(lam, samples, dt, loss, m32, g32, masks if masked else None, active, block_size=block_size)
    ref = lambda_grad(lam, samples, dt, loss, m32.double(), g32.double(), masks if masked else None, active,
                      block_size=models.shape[-1])
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-10)
