import numpy as np
import pytest

from dflbench.data import TABLE_II, class_ranges, list_partitioners, partition


def _labels(c=10, per=30, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(c), per))


def _assert_disjoint_cover(p, n_samples):
    allix = np.concatenate(p.indices)
    assert len(allix) == len(np.unique(allix)) == n_samples


@pytest.mark.parametrize("dataset,c,expected", [
    ("cifar10", 10, [[0, 1], [2, 3], [4, 5, 6], [7, 8, 9]]),
    ("cifar100", 100, [list(range(0, 10)), list(range(10, 20)), list(range(20, 75)), list(range(75, 100))]),
    ("oxford-pets", 37, [list(range(0, 5)), list(range(5, 20)), list(range(20, 30)), list(range(30, 37))]),
    ("flowers102", 102, [list(range(0, 20)), list(range(20, 40)), list(range(40, 80)), list(range(80, 102))]),
])
def test_classes_table_ii_exact(dataset, c, expected):
    y = _labels(c, 5)
    p = partition(y, 4, "classes", dataset=dataset)
    assert [sorted(set(y[ix].tolist())) for ix in p.indices] == expected
    _assert_disjoint_cover(p, len(y))
    # each node holds *all* samples of its classes
    for ix, cls in zip(p.indices, expected):
        assert len(ix) == 5 * len(cls)


def test_classes_row_forced_for_renamed_dataset():
    y = _labels(10, 4)
    assert partition(y, 4, "classes:cifar10", dataset="npz:/x.npz").histograms(y, 10)[2].tolist() == \
        [0, 0, 0, 0, 4, 4, 4, 0, 0, 0]
    with pytest.raises(ValueError, match="Table II row"):
        partition(y, 4, "classes:mnist")
    with pytest.raises(ValueError, match="10 classes over 4 nodes"):
        partition(y, 3, "classes:cifar10")


def test_classes_even_contiguous_otherwise():
    y = _labels(10, 3)
    p = partition(y, 3, "classes", dataset="digits")
    assert class_ranges(3, 10) == ((0, 3), (4, 6), (7, 9))
    assert [sorted(set(y[ix].tolist())) for ix in p.indices] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    # Table II only with 4 nodes on a matching class count
    assert class_ranges(4, 10, "cifar10") == TABLE_II["cifar10"]
    assert class_ranges(5, 10, "cifar10") == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    with pytest.raises(ValueError, match="nodes <= classes"):
        partition(y, 11, "classes")


def test_dirichlet_reproducible_disjoint_and_skewed():
    y = _labels(10, 100)
    a = partition(y, 5, "dirichlet:0.1", seed=3)
    b = partition(y, 5, "dirichlet:0.1", seed=3)
    c = partition(y, 5, "dirichlet:0.1", seed=4)
    assert all(np.array_equal(u, v) for u, v in zip(a.indices, b.indices))
    assert not all(np.array_equal(u, v) for u, v in zip(a.indices, c.indices))
    _assert_disjoint_cover(a, len(y))
    h_skew = a.histograms(y, 10) / np.array(a.sizes())[:, None]
    big = partition(y, 5, "dirichlet:1000", seed=3)
    h_flat = big.histograms(y, 10) / np.array(big.sizes())[:, None]
    # small alpha: far from uniform class mix; large alpha: close to it
    assert np.abs(h_skew - 0.1).max() > 0.3
    assert np.abs(h_flat - 0.1).max() < 0.05


def test_iid_and_shards():
    y = _labels(10, 20)
    p = partition(y, 4, "iid", seed=1)
    _assert_disjoint_cover(p, len(y))
    assert p.sizes() == [50, 50, 50, 50]
    s = partition(y, 5, "shards:2", seed=1)
    _assert_disjoint_cover(s, len(y))
    # each shard of 20 sorted samples is a single class, so each node sees at most 2 classes
    assert all(len(set(y[ix].tolist())) <= 2 for ix in s.indices)
    assert s.sizes() == [40] * 5


@pytest.mark.parametrize("spec,match", [("bogus", "valid: classes"), ("dirichlet", "needs an argument"),
                                        ("dirichlet:-1", "positive"), ("shards:x", "positive"),
                                        ("iid:3", "takes no argument")])
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        partition(_labels(), 4, spec)


def test_list_partitioners():
    assert list_partitioners() == ["classes:[ROW]", "dirichlet:ALPHA", "iid", "shards:K"]


@pytest.mark.parametrize("form", list_partitioners())
def test_every_registered_partitioner_splits_disjointly(form):
    """Each registry entry, with an argument where its spec takes one, covers every sample exactly once."""
    name, _, arg = form.partition(":")
    spec = {"ALPHA": f"{name}:1.0", "K": f"{name}:2"}.get(arg, name)
    y = _labels(8, 10)
    p = partition(y, 4, spec, seed=3)
    _assert_disjoint_cover(p, len(y))
    assert p.n == 4 and min(p.sizes()) > 0
