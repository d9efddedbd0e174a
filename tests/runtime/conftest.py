"""Shared helpers for the torch.distributed runtime tests: launch local ranks (fork: no torch re-import)."""

from __future__ import annotations

import numpy as np
import pytest

from dflbench.runtime.launch import spawn_local


@pytest.fixture
def launch():
    """`launch(fn, nprocs, *args)`: run `fn(rank, *args)` on `nprocs` local gloo ranks and wait for all."""

    def run(fn, nprocs, *args, join=True):
        return spawn_local(fn, nprocs, *args, join=join, start_method="fork", timeout_s=60.0)

    return run


@pytest.fixture
def band_npz(tmp_path):
    """`band_npz(side, train, test, noise, bright)` -> 'npz:PATH': 4 classes of side x side uint8 grayscale images,
    uniform noise in [0, noise) plus `bright` on rows [c k, (c + 1) k) for class c (k = side / 4), with `train` and
    `test` images per class (numpy Generator seeded 0)."""

    def make(side: int, train: int, test: int, noise: int, bright: int) -> str:
        g = np.random.default_rng(0)
        k = side // 4

        def split(per_class):
            y = np.repeat(np.arange(4), per_class)
            x = g.integers(0, noise, size=(len(y), side, side))
            for c in range(4):
                x[y == c, k * c: k * (c + 1), :] += bright
            return x.astype(np.uint8), y.astype(np.int64)

        (x_tr, y_tr), (x_te, y_te) = split(train), split(test)
        path = tmp_path / "tiny.npz"
        np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
        return f"npz:{path}"

    return make
