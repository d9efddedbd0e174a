"""The decentralized optimizers. Notation: X stacked parameters [n, ...], G(X) stacked local gradients (row i:
grad L_i at row i of X), a the step size, d the local descent direction (after optional momentum, see `base`).

DGD and GT-DGD take ONE mixing matrix W. P2P-FT (Sec. II) assumes W doubly stochastic on a weight-balanced graph;
on a directed graph `from_topology` gives them the graph's row-stochastic normalisation (a_ij = w_ij / sum_j w_ij,
the paper's A), which is only required row stochastic here. With a row-stochastic W that is not also column
stochastic they converge to the minimiser of sum_i pi_i L_i, pi the left Perron vector of W (pi^T W = pi^T),
not of the average loss: the bias the paper's push-pull (A row, B column stochastic) removes.

- DGD        adapt-then-combine with each node's own gradient:  X <- W (X - a d),  d = G(X).
- DGDEq1     P2P-FT eq. (1) as printed: theta_i <- sum_j w_ij (theta_j - a grad L_i(theta_j)), node i's gradient
             at each in-neighbour's parameters.
- DPSGD      combine-then-adapt (Nedic & Ozdaglar 2009; D-PSGD of Lian et al. 2017): X <- W X - a d, d = G(X).
- GTDGD      Qu & Li 2017 (P2P-FT eq. (2) and eq. (1) with tau):  X <- W X - a tau,
             tau <- W tau + G(X_new) - G(X),  tau^0 = G(X^0).
- GTDGDATC   adapt-then-combine gradient tracking: push-pull with A = B = W.
- PushPull   (P2P-FT Algorithm 1, lines 4-7):  theta <- A (theta - a tau),
             tau <- B (tau + G(theta_new) - G(theta)),  tau^0 = G(theta^0);  A row, B column stochastic.
- PushSum    (stochastic gradient push, Nedic & Olshevsky 2016, Assran et al. 2019):
             y <- B (y - a G(z)),  w <- B w,  z = y / w,  y^0 = X^0, w^0 = 1;  B column stochastic.
- Local      (Local-FT): X <- X - a G(X); no communication.
- Centralized  one model on the averaged gradient: X <- X - a mean_i G_i(X), X^0 = mean of the rows of X^0.

Every cross-node operation is a `comm.mix` / `comm.mean` call; the rest is node-local elementwise math.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from .base import Algorithm, GradFn
from .comm import Communicator
from .matrix import MatrixLike, MatrixSchedule, MixingMatrix
from .registry import register_algorithm
from .state import MixingState
from .tree import Tree, tree_leaves, tree_map

Matrix = MatrixLike | Callable[[int], MatrixLike]


@register_algorithm
class DGD(Algorithm):
    """DGD, adapt-then-combine with each node's own gradient: theta_i <- sum_j w_ij (theta_j - a grad L_j(theta_j)).

    The standard reading of P2P-FT eq. (1) (the paper's next sentence calls theta_i - a grad L_i(theta_i) "a local
    gradient descent update"); eq. (1) as printed is `DGDEq1`. W row stochastic (see the module docstring).
    """

    name = "dgd"
    label = "DGD"
    topology_matrices = ("row",)

    def __init__(self, W: Matrix, lr, momentum: float = 0.0, weight_decay: float = 0.0,
                 comm: Communicator | None = None):
        super().__init__(lr, momentum, weight_decay, comm)
        self.W = MatrixSchedule(W, "row", f"{self.name} W")

    def _schedules(self):
        return {"W": self.W}

    def _advance(self, state: MixingState, grad_fn: GradFn, lr: float) -> MixingState:
        W = self.W.at(state.step)
        d, mom = self._direction(state.grads, state)
        half = tree_map(lambda x, g: x - lr * g, state.params, d)
        x = self.comm.mix(W, half)
        grads, aux = self._grad(grad_fn, x)
        sent = self.comm.mix_bytes(W, half, self._n_local(state))
        return replace(state, params=x, grads=grads, aux=aux, momentum=mom, bytes_sent=state.bytes_sent + sent)


@register_algorithm
class DPSGD(DGD):
    """DGD combine-then-adapt (Nedic & Ozdaglar 2009; with stochastic gradients D-PSGD, Lian et al. 2017):
    theta_i <- sum_j w_ij theta_j - a grad L_i(theta_i). W row stochastic (see the module docstring)."""

    name = "dpsgd"
    label = "DGD (CTA)"

    def _advance(self, state: MixingState, grad_fn: GradFn, lr: float) -> MixingState:
        W = self.W.at(state.step)
        d, mom = self._direction(state.grads, state)
        x = tree_map(lambda wx, g: wx - lr * g, self.comm.mix(W, state.params), d)
        grads, aux = self._grad(grad_fn, x)
        sent = self.comm.mix_bytes(W, state.params, self._n_local(state))
        return replace(state, params=x, grads=grads, aux=aux, momentum=mom, bytes_sent=state.bytes_sent + sent)


@register_algorithm
class DGDEq1(DGD):
    """P2P-FT eq. (1) as printed: theta_i <- sum_j w_ij (theta_j - a grad L_i(theta_j)), node i's own loss at each
    in-neighbour's parameters. W row stochastic (see the module docstring).

    Row stochasticity makes this theta_i <- sum_j w_ij theta_j - a d_i with d_i = sum_j w_ij grad L_i(theta_j), the
    direction heavy-ball momentum acts on (as on every algorithm's d; momentum 0 is eq. (1) exactly). Node i receives
    theta_j from its in-neighbours (the bytes DGD sends) and evaluates its gradient at each: in-degree + 1 gradients
    per node and step. Stacked, the in-edges are split into R rounds (round r gives node i its r-th in-neighbour
    j_r(i), padded with itself at weight 0); round r gathers P_r = S_r X with a 0/1 selection matrix S_r (one
    `comm.mix`) and calls grad_fn(P_r) once, so a step makes R + 1 grad_fn calls (the last at the new parameters;
    grad L_i(theta_i) is `state.grads`), each drawing the next mini-batch of a stochastic grad_fn.
    """

    name = "dgd_eq1"
    label = "DGD (eq. 1)"

    def __init__(self, W: Matrix, lr, momentum: float = 0.0, weight_decay: float = 0.0,
                 comm: Communicator | None = None):
        super().__init__(W, lr, momentum, weight_decay, comm)
        self._rounds_of: tuple[MixingMatrix, tuple] | None = None

    def rounds(self, W: MixingMatrix) -> tuple[torch.Tensor, list[tuple[MixingMatrix, torch.Tensor]]]:
        """(w_ii [n], [(S_r, w_{i, j_r(i)} [n]) per round]): the in-edges of W, round r holding node i's r-th
        in-neighbour j_r(i) (itself, weight 0, when it has fewer)."""
        if self._rounds_of is None or self._rounds_of[0] is not W:
            w = W.weights
            nbrs = [W.in_neighbors(i) for i in range(W.n)]
            out = []
            for r in range(max(map(len, nbrs), default=0)):
                src = torch.tensor([row[r] if r < len(row) else i for i, row in enumerate(nbrs)])
                coef = torch.tensor([float(w[i, row[r]]) if r < len(row) else 0.0 for i, row in enumerate(nbrs)],
                                    dtype=torch.float64)
                select = torch.zeros(W.n, W.n, dtype=torch.float64)
                select[torch.arange(W.n), src] = 1.0
                out.append((MixingMatrix(select, "row", f"{W.name} round {r}", connected=False), coef))
            self._rounds_of = (W, (w.diagonal().clone(), out))
        return self._rounds_of[1]

    def _advance(self, state: MixingState, grad_fn: GradFn, lr: float) -> MixingState:
        W = self.W.at(state.step)
        ids = self.comm.node_ids(self._n_local(state))
        diag, rounds = self.rounds(W)

        def scale(c: torch.Tensor, t: Tree) -> Tree:
            return tree_map(lambda v: v * c[ids].to(v).reshape((-1,) + (1,) * (v.ndim - 1)), t)

        wx, d = scale(diag, state.params), scale(diag, state.grads)  # sum_j w_ij theta_j, sum_j w_ij grad L_i(theta_j)
        for select, coef in rounds:
            at = self.comm.mix(select, state.params)  # theta_{j_r(i)} at node i
            g_at, _ = self._grad(grad_fn, at)         # grad L_i(theta_{j_r(i)})
            wx, d = tree_map(torch.add, wx, scale(coef, at)), tree_map(torch.add, d, scale(coef, g_at))
        u, mom = self._direction(d, state)
        x = tree_map(lambda p, g: p - lr * g, wx, u)
        grads, aux = self._grad(grad_fn, x)
        sent = self.comm.mix_bytes(W, state.params, self._n_local(state))
        return replace(state, params=x, grads=grads, aux=aux, momentum=mom, bytes_sent=state.bytes_sent + sent)


@register_algorithm
class PushPull(Algorithm):
    """P2P-FT Algorithm 1 (push-pull / AB gradient tracking), lines 4-7:
    theta <- A (theta - a tau);  g_new = G(theta);  tau <- B (tau + g_new - g_old);  tau^0 = G(theta^0)."""

    name = "pushpull"
    label = "P2P-FT"
    topology_matrices = ("row", "column")

    def __init__(self, A: Matrix, B: Matrix, lr, momentum: float = 0.0, weight_decay: float = 0.0,
                 comm: Communicator | None = None):
        super().__init__(lr, momentum, weight_decay, comm)
        self.A = MatrixSchedule(A, "row", f"{self.name} A")
        self.B = MatrixSchedule(B, "column", f"{self.name} B")

    def _schedules(self):
        return {"A": self.A, "B": self.B}

    def _init_extra(self, state: MixingState) -> MixingState:
        return replace(state, tracker=state.grads)

    def _advance(self, state: MixingState, grad_fn: GradFn, lr: float) -> MixingState:
        A, B = self.A.at(state.step), self.B.at(state.step)
        d, mom = self._direction(state.tracker, state)
        half = tree_map(lambda x, t: x - lr * t, state.params, d)
        x = self.comm.mix(A, half)  # line 4
        grads, aux = self._grad(grad_fn, x)  # lines 5-6
        pre = tree_map(lambda t, g1, g0: t + g1 - g0, state.tracker, grads, state.grads)
        tracker = self.comm.mix(B, pre)  # line 7
        n_local = self._n_local(state)
        sent = self.comm.mix_bytes(A, half, n_local) + self.comm.mix_bytes(B, pre, n_local)
        return replace(state, params=x, grads=grads, tracker=tracker, aux=aux, momentum=mom,
                       bytes_sent=state.bytes_sent + sent)


@register_algorithm
class GTDGDATC(PushPull):
    """GT-DGD adapt-then-combine: push-pull with A = B = W, i.e. theta <- W (theta - a tau),
    tau <- W (tau + G_new - G_old). W row stochastic (see the module docstring)."""

    name = "gtdgd_atc"
    label = "GT-DGD (ATC)"
    topology_matrices = ("row",)

    def __init__(self, W: Matrix, lr, momentum: float = 0.0, weight_decay: float = 0.0,
                 comm: Communicator | None = None):
        Algorithm.__init__(self, lr, momentum, weight_decay, comm)
        self.A = self.B = self.W = MatrixSchedule(W, "row", f"{self.name} W")

    def _schedules(self):
        return {"W": self.W}


@register_algorithm
class GTDGD(GTDGDATC):
    """GT-DGD as Qu & Li 2017 write it, combine-then-adapt: theta <- W theta - a tau,
    tau <- W tau + G(theta_new) - G(theta), tau^0 = G(theta^0).

    This is P2P-FT eq. (2) as printed (sum_j w_ij (tau_j + grad L_i(new) - grad L_i(old)) equals
    W tau + the node's own difference for row-stochastic W) with tau replacing the gradient in eq. (1)
    (sum_j w_ij (theta_j - a tau_i) = W theta - a tau_i). W row stochastic (see the module docstring).
    """

    name = "gtdgd"
    label = "GT-DGD"

    def _advance(self, state: MixingState, grad_fn: GradFn, lr: float) -> MixingState:
        W = self.W.at(state.step)
        d, mom = self._direction(state.tracker, state)
        x = tree_map(lambda wx, t: wx - lr * t, self.comm.mix(W, state.params), d)
        grads, aux = self._grad(grad_fn, x)
        tracker = tree_map(lambda wt, g1, g0: wt + g1 - g0, self.comm.mix(W, state.tracker), grads, state.grads)
        n_local = self._n_local(state)
        sent = self.comm.mix_bytes(W, state.params, n_local) + self.comm.mix_bytes(W, state.tracker, n_local)
        return replace(state, params=x, grads=grads, tracker=tracker, aux=aux, momentum=mom,
                       bytes_sent=state.bytes_sent + sent)


@register_algorithm
class PushSum(Algorithm):
    """Stochastic gradient push: y <- B (y - a G(z)), w <- B w, z = y / w (y^0 = X^0, w^0 = 1).

    `state.params` is the de-biased z; `state.numerator` is y and `state.weight` is w ([n]).
    """

    name = "pushsum"
    label = "Push-sum"
    topology_matrices = ("column",)

    def __init__(self, B: Matrix, lr, momentum: float = 0.0, weight_decay: float = 0.0,
                 comm: Communicator | None = None):
        super().__init__(lr, momentum, weight_decay, comm)
        self.B = MatrixSchedule(B, "column", f"{self.name} B")

    def _schedules(self):
        return {"B": self.B}

    def _init_extra(self, state: MixingState) -> MixingState:
        first = tree_leaves(state.params)[0]
        weight = torch.ones(first.shape[0], dtype=first.dtype, device=first.device)
        return replace(state, numerator=state.params, weight=weight)

    def _advance(self, state: MixingState, grad_fn: GradFn, lr: float) -> MixingState:
        B = self.B.at(state.step)
        d, mom = self._direction(state.grads, state)
        half = tree_map(lambda y, g: y - lr * g, state.numerator, d)
        y, w = self.comm.mix(B, (half, state.weight))
        z = tree_map(lambda t: t / w.reshape((-1,) + (1,) * (t.ndim - 1)), y)
        grads, aux = self._grad(grad_fn, z)
        sent = self.comm.mix_bytes(B, (half, state.weight), self._n_local(state))
        return replace(state, params=z, grads=grads, numerator=y, weight=w, aux=aux, momentum=mom,
                       bytes_sent=state.bytes_sent + sent)


@register_algorithm
class Local(Algorithm):
    """Local-FT: every node descends on its own loss, X <- X - a G(X); sends nothing."""

    name = "local"
    label = "Local-FT"

    def _advance(self, state: MixingState, grad_fn: GradFn, lr: float) -> MixingState:
        d, mom = self._direction(state.grads, state)
        x = tree_map(lambda p, g: p - lr * g, state.params, d)
        grads, aux = self._grad(grad_fn, x)
        return replace(state, params=x, grads=grads, aux=aux, momentum=mom)


@register_algorithm
class Centralized(Algorithm):
    """One model on the averaged gradient: X <- X - a mean_i G_i(X); X^0 = the mean of the rows of x0.

    Every row holds the same model; each node sends its gradient once per step (`comm.mean_bytes`).
    """

    name = "centralized"
    label = "Centralized (averaged gradients)"

    def _initial_params(self, x0):
        return self.comm.mean(x0)

    def _advance(self, state: MixingState, grad_fn: GradFn, lr: float) -> MixingState:
        avg = self.comm.mean(state.grads)
        d, mom = self._direction(avg, state)
        x = tree_map(lambda p, g: p - lr * g, state.params, d)
        grads, aux = self._grad(grad_fn, x)
        sent = self.comm.mean_bytes(state.grads, self._n_local(state))
        return replace(state, params=x, grads=grads, aux=aux, momentum=mom, bytes_sent=state.bytes_sent + sent)

