"""Checkpoint + resume: an interrupted run continued with resume=True equals the uninterrupted run."""

import numpy as np
import pytest
import torch

from dflbench.data import BatchTransform, partition
from dflbench.engines import SyncConfig, SyncSimulator, TailInputs
from dflbench.errors import UserError
from dflbench.mixing import from_topology
from dflbench.topology import make_topology
from dflbench.vision import split_for_cache


def _sim(tiny_model, tiny_data, epochs, algorithm="pushpull", seed=0, momentum=0.5):
    data = tiny_data()
    model = tiny_model()
    prefix, tail = split_for_cache(model, "last_block")
    cfg = SyncConfig(epochs=epochs, batch_size=4, seed=seed)
    inputs = TailInputs(prefix, BatchTransform.from_model(model), data, cfg)
    part = partition(data.y_train.numpy(), 4, "dirichlet:0.5", seed=seed)
    alg = from_topology(algorithm, make_topology("exponential", 4), 0.05, momentum=momentum)
    return SyncSimulator(tail, inputs, part.indices, alg, cfg)


def _strip_times(history):
    return [{k: v for k, v in h.items() if k != "wall_time_s"} for h in history]


@pytest.mark.parametrize("algorithm", ["pushpull", "gtdgd", "dgd_eq1"])  # dgd_eq1: several mini-batches per step
def test_resume_equals_uninterrupted(tiny_model, tiny_data, tmp_path, algorithm):
    full = _sim(tiny_model, tiny_data, 3, algorithm).run(checkpoint=tmp_path / "full.pt")
    ckpt = tmp_path / "part.pt"
    first = _sim(tiny_model, tiny_data, 1, algorithm).run(checkpoint=ckpt)
    assert first.steps < full.steps
    resumed = _sim(tiny_model, tiny_data, 3, algorithm).run(checkpoint=ckpt, resume=True)
    assert resumed.steps == full.steps
    for k in full.params:
        assert torch.equal(full.params[k], resumed.params[k]), k
    assert _strip_times(resumed.history) == _strip_times(full.history)
    assert resumed.bytes_sent == full.bytes_sent
    # a finished run resumes to itself without training
    again = _sim(tiny_model, tiny_data, 3, algorithm).run(checkpoint=ckpt, resume=True)
    assert again.steps == full.steps and torch.equal(again.params["head.head.weight"], full.params["head.head.weight"])


def test_resume_refuses_a_different_run(tiny_model, tiny_data, tmp_path):
    ckpt = tmp_path / "c.pt"
    _sim(tiny_model, tiny_data, 1).run(checkpoint=ckpt)
    with pytest.raises(UserError, match="different run.*seed"):
        _sim(tiny_model, tiny_data, 2, seed=1).run(checkpoint=ckpt, resume=True)


def test_history_has_every_epoch_and_full_test_eval(tiny_model, tiny_data):
    sim = _sim(tiny_model, tiny_data, 2)
    res = sim.run()
    assert [h["epoch"] for h in res.history] == [0, 1, 2]
    assert all(len(h["node_accuracy"]) == 4 for h in res.history)
    # accuracy values are multiples of 1/|test| (every node sees the full test set)
    n_test = len(sim.inputs.data.y_test)
    for a in res.history[-1]["node_accuracy"]:
        assert abs(a * n_test - round(a * n_test)) < 1e-9
    assert np.isclose(res.mean_accuracy, np.mean(res.node_accuracy))
