"""Curvature core vs exact Hessians from torch.autograd.functional.hessian and torch.linalg.eigh."""

import pytest
import torch
import torch.nn.functional as F

from dflbench.pruning import (
    HessianOperator,
    eigenvalue_density,
    hessian_diagonal,
    hessian_trace,
    hessian_vector_product,
    layer_names,
    model_hessian_trace,
    model_hvp,
    model_loss_fn,
    model_params,
    top_eigenvalues,
)


def _flat(d):
    return torch.cat([t.reshape(-1) for t in d.values()])


def test_hvp_matches_exact_hessian_float64(tiny_mlp):
    loss_fn, params, hessian = tiny_mlp()
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in params.items()}
        hv = hessian_vector_product(loss_fn, params, v)
        torch.testing.assert_close(_flat(hv), hessian @ _flat(v), atol=1e-10, rtol=0)


def test_hvp_restricted_to_subset_is_the_hessian_block(tiny_mlp):
    loss_fn, params, hessian = tiny_mlp()
    names = ["w2", "b2"]
    start = params["w1"].numel() + params["b1"].numel()
    block = hessian[start:, start:]
    v = {"w2": torch.randn(2, 4, dtype=torch.float64), "b2": torch.randn(2, dtype=torch.float64)}
    hv = hessian_vector_product(loss_fn, params, v, names=names)
    assert list(hv) == names
    torch.testing.assert_close(_flat(hv), block @ _flat(v), atol=1e-10, rtol=0)


def test_trace_matches_eigh_within_standard_error(tiny_mlp):
    loss_fn, params, hessian = tiny_mlp()
    est = hessian_trace(loss_fn, params, num_samples=400, seed=1)
    exact = float(torch.linalg.eigvalsh(hessian).sum())
    assert abs(est.mean - exact) < 4 * est.stderr + 1e-12
    again = hessian_trace(loss_fn, params, num_samples=400, seed=1)
    assert again.mean == est.mean  # seeded


def test_hutchinson_diagonal_is_exact_for_diagonal_hessian():
    a = torch.tensor([0.5, 2.0, 3.0, -1.0], dtype=torch.float64)
    params = {"x": torch.tensor([0.3, -0.2, 1.0, 0.7], dtype=torch.float64)}
    diag = hessian_diagonal(lambda p: 0.5 * (a * p["x"] ** 2).sum() + p["x"].sum() ** 1, params, num_samples=3)
    torch.testing.assert_close(diag["x"], a, atol=1e-12, rtol=0)


def test_hutchinson_diagonal_converges_to_hessian_diagonal(tiny_mlp):
    loss_fn, params, hessian = tiny_mlp()
    diag = _flat(hessian_diagonal(loss_fn, params, num_samples=2000, seed=2))
    off = hessian - torch.diag(torch.diag(hessian))
    # Var(z_i (Hz)_i) = sum_{j != i} H_ij^2, so the error is below 5 standard errors
    bound = 5 * (off ** 2).sum(dim=1).sqrt() / 2000 ** 0.5 + 1e-12
    assert ((diag - torch.diag(hessian)).abs() <= bound).all()


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalues_match_eigh(tiny_mlp, method):
    loss_fn, params, hessian = tiny_mlp()
    evals, evecs = torch.linalg.eigh(hessian)
    k = 3
    if method == "lanczos":
        res = top_eigenvalues(loss_fn, params, k, method="lanczos", seed=0)
        expected = torch.flip(evals, [0])[:k]
    else:
        res = top_eigenvalues(loss_fn, params, k, method="power", tol=1e-12, max_iter=5000, seed=0)
        expected = torch.sort(evals[torch.argsort(evals.abs(), descending=True)[:k]], descending=True).values
    torch.testing.assert_close(res.values, expected, atol=1e-7, rtol=1e-6)
    # eigenvectors: unit norm and H v = lambda v
    torch.testing.assert_close(res.vectors.norm(dim=1), torch.ones(k, dtype=torch.float64))
    residual = (res.vectors @ hessian) - res.values[:, None] * res.vectors
    assert residual.norm(dim=1).max() < 1e-4


def test_lanczos_short_run_finds_well_separated_top_eigenvalue():
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(60, 60, generator=gen, dtype=torch.float64))
    spectrum = torch.cat([torch.tensor([50.0, 30.0]), torch.linspace(-1, 1, 58)]).double()
    h = q @ torch.diag(spectrum) @ q.T
    params = {"x": torch.randn(60, generator=gen, dtype=torch.float64)}
    res = top_eigenvalues(lambda p: 0.5 * p["x"] @ h @ p["x"], params, 2, num_steps=20)
    torch.testing.assert_close(res.values, torch.tensor([50.0, 30.0], dtype=torch.float64), atol=1e-8, rtol=0)


def test_slq_quadrature_identities_and_full_spectrum(tiny_mlp):
    loss_fn, params, hessian = tiny_mlp()
    evals = torch.linalg.eigvalsh(hessian)
    d = hessian.shape[0]
    dens = eigenvalue_density(loss_fn, params, num_steps=d, num_runs=3, seed=4)
    torch.testing.assert_close(dens.weights.sum(dim=1), torch.ones(3, dtype=torch.float64))
    # Gauss quadrature with m = d steps is exact for q^T H^j q; Rademacher q/||q||: ||q||^2 = d
    gen = torch.Generator().manual_seed(4)
    starts = (2 * torch.randint(0, 2, (3, d), generator=gen, dtype=torch.int8) - 1).double() / d ** 0.5
    for j in (1, 2):
        expected = torch.einsum("rd,de,re->r", starts, torch.linalg.matrix_power(hessian, j), starts)
        torch.testing.assert_close((dens.weights * dens.nodes ** j).sum(dim=1), expected, atol=1e-9, rtol=1e-9)
    # every node with weight is an eigenvalue
    live = dens.nodes[dens.weights > 1e-10]
    assert (live[:, None] - evals[None, :]).abs().min(dim=1).values.max() < 1e-8
    grid = torch.linspace(float(evals.min()) - 1, float(evals.max()) + 1, 4001, dtype=torch.float64)
    area = torch.trapezoid(dens.density(grid, 0.05), grid)
    assert abs(float(area) - 1.0) < 1e-3


def test_module_wrappers_match_functional_and_loader_equals_full_batch(tiny_cnn):
    model, (x, y) = tiny_cnn(bn=False)
    params = model_params(model)
    v = {n: torch.randn_like(p) for n, p in params.items()}
    full = model_hvp(model, F.cross_entropy, (x, y), v)
    loader = [(x[:2], y[:2]), (x[2:], y[2:])]
    split = model_hvp(model, F.cross_entropy, loader, v)
    torch.testing.assert_close(_flat(split), _flat(full), atol=1e-10, rtol=0)
    names = layer_names(model, "conv2")
    assert names == ["conv2.weight", "conv2.bias"]
    sub = model_hvp(model, F.cross_entropy, (x, y), {n: v[n] for n in names}, names=names)
    op = HessianOperator(model_loss_fn(model, F.cross_entropy, (x, y)), params)
    dense = op.unflatten(op.matvec(op.flatten({n: v[n] if n in names else torch.zeros_like(v[n]) for n in v})))
    for n in names:
        torch.testing.assert_close(sub[n], dense[n], atol=1e-10, rtol=0)


def test_batchnorm_train_mode_uses_batch_stats_without_updating(tiny_cnn):
    model, batch = tiny_cnn(bn=True)
    model.train()
    before = model.bn1.running_mean.clone()
    tr = model_hessian_trace(model, F.cross_entropy, batch, num_samples=4)
    assert torch.isfinite(torch.tensor(tr.mean))
    torch.testing.assert_close(model.bn1.running_mean, before)
    assert int(model.bn1.num_batches_tracked) == 0


def test_float32_runs_and_agrees_with_float64(tiny_cnn):
    m64, (x, y) = tiny_cnn(bn=False, dtype=torch.float64)
    m32, _ = tiny_cnn(bn=False, dtype=torch.float32)
    t64 = model_hessian_trace(m64, F.cross_entropy, (x, y), num_samples=8).mean
    t32 = model_hessian_trace(m32, F.cross_entropy, (x.float(), y), num_samples=8).mean
    assert abs(t64 - t32) < 1e-4 * max(1.0, abs(t64))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(tiny_cnn, dtype):
    model, (x, y) = tiny_cnn(bn=False, dtype=dtype)
    params = model_params(model)
    v = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(0), dtype=dtype) for n, p in params.items()}
    cpu = model_hvp(model, F.cross_entropy, (x, y), v)
    cuda = model_hvp(model.cuda(), F.cross_entropy, (x.cuda(), y.cuda()), {n: t.cuda() for n, t in v.items()})
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(_flat(cuda).cpu(), _flat(cpu), atol=tol, rtol=tol)
    t_cpu = model_hessian_trace(model.cpu(), F.cross_entropy, (x, y), num_samples=8, seed=1).mean
    t_cuda = model_hessian_trace(model.cuda(), F.cross_entropy, (x.cuda(), y.cuda()), num_samples=8, seed=1).mean
    assert abs(t_cpu - t_cuda) <= tol * max(1.0, abs(t_cpu)) * 10


def test_bad_inputs_raise_clear_errors(tiny_mlp):
    loss_fn, params, _ = tiny_mlp()
    with pytest.raises(ValueError, match="unknown parameter names"):
        hessian_trace(loss_fn, params, names=["nope"])
    with pytest.raises(ValueError, match="empty"):
        hessian_trace(loss_fn, params, names=[])
    with pytest.raises(ValueError, match="exceeds"):
        top_eigenvalues(loss_fn, params, 10_000)
    with pytest.raises(ValueError, match="unknown eigenvalue method"):
        top_eigenvalues(loss_fn, params, 1, method="qr")
    with pytest.raises(ValueError, match="num_samples"):
        hessian_trace(loss_fn, params, num_samples=0)
    with pytest.raises(ValueError, match="empty list"):
        hessian_trace([], params)


def test_slq_on_low_rank_hessian_stops_at_the_invariant_subspace():
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    h = u @ torch.diag(torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)) @ u.T  # rank 3
    params = {"x": torch.randn(12, generator=gen, dtype=torch.float64)}
    dens = eigenvalue_density(lambda p: 0.5 * p["x"] @ h @ p["x"], params, num_steps=10, num_runs=2)
    evals = torch.linalg.eigvalsh(h)
    torch.testing.assert_close(dens.weights.sum(dim=1), torch.ones(2, dtype=torch.float64))
    live = dens.nodes[dens.weights > 1e-12]
    assert (live[:, None] - evals[None, :]).abs().min(dim=1).values.max() < 1e-8
    assert torch.isfinite(dens.nodes).all()
    top = top_eigenvalues(lambda p: 0.5 * p["x"] @ h @ p["x"], params, 3)
    torch.testing.assert_close(top.values, torch.flip(evals, [0])[:3], atol=1e-8, rtol=0)


def test_hvp_does_not_print_torchs_jit_script_deprecation(tmp_path):
    """torch.func.jvp scripts torch's forward-AD decompositions on first use, which warns that torch.jit.script is
    deprecated: not actionable by a user, so the HVP silences exactly that warning (a fresh process, warnings as
    errors)."""
    import subprocess
    import sys

    script = tmp_path / "hvp.py"
    script.write_text("import torch, torch.nn.functional as F\n"
                      "from dflbench.models import make_model\n"
                      "from dflbench.pruning import model_hvp, model_params\n"
                      "m = make_model('resnet8', 10, 3, 32)\n"
                      "x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))\n"
                      "model_hvp(m, F.cross_entropy, (x, y), {n: torch.randn_like(p) for n, p in "
                      "model_params(m).items()})\n")
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", str(script)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
