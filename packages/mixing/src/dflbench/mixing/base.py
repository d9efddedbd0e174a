"""The algorithm protocol shared by every decentralized optimizer.

    alg = PushPull(A, B, lr)                 # validated once here
    state = alg.init(x0, grad_fn)            # evaluates grad_fn(x0) once
    state = alg.step(state, grad_fn)         # one synchronous round: one grad_fn call per step
    state.params                             # stacked parameters, tensor [n, q] or dict of [n, *shape]

`grad_fn(params)` returns per-node gradients with the structure of `params`, or `(grads, aux)`; the last
`aux` (e.g. per-node losses) is kept in `state.aux`. (With tuple-structured params a returned 2-tuple is
read as the gradients, so aux needs dict or tensor params.) Gradients are always evaluated at the new parameters
at the end of a step, so `state.grads` / `state.aux` belong to `state.params`. Every algorithm but `DGDEq1` calls
grad_fn once per step; `state.grad_calls` counts the calls since `init` (a stochastic grad_fn that draws one
mini-batch per call resumes from it).

Optional, identical for every algorithm (off by default): weight decay adds `weight_decay * x` to the
gradient before anything else uses it (so trackers track the regularised gradient), and heavy-ball
momentum replaces the local descent direction d (the gradient, the tracker tau, or the averaged gradient)
by u <- momentum * u + d, as torch.optim.SGD does. `lr` is a float or a schedule t -> float.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, Callable

import torch

from .comm import Communicator, LocalCommunicator
from .matrix import MatrixSchedule
from .state import MixingState
from .tree import Tree, check_like, nonfinite_rows, num_rows, tree_leaves, tree_map

GradFn = Callable[[Tree], Any]


class NonFiniteError(ValueError):
    """NaN or Inf appeared in the parameters, gradients or trackers; the message names the nodes."""


class Algorithm(ABC):
    """Base class: holds lr / momentum / weight decay / communicator and the shared step machinery.

    Subclasses set `name` (their registry name, `registry.register_algorithm`), `label` (their name in tables and
    plots), `topology_matrices` (the normalisations of a graph's W their constructor takes before `lr`, in order:
    "row", "column"; see `registry.from_topology`), name their matrix schedules in `_schedules()` ({"A": ...,
    "B": ...}), and implement `_advance`.
    """

    name = "algorithm"
    label = "algorithm"
    topology_matrices: tuple[str, ...] = ()

    def __init__(self, lr: float | Callable[[int], float], momentum: float = 0.0, weight_decay: float = 0.0,
                 comm: Communicator | None = None):
        if not callable(lr):
            self._check_lr(lr, "lr")
        if not (0.0 <= momentum < 1.0):
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if not (weight_decay >= 0.0 and math.isfinite(weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
        if comm is not None and not isinstance(comm, Communicator):
            raise ValueError(f"comm must be a dflbench.mixing.Communicator, got {type(comm).__name__}")
        self.lr = lr
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.comm = comm if comm is not None else LocalCommunicator()
        self._calls = 0  # grad_fn calls in the current init / step

    # --- protocol -------------------------------------------------------------------------------------

    def init(self, x0: Tree, grad_fn: GradFn) -> MixingState:
        """Validate `x0` against the matrices, evaluate the first gradients, build the state."""
        n_local = num_rows(x0)
        n = self.comm.num_nodes(n_local)
        for sched in self._schedules().values():
            sched.check_n(n)
        x0 = self._initial_params(tree_map(lambda t: t.detach().clone(), x0))
        self._calls = 0
        grads, aux = self._grad(grad_fn, x0)
        state = MixingState(params=x0, grads=grads, step=0, bytes_sent=self._zero_bytes(n_local), aux=aux,
                            grad_calls=self._calls)
        if self.momentum > 0:
            state.momentum = tree_map(torch.zeros_like, x0)
        state = self._init_extra(state)
        self._check_finite(state, "init")
        return state

    def step(self, state: MixingState, grad_fn: GradFn) -> MixingState:
        """One round from step t = state.step to t + 1 (never modifies `state` in place)."""
        lr = self.lr_at(state.step)
        self._calls = 0
        new = self._advance(state, grad_fn, lr)
        calls = None if state.grad_calls is None else state.grad_calls + self._calls
        new = replace(new, step=state.step + 1, grad_calls=calls)
        self._check_finite(new, f"step {new.step}")
        return new

    def lr_at(self, t: int) -> float:
        """The step size of step t (the schedule's value, checked)."""
        if not callable(self.lr):
            return self.lr
        lr = self.lr(t)
        self._check_lr(lr, f"lr schedule at step {t}")
        return float(lr)

    def matrices(self, t: int = 0) -> dict[str, torch.Tensor]:
        """The mixing matrices step t uses, by role ("W", or "A" and "B"; none for local / centralized)."""
        return {role: sched.at(t).weights for role, sched in self._schedules().items()}

    # --- hooks ----------------------------------------------------------------------------------------

    def _schedules(self) -> dict[str, MatrixSchedule]:
        return {}

    def _initial_params(self, x0: Tree) -> Tree:
        return x0

    def _init_extra(self, state: MixingState) -> MixingState:
        return state

    @abstractmethod
    def _advance(self, state: MixingState, grad_fn: GradFn, lr: float) -> MixingState:
        """Steps t -> t + 1 with step size `lr`: new params/grads/aux/trackers/bytes (step is set by `step`)."""

    # --- shared pieces --------------------------------------------------------------------------------

    def _grad(self, grad_fn: GradFn, params: Tree) -> tuple[Tree, Any]:
        """grad_fn(params) (+ weight_decay * params), checked against params; returns (grads, aux)."""
        out = grad_fn(params)
        self._calls += 1
        aux = None
        if isinstance(out, tuple) and len(out) == 2 and not isinstance(params, tuple):
            out, aux = out
        check_like(out, params, "grad_fn output")
        if self.weight_decay > 0:
            out = tree_map(lambda g, x: g + self.weight_decay * x, out, params)
        return out, aux

    def _direction(self, d: Tree, state: MixingState) -> tuple[Tree, Tree | None]:
        """Heavy-ball: u <- momentum * u + d (returns (u, u)); without momentum returns (d, None)."""
        if self.momentum == 0:
            return d, None
        u = tree_map(lambda m, g: self.momentum * m + g, state.momentum, d)
        return u, u

    def _zero_bytes(self, n_local: int) -> torch.Tensor:
        return torch.zeros(n_local, dtype=torch.int64)

    def _n_local(self, state: MixingState) -> int:
        return state.bytes_sent.shape[0]

    def _check_finite(self, state: MixingState, when: str) -> None:
        """NonFiniteError naming the nodes if any of params/grads/tracker/numerator/weight holds NaN or Inf.

        Fast path: one sum per leaf and one host sync; the per-row search runs only when that sum is
        not finite (an overflowing sum of finite values finds no row and passes)."""
        trees = [(what, getattr(state, what)) for what in ("params", "grads", "tracker", "numerator", "weight")]
        trees = [(what, t) for what, t in trees if t is not None]
        total = sum(leaf.sum(dtype=torch.float64) for _, t in trees for leaf in tree_leaves(t))
        if bool(torch.isfinite(total)):
            return
        ids = self.comm.node_ids(self._n_local(state))
        for what, tree in trees:
            bad = nonfinite_rows(tree if what != "weight" else tree[:, None])
            if bad.any():
                nodes = ids[bad.cpu()].tolist()
                raise NonFiniteError(
                    f"{self.name}: NaN/Inf in {what} at {when} on nodes {nodes[:16]}"
                    f"{' ...' if len(nodes) > 16 else ''}; lower the learning rate or check the gradients")

    @staticmethod
    def _check_lr(lr, what: str) -> None:
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"{what} must be a finite number >= 0, got {lr!r}")
