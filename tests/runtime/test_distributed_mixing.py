"""DistributedCommunicator vs the simulator: 4 gloo ranks x 20 steps of push-pull (P2P-FT Alg. 1), DGD (ATC, eq. 1,
CTA = D-PSGD), GT-DGD (Qu & Li, ATC), push-sum and centralized (comm.mean: the one all-reduce) on a tiny MLP give
every node the parameters (and trackers) the single-process LocalCommunicator run gives (to 1e-5), with one node per
rank and (push-pull) with ranks hosting two nodes; every point-to-point message is exactly one node's row of the mixed
parameters or trackers (push-sum: plus its weight)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from dflbench.mixing import LocalCommunicator, from_topology, run, tree_leaves
from dflbench.runtime.backend import DistEnv, destroy_process_group, init_process_group
from dflbench.runtime.comm import DistributedCommunicator
from dflbench.topology import exponential

ALGORITHMS = ("pushpull", "dgd", "dgd_eq1", "gtdgd", "gtdgd_atc", "dpsgd", "pushsum", "centralized")
# dgd_eq1 gathers theta in rounds of one in-neighbour each: every edge once per step, as one mix
MIXES_PER_STEP = {"pushpull": 2, "gtdgd": 2, "gtdgd_atc": 2, "dgd": 1, "dgd_eq1": 1, "dpsgd": 1, "pushsum": 1}
STEPS = 20


def _problem(n: int, seed: int = 0):
    """Per-node 2-class data (different per node) and n copies of a tiny MLP's initial weights (stacked)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, 4, generator=g)
    y = ((x[..., 0] + 0.3 * torch.arange(n)[:, None]) > 0).long()
    init = {"w1": 0.5 * torch.randn(4, 6, generator=g), "b1": torch.zeros(6),
            "w2": 0.5 * torch.randn(6, 2, generator=g), "b2": torch.zeros(2)}
    return x, y, {k: v.expand(n, *v.shape).clone() for k, v in init.items()}


def _grad_fn(x, y, nodes: torch.Tensor):
    """Stochastic per-node gradients of the MLP for rows `nodes` (batched matmuls; the nodes' losses are
    independent, so the gradient of their sum is every node's own gradient); call c of node i uses the batch
    seeded by (i, c)."""
    calls = [0]

    def grad_fn(params):
        idx = torch.stack([torch.randperm(32, generator=torch.Generator().manual_seed(1000 * int(i) + calls[0]))[:8]
                           for i in nodes])
        calls[0] += 1
        xb = torch.gather(x[nodes], 1, idx[..., None].expand(-1, -1, x.shape[-1]))
        yb = torch.gather(y[nodes], 1, idx)
        with torch.enable_grad():
            p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            h = torch.tanh(torch.bmm(xb, p["w1"]) + p["b1"][:, None])
            logits = torch.bmm(h, p["w2"]) + p["b2"][:, None]
            losses = nn.functional.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none")
            losses = losses.view(len(nodes), -1).mean(1)
            grads = torch.autograd.grad(losses.sum(), list(p.values()))
        return dict(zip(p, grads)), losses.detach()

    return grad_fn


def _solve(name: str, n: int, comm, nodes: torch.Tensor):
    x, y, x0 = _problem(n)
    alg = from_topology(name, exponential(n), lr=0.1, comm=comm)
    state = run(alg, _grad_fn(x, y, nodes), {k: v[nodes] for k, v in x0.items()}, STEPS)
    out = {"params": state.params, "bytes_sent": state.bytes_sent}
    if state.tracker is not None:
        out["tracker"] = state.tracker
    return out


def _worker(rank: int, out_dir: str) -> None:
    env = DistEnv.from_env(device="cpu", backend="auto")
    init_process_group(env, timeout_s=60)
    sent = []
    real = dist.batch_isend_irecv

    def recording(ops):
        sent.extend((op.peer, tuple(op.tensor.shape), op.tensor.dtype) for op in ops if op.op is dist.isend)
        return real(ops)

    dist.batch_isend_irecv = recording
    results = {}
    for n, names in ((4, ALGORITHMS), (6, ("pushpull",))):
        for name in names:
            comm = DistributedCommunicator(n)
            sent.clear()
            res = _solve(name, n, comm, comm.local)
            res.update(nodes=comm.local, sent=list(sent), wire_bytes=comm.wire_bytes, backend=env.backend)
            results[(n, name)] = res
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    destroy_process_group()


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory):
    from dflbench.runtime.launch import spawn_local

    out = tmp_path_factory.mktemp("dist")
    spawn_local(_worker, 4, str(out), start_method="fork", timeout_s=60)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(4)]


@pytest.mark.parametrize("name, n", [(name, 4) for name in ALGORITHMS] + [("pushpull", 6)])
def test_every_node_matches_the_simulator(distributed_runs, name, n):
    ref = _solve(name, n, LocalCommunicator(), torch.arange(n))
    for res in distributed_runs:
        nodes = res[(n, name)]["nodes"]
        for what in ("params", "tracker") if "tracker" in ref else ("params",):
            for k, v in ref[what].items():
                torch.testing.assert_close(res[(n, name)][what][k], v[nodes], atol=1e-5, rtol=0)
        assert torch.equal(res[(n, name)]["bytes_sent"], ref["bytes_sent"][nodes])
    assert distributed_runs[0][(n, name)]["backend"] == "gloo"


@pytest.mark.parametrize("name", list(MIXES_PER_STEP))
def test_messages_are_single_parameter_rows(distributed_runs, name):
    """n = 4 (one node per rank): each message is one [1, P] float32 row of the params (or trackers; push-sum
    [1, P + 1]: numerator and weight), one per out-neighbour and mix; push-pull and GT-DGD mix twice per step
    (theta and tau), the others once."""
    n = 4
    _, _, x0 = _problem(n)
    numel = sum(leaf[0].numel() for leaf in tree_leaves(x0)) + (name == "pushsum")
    W = exponential(n).weights
    mixes = MIXES_PER_STEP[name]
    for rank, res in enumerate(distributed_runs):
        sent = res[(n, name)]["sent"]
        out_nbrs = sorted(i for i in range(n) if i != rank and W[i, rank] > 0)  # every algorithm: the directed graph
        assert all(shape == (1, numel) and dtype == torch.float32 for _, shape, dtype in sent)
        assert sorted(p for p, _, _ in sent) == sorted(out_nbrs * mixes * STEPS)
        assert res[(n, name)]["wire_bytes"] == int(res[(n, name)]["bytes_sent"].sum())
