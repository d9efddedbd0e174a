"""Loading a built-in offline data set imports only what it reads: each loader runs in a fresh interpreter on files
made here (no downloads), and neither torchvision nor torch._dynamo may be loaded afterwards (issue 27: reading
Fashion-MNIST through torchvision pulled in torch._dynamo, inductor, sympy and triton, seconds per run)."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

HEAVY = ("torchvision", "torch._dynamo", "torch._inductor", "timm", "sympy")


def _idx_gz(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _fashion_files(root) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _idx_gz(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx_gz(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))


def _npz_file(path) -> None:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), y_train=np.arange(6) % 2,
             x_test=rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), y_test=np.array([0, 1]))


@pytest.mark.parametrize("spec", ["fashion-mnist", "npz", "digits"])
def test_loading_a_builtin_dataset_imports_neither_torchvision_nor_dynamo(spec, tmp_path):
    if spec == "fashion-mnist":
        _fashion_files(tmp_path)
        expected = [12, 5]
    elif spec == "npz":
        _npz_file(tmp_path / "d.npz")
        spec, expected = f"npz:{tmp_path / 'd.npz'}", [6, 2]
    else:
        expected = [1347, 450]
    code = ("import json, sys\n"
            "from dflbench.data import load_dataset\n"
            f"d = load_dataset({spec!r}, data_dir={str(tmp_path)!r})\n"
            f"print(json.dumps([[len(d.y_train), len(d.y_test)], [m for m in {HEAVY!r} if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    sizes, loaded = json.loads(out.strip().splitlines()[-1])
    assert sizes == expected
    assert loaded == []
