"""BlockCommunicator: S independent problems stacked along the rows run as one system give, block by block, exactly
the states S separate runs give (every algorithm, momentum and weight decay on); concat_states / split invert."""

import pytest
import torch

from dflbench.mixing import BlockCommunicator, LocalCommunicator, MixingState, concat_states, from_topology, run
from dflbench.mixing.registry import list_algorithms
from dflbench.topology import exponential

FIELDS = ("params", "grads", "tracker", "momentum", "numerator", "weight", "aux", "bytes_sent")


def _stacked(probs):
    """grad_fn of the stacked system: each block's gradients from its own problem."""
    n = probs[0].n

    def grad_fn(x):
        outs = [p.grad_fn(x[b * n:(b + 1) * n]) for b, p in enumerate(probs)]
        return torch.cat([g for g, _ in outs]), torch.cat([loss for _, loss in outs])

    return grad_fn


@pytest.mark.parametrize("name", list_algorithms())
def test_stacked_blocks_equal_separate_runs(make_problem, name):
    probs = [make_problem(n=6, q=3, seed=s) for s in range(3)]
    x0s = [torch.randn(6, 3, generator=torch.Generator().manual_seed(10 + s), dtype=torch.float64) for s in range(3)]
    kw = dict(momentum=0.5, weight_decay=0.01)
    alone = [run(from_topology(name, exponential(6), 0.05, **kw), p.grad_fn, x0, 7) for p, x0 in zip(probs, x0s)]
    alg = from_topology(name, exponential(6), 0.05, comm=BlockCommunicator(LocalCommunicator(), 3), **kw)
    stacked = run(alg, _stacked(probs), torch.cat(x0s), 7)
    for block, ref in zip(stacked.split(3), alone):
        assert block.step == ref.step and block.grad_calls == ref.grad_calls
        for f in FIELDS:
            a, b = getattr(block, f), getattr(ref, f)
            assert (a is None) == (b is None), f
            if a is not None:
                assert torch.equal(a, b), (name, f)


def test_concat_then_split_is_the_identity_and_mismatches_are_refused():
    states = [MixingState(params={"w": torch.full((2, 3), float(s))}, grads={"w": torch.zeros(2, 3)}, step=4,
                          bytes_sent=torch.tensor([s, s]), tracker=None, aux=torch.ones(2), grad_calls=5)
              for s in range(3)]
    back = concat_states(states).split(3)
    for a, b in zip(back, states):
        assert torch.equal(a.params["w"], b.params["w"]) and torch.equal(a.bytes_sent, b.bytes_sent)
        assert a.tracker is None and a.step == 4 and a.grad_calls == 5
    other = MixingState(params={"w": torch.zeros(2, 3)}, grads={"w": torch.zeros(2, 3)}, step=3,
                        bytes_sent=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="same steps"):
        concat_states([states[0], other])
    with pytest.raises(ValueError, match="equal blocks"):
        states[0].split(3)
    with pytest.raises(ValueError, match="equal blocks"):
        BlockCommunicator(LocalCommunicator(), 4).num_nodes(6)
