"""Functional curvature core: gradients, Hessian-vector products, trace, diagonal, spectra.

Everything works on `loss_fn(params) -> scalar` with `params` a dict name -> tensor, optionally restricted to
a subset `names` of the parameters (the others are held fixed): H below is then the block
H[names, names] of the full Hessian. A loss may be a sum of weighted terms (one per batch of a data loader),
`[(w_1, f_1), (w_2, f_2), ...]`, so F = sum_b w_b f_b and every product is accumulated batch by batch.

Hessian-vector products are forward-over-reverse (`torch.func.jvp` of `torch.func.grad`):
H v = d/dt grad F(m + t v) |_{t=0}, one extra forward-mode pass over the gradient computation.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence, Union

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

LossFn = Callable[[dict], Tensor]
Loss = Union[LossFn, Sequence[tuple]]


def make_generator(seed: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded with `seed` (random probes are drawn on CPU, then moved)."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def _as_terms(loss_fn: Loss) -> list[tuple[float, LossFn]]:
    if callable(loss_fn):
        return [(1.0, loss_fn)]
    terms = list(loss_fn)
    if not terms:
        raise ValueError("the loss is an empty list of (weight, loss_fn) terms; pass at least one batch")
    for term in terms:
        if not (isinstance(term, tuple) and len(term) == 2 and callable(term[1])):
            raise ValueError("a multi-batch loss must be a list of (weight, loss_fn) pairs")
    return [(float(w), f) for w, f in terms]


class HessianOperator:
    """The Hessian of F = sum_b w_b f_b(params) at `params`, restricted to `names`, as a linear operator.

    `matvec`/`matmat` act on flat vectors laid out as the concatenation of `names` (in that order).
    """

    def __init__(self, loss_fn: Loss, params: Mapping[str, Tensor], names: Iterable[str] | None = None):
        self.terms = _as_terms(loss_fn)
        if not params:
            raise ValueError("params is empty: pass the dict of tensors the loss depends on")
        self.names = list(params) if names is None else list(names)
        if not self.names:
            raise ValueError("the parameter subset `names` is empty: name at least one parameter")
        unknown = [n for n in self.names if n not in params]
        if unknown:
            raise ValueError(f"unknown parameter names {unknown}; valid names: {sorted(params)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError("the parameter subset `names` repeats a name")
        chosen = set(self.names)
        self.free = {n: params[n].detach() for n in self.names}
        self.fixed = {n: t.detach() for n, t in params.items() if n not in chosen}
        for n, t in self.free.items():
            if not t.is_floating_point():
                raise ValueError(f"parameter {n!r} has dtype {t.dtype}; curvature needs floating-point tensors")
        self.shapes = [self.free[n].shape for n in self.names]
        self.numels = [self.free[n].numel() for n in self.names]
        self.dim = sum(self.numels)
        first = self.free[self.names[0]]
        self.dtype, self.device = first.dtype, first.device

    # -- layout -------------------------------------------------------------------------------------------
    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Concatenate `tensors[name]` over `names` into one vector [dim]."""
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise ValueError(f"vector is missing entries for parameters {missing}")
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Inverse of `flatten` (also on a batch [..., dim])."""
        if flat.shape[-1] != self.dim:
            raise ValueError(f"flat vector has {flat.shape[-1]} entries, the parameter subset has {self.dim}")
        lead = flat.shape[:-1]
        parts = torch.split(flat, self.numels, dim=-1)
        return {n: p.reshape(*lead, *s) for n, p, s in zip(self.names, parts, self.shapes)}

    def params_flat(self) -> Tensor:
        return self.flatten(self.free)

    # -- evaluations --------------------------------------------------------------------------------------
    def _restricted(self, fn: LossFn) -> LossFn:
        fixed = self.fixed
        return lambda free: fn({**fixed, **free})

    def loss(self, free: Mapping[str, Tensor] | None = None) -> Tensor:
        free = self.free if free is None else free
        return sum(w * self._restricted(f)(dict(free)) for w, f in self.terms)

    def gradient(self, free: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        free = dict(self.free if free is None else free)
        out = None
        for w, f in self.terms:
            g = grad(self._restricted(f))(free)
            out = {n: w * g[n] for n in self.names} if out is None else {n: out[n] + w * g[n] for n in self.names}
        return out

    def hvp(self, v: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """H v by forward-over-reverse differentiation, accumulated over loss terms."""
        tangent = {n: v[n].to(self.dtype) for n in self.names}
        out = None
        for w, f in self.terms:
            with warnings.catch_warnings():   # torch's forward-AD decompositions script themselves on first use
                warnings.filterwarnings("ignore", r".*torch\.jit\.script. is deprecated", FutureWarning)
                hv = jvp(grad(self._restricted(f)), (self.free,), (tangent,))[1]
            out = {n: w * hv[n] for n in self.names} if out is None else {n: out[n] + w * hv[n] for n in self.names}
        return out

    def matvec(self, x: Tensor) -> Tensor:
        return self.flatten(self.hvp(self.unflatten(x)))

    def matmat(self, xs: Tensor, chunk_size: int | None = None) -> Tensor:
        """H applied to each row of `xs` [k, dim], vectorized with `torch.func.vmap` (in chunks)."""
        if xs.ndim != 2 or xs.shape[1] != self.dim:
            raise ValueError(f"expected a batch of vectors [k, {self.dim}], got {tuple(xs.shape)}")
        return vmap(self.matvec, chunk_size=chunk_size)(xs)

    def rademacher(self, k: int, generator: torch.Generator) -> Tensor:
        """k Rademacher probes [k, dim] (+-1), drawn on CPU from `generator` and moved to the device."""
        z = torch.randint(0, 2, (k, self.dim), generator=generator, dtype=torch.int8)
        return (2 * z - 1).to(device=self.device, dtype=self.dtype)

    def gaussian(self, k: int, generator: torch.Generator) -> Tensor:
        return torch.randn(k, self.dim, generator=generator, dtype=torch.float64).to(self.device, self.dtype)


def gradient(loss_fn: Loss, params: Mapping[str, Tensor], names: Iterable[str] | None = None) -> dict[str, Tensor]:
    """grad F at `params` (restricted to `names`)."""
    return HessianOperator(loss_fn, params, names).gradient()


def hessian_vector_product(loss_fn: Loss, params: Mapping[str, Tensor], v: Mapping[str, Tensor],
                           names: Iterable[str] | None = None) -> dict[str, Tensor]:
    """H v with H = d^2 F / d params^2 (restricted to `names`); `v` has an entry per restricted parameter."""
    return HessianOperator(loss_fn, params, names).hvp(v)


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate tr(H) ~ mean_s z_s^T H z_s over Rademacher z_s, with its standard error."""

    mean: float
    stderr: float
    num_samples: int


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


def hessian_trace(loss_fn: Loss, params: Mapping[str, Tensor], *, num_samples: int = 64,
                  names: Iterable[str] | None = None, seed: int = 0, generator: torch.Generator | None = None,
                  chunk_size: int | None = 16) -> TraceEstimate:
    """Hutchinson's estimator tr(H) = E[z^T H z], z Rademacher (PyHessian's `trace`), probes batched by vmap."""
    _check_count("num_samples", num_samples)
    op = HessianOperator(loss_fn, params, names)
    gen = generator if generator is not None else make_generator(seed)
    z = op.rademacher(num_samples, gen)
    quad = (z * op.matmat(z, chunk_size)).sum(dim=1).double()
    stderr = float(quad.std() / math.sqrt(num_samples)) if num_samples > 1 else float("inf")
    return TraceEstimate(float(quad.mean()), stderr, num_samples)


def hessian_diagonal(loss_fn: Loss, params: Mapping[str, Tensor], *, num_samples: int = 16,
                     names: Iterable[str] | None = None, seed: int = 0, generator: torch.Generator | None = None,
                     chunk_size: int | None = 16) -> dict[str, Tensor]:
    """Hutchinson diagonal diag(H) ~ mean_s z_s * (H z_s) (Bekas et al.); exact when H is diagonal."""
    _check_count("num_samples", num_samples)
    op = HessianOperator(loss_fn, params, names)
    gen = generator if generator is not None else make_generator(seed)
    return op.unflatten(probe_diagonal(op, op.rademacher(num_samples, gen), chunk_size))


def probe_diagonal(op: HessianOperator, probes: Tensor, chunk_size: int | None = 16) -> Tensor:
    """mean_s z_s * (H z_s) over given probes `[S, dim]` (Rademacher: Hutchinson's diagonal), flat `[dim]`."""
    return (probes * op.matmat(probes, chunk_size)).mean(dim=0)


@dataclass(frozen=True)
class LanczosResult:
    """Batched Lanczos tridiagonalizations T_r = Q_r H Q_r^T of R runs.

    `alpha` [R, m], `beta` [R, m-1], orthonormal bases `basis` [R, m, dim]; run r is valid for its first
    `steps[r]` steps (it found an invariant subspace there; the rest is zero).
    """

    alpha: Tensor
    beta: Tensor
    basis: Tensor
    steps: Tensor

    def ritz(self, run: int) -> tuple[Tensor, Tensor]:
        """Ritz values (ascending) of run `run` and the eigenvectors of its T (columns)."""
        m = int(self.steps[run])
        t = torch.diag(self.alpha[run, :m])
        if m > 1:
            t = t + torch.diag(self.beta[run, : m - 1], 1) + torch.diag(self.beta[run, : m - 1], -1)
        return torch.linalg.eigh(t)


def lanczos(matmat: Callable[[Tensor], Tensor], starts: Tensor, num_steps: int) -> LanczosResult:
    """Lanczos with full re-orthogonalization, vectorized over the runs `starts` [R, dim] (`matmat` maps
    [R, dim] -> [R, dim]); a run that reaches an invariant subspace is frozen (its later vectors are zero)."""
    _check_count("num_steps", num_steps)
    runs = starts.shape[0]
    q = starts / starts.norm(dim=1, keepdim=True)
    basis = [q]
    alphas, betas = [], []
    steps = torch.full((runs,), num_steps, dtype=torch.long)
    alive = torch.ones(runs, dtype=torch.bool, device=starts.device)
    scale = torch.zeros(runs, dtype=starts.dtype, device=starts.device)
    for step in range(num_steps):
        w = matmat(basis[-1])
        alpha = (basis[-1] * w).sum(dim=1)
        alphas.append(alpha)
        if step == num_steps - 1:
            break
        q_mat = torch.stack(basis, dim=1)  # [R, j, dim]
        for _ in range(2):  # classical Gram-Schmidt twice: orthogonal to working precision
            w = w - torch.einsum("rjd,rj->rd", q_mat, torch.einsum("rjd,rd->rj", q_mat, w))
        beta = w.norm(dim=1)
        scale = torch.maximum(scale, torch.maximum(alpha.abs(), beta))
        done = alive & (beta <= 1e3 * torch.finfo(w.dtype).eps * scale.clamp(min=1e-30))
        steps[done.cpu()] = step + 1
        alive = alive & ~done
        beta = torch.where(alive, beta, torch.zeros_like(beta))
        betas.append(beta)
        basis.append(torch.where(alive.unsqueeze(1), w / beta.clamp(min=1e-300).unsqueeze(1), torch.zeros_like(w)))
    beta_t = torch.stack(betas, dim=1) if betas else starts.new_zeros(runs, 0)
    return LanczosResult(torch.stack(alphas, dim=1), beta_t, torch.stack(basis, dim=1), steps)


@dataclass(frozen=True)
class Eigenpairs:
    """Eigenvalues `values` [k] (descending) and unit eigenvectors `vectors` [k, dim] in the flat layout."""

    values: Tensor
    vectors: Tensor


METHODS = ("lanczos", "power")


def top_eigenvalues(loss_fn: Loss, params: Mapping[str, Tensor], k: int = 1, *, method: str = "lanczos",
                    names: Iterable[str] | None = None, num_steps: int | None = None, max_iter: int = 200,
                    tol: float = 1e-6, seed: int = 0, generator: torch.Generator | None = None) -> Eigenpairs:
    """Top-k Hessian eigenpairs.

    - "lanczos": the k largest Ritz values of `num_steps` (default min(dim, max(3k, 30))) Lanczos steps.
    - "power": power iteration with deflation (PyHessian's `eigenvalues`): each new vector is kept orthogonal
      to the eigenvectors found so far; converges to the k eigenvalues of largest magnitude (sorted by
      value in the output); stops when the Rayleigh quotient changes by less than `tol` (relative).
    """
    _check_count("k", k)
    _check_count("max_iter", max_iter)
    if method not in METHODS:
        raise ValueError(f"unknown eigenvalue method {method!r}; valid: {list(METHODS)}")
    op = HessianOperator(loss_fn, params, names)
    if k > op.dim:
        raise ValueError(f"k={k} exceeds the number of parameters {op.dim}")
    gen = generator if generator is not None else make_generator(seed)
    if method == "lanczos":
        steps = min(op.dim, max(3 * k, 30)) if num_steps is None else num_steps
        if steps < k:
            raise ValueError(f"num_steps={steps} must be >= k={k}")
        res = lanczos(op.matmat, op.gaussian(1, gen), steps)
        theta, s = res.ritz(0)
        if theta.numel() < k:
            raise ValueError(f"the Hessian has an invariant subspace of size {theta.numel()} < k={k} around the "
                             "start vector (its rank is too small); ask for fewer eigenvalues")
        order = torch.argsort(theta, descending=True)[:k]
        return Eigenpairs(theta[order], s[:, order].T @ res.basis[0, : theta.numel()])
    values, vectors = [], []
    for _ in range(k):
        v = op.gaussian(1, gen)[0]
        prev = None
        for _ in range(max_iter):
            if vectors:
                q = torch.stack(vectors)
                v = v - q.T @ (q @ v)
            v = v / v.norm()
            hv = op.matvec(v)
            lam = float(torch.dot(v, hv))
            v = hv
            if prev is not None and abs(lam - prev) <= tol * (abs(prev) + 1e-12):
                break
            prev = lam
        if vectors:
            q = torch.stack(vectors)
            v = v - q.T @ (q @ v)
        values.append(lam)
        vectors.append(v / v.norm())
    vals = torch.tensor(values, dtype=op.dtype, device=op.device)
    order = torch.argsort(vals, descending=True)
    return Eigenpairs(vals[order], torch.stack(vectors)[order])


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature: per run, Ritz `nodes` [runs, m] and Gauss weights `weights` [runs, m].

    For a unit start vector q, sum_k weights[k] f(nodes[k]) = q^T f(H) q exactly for polynomials f of degree
    < 2m; averaged over random q this estimates (1/d) tr f(H), i.e. the eigenvalue density.
    """

    nodes: Tensor
    weights: Tensor

    def pooled(self) -> tuple[Tensor, Tensor]:
        """All runs' nodes (ascending) with weights summing to 1: a discrete approximation of the spectrum."""
        nodes, order = torch.sort(self.nodes.reshape(-1))
        weights = (self.weights / self.weights.shape[0]).reshape(-1)[order]
        return nodes, weights

    def density(self, grid: Tensor, sigma: float) -> Tensor:
        """Gaussian-smoothed density on `grid`: mean_runs sum_k w_k N(grid; node_k, sigma^2)."""
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        nodes, weights = self.pooled()
        z = (grid.reshape(-1, 1) - nodes.reshape(1, -1)) / sigma
        return (weights * torch.exp(-0.5 * z * z)).sum(dim=1) / (sigma * math.sqrt(2 * math.pi))


def eigenvalue_density(loss_fn: Loss, params: Mapping[str, Tensor], *, num_steps: int = 64, num_runs: int = 1,
                       names: Iterable[str] | None = None, seed: int = 0,
                       generator: torch.Generator | None = None) -> SpectralDensity:
    """SLQ (PyHessian's `density`): `num_runs` Lanczos runs of `num_steps` from Rademacher starts, the runs
    batched into one vmapped Hessian-matrix product per step."""
    _check_count("num_runs", num_runs)
    _check_count("num_steps", num_steps)
    op = HessianOperator(loss_fn, params, names)
    gen = generator if generator is not None else make_generator(seed)
    steps = min(num_steps, op.dim)
    res = lanczos(op.matmat, op.rademacher(num_runs, gen), steps)
    nodes = torch.empty((num_runs, steps), dtype=op.dtype, device=op.device)
    weights = torch.zeros((num_runs, steps), dtype=op.dtype, device=op.device)
    for run in range(num_runs):
        theta, s = res.ritz(run)
        m = theta.numel()
        nodes[run, :m], weights[run, :m] = theta, s[0] ** 2
        nodes[run, m:] = theta[-1]  # invariant subspace reached: zero-weight copies of the last node
    return SpectralDensity(nodes, weights)
