"""CUDA: the same results as on CPU (dense and sparse), and bf16 autocast does not reach the mixing."""

from __future__ import annotations

import pytest
import torch

from dflbench.mixing import LocalCommunicator, PushPull, PushSum, run
from dflbench.topology import column_stochastic, exponential, row_stochastic

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_matches_cpu(sparse, make_problem, random_weights):
    prob = make_problem(n=64, seed=1)
    W = random_weights("exponential", 64, seed=2)
    x0 = torch.zeros(64, prob.q, dtype=torch.float64)

    def alg():
        return PushPull(row_stochastic(W), column_stochastic(W), 0.05, comm=LocalCommunicator(sparse=sparse))

    cpu = run(alg(), prob.grad_fn, x0, 20)
    M, b = prob.M.cuda(), prob.b.cuda()

    def grad_cuda(x):
        r = torch.einsum("nij,nj->ni", M, x) - b
        return torch.einsum("nij,ni->nj", M, r)

    gpu = run(alg(), grad_cuda, x0.cuda(), 20)
    assert gpu.params.device.type == "cuda" and gpu.bytes_sent.device.type == "cpu"
    assert torch.allclose(gpu.params.cpu(), cpu.params, atol=1e-10, rtol=0)


def test_cuda_autocast_bf16_keeps_fp32_mixing():
    B = column_stochastic(exponential(16))
    x0 = torch.randn(16, 257, device="cuda")
    grad = lambda x: torch.zeros_like(x)  # noqa: E731
    plain = run(PushSum(B, 0.1), grad, x0, 5)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        auto = run(PushSum(B, 0.1), grad, x0, 5)
    assert auto.params.dtype == torch.float32 and torch.equal(auto.params, plain.params)
