"""Fixtures of the command-line fault tests: a small npz dataset and a runner that checks the one-line answers."""

from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from dflbench.cli.main import app

TINY = ["p2pft", "--model", "vit_tiny_patch16_224", "--model-kwargs",
        "img_size=8,patch_size=4,embed_dim=16,depth=2,num_heads=2", "--device", "cpu", "--threads", "1", "--epochs",
        "1"]


def write_npz(path, n_train=120, n_test=40):
    """16x16 grayscale, 4 classes (class c brightens the image by 40 c)."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 4, n)
        return np.clip(rng.normal(60, 40, (n, 16, 16)) + 40 * y[:, None, None], 0, 255).astype(np.uint8), y

    (x_tr, y_tr), (x_te, y_te) = make(n_train), make(n_test)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


def aedfl_args(data, out, *more):
    """A `dflbench aedfl` command line that trains in about a second."""
    return ["aedfl", "--dataset", f"npz:{data}", "--devices", "4", "--max-updates", "1", "--batch-size", "8",
            "--local-steps", "1", "--eval-samples", "20", "--out", str(out), *more]


def one_error_line(args, code=2, prefix="error: ") -> str:
    """The one line a failing command prints (warnings aside), after checking its exit code and no traceback."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("warning: ")
             and not line.endswith(": started")]                  # progress lines off a terminal
    assert len(lines) == 1 and lines[0].startswith(prefix), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def small_npz(tmp_path):
    return write_npz(tmp_path / "small.npz")


@pytest.fixture
def cli():
    """The helpers above, as one object."""
    return SimpleNamespace(TINY=TINY, aedfl_args=aedfl_args, one_error_line=one_error_line, write_npz=write_npz,
                           invoke=CliRunner().invoke, app=app)
