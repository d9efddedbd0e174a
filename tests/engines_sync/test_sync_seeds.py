"""SyncSimulator.stacked: S seeds' simulators as one run of S x n rows equal the S runs alone (float64, shared
feature cache), write the same per-seed checkpoints, and resume a partly done batch: from a common epoch stacked,
from different epochs in groups (`stack_groups`); runs of another shape are refused naming the field."""

import pytest
import torch

from dflbench.data import BatchTransform, partition
from dflbench.engines import SyncConfig, SyncSimulator, TailInputs
from dflbench.mixing import from_topology
from dflbench.topology import make_topology
from dflbench.vision import split_for_cache

SEEDS = (0, 1, 2)


@pytest.fixture
def make_sims(tiny_model, tiny_data):
    """sims(epochs, algorithm) -> one simulator per seed: own tail init, own iid split, own batches; one cache."""
    data = tiny_data()
    prefix, _ = split_for_cache(tiny_model(dtype=torch.float64), "last_block")
    base = SyncConfig(epochs=1, batch_size=4, dtype="float64")
    inputs = TailInputs(prefix, BatchTransform.from_model(tiny_model()), data, base)

    def sims(epochs, algorithm="pushpull", seeds=SEEDS, split="iid"):
        out = []
        for s in seeds:
            _, tail = split_for_cache(tiny_model(seed=10 + s, dtype=torch.float64), "last_block")
            part = partition(data.y_train.numpy(), 4, split, seed=s)
            alg = from_topology(algorithm, make_topology("hub_ring", 4), 0.05, momentum=0.5)
            cfg = SyncConfig(epochs=epochs, batch_size=4, seed=s, dtype="float64")
            out.append(SyncSimulator(tail, inputs, part.indices, alg, cfg))
        return out

    return sims


def _same(a, b):
    assert a.steps == b.steps and a.bytes_sent == b.bytes_sent
    for k in b.params:
        assert torch.allclose(a.params[k], b.params[k], atol=1e-10, rtol=0), k
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha["node_accuracy"] == hb["node_accuracy"]
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], abs=1e-10)


@pytest.mark.parametrize("algorithm", ["pushpull", "gtdgd", "dgd", "dgd_eq1", "centralized"])
def test_stacked_equals_each_seed_alone(make_sims, algorithm):
    alone = [sim.run() for sim in make_sims(2, algorithm)]
    stacked = SyncSimulator.stacked(make_sims(2, algorithm)).run_parts([None] * 3)
    for a, b in zip(stacked, alone):
        _same(a, b)
    assert not torch.allclose(stacked[0].params["head.head.weight"], stacked[1].params["head.head.weight"])


def test_a_partly_done_batch_resumes(make_sims, tmp_path):
    full = [sim.run() for sim in make_sims(3)]
    paths = [tmp_path / f"seed-{s}.pt" for s in SEEDS]
    SyncSimulator.stacked(make_sims(1)).run_parts(paths)                   # the batch stopped after epoch 1
    alone = make_sims(2, seeds=(0,))[0].run(checkpoint=paths[0], resume=True)     # seed 0 went on alone
    assert alone.history[-1]["epoch"] == 2
    sims = make_sims(3)
    groups, split = SyncSimulator.stack_groups(sims, paths, resume=True)
    assert groups == [[0], [1, 2]] and split == ["resume epoch"]
    with pytest.raises(ValueError, match=r"epochs \[2, 1, 1\]"):            # never stacked from different epochs
        SyncSimulator.stacked(make_sims(3)).run_parts(paths, resume=True)
    got = [sims[0].run(checkpoint=paths[0], resume=True),
           *SyncSimulator.stacked(sims[1:]).run_parts(paths[1:], resume=True)]
    for a, b in zip(got, full):
        _same(a, b)


def test_runs_of_another_shape_are_refused(make_sims):
    with pytest.raises(ValueError, match="cannot stack these runs: they differ in algorithm, graph"):
        SyncSimulator.stacked(make_sims(1, "pushpull", seeds=(0,)) + make_sims(1, "local", seeds=(1,)))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        SyncSimulator.stacked(make_sims(1, split="dirichlet:0.3", seeds=(0, 1, 2, 3)))
