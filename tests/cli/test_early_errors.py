"""A bad value fails before any data loads: with a dataset whose loading takes longer than 3 s, a bad --lr, --topology,
--split, --model or method option is reported within 3 s, in one line naming the option, and the loader never runs."""

import time

import pytest
from typer.testing import CliRunner

from dflbench.cli.main import app

from .conftest import one_error_line

SLOW_S = 5.0


class Loaded(Exception):
    """Raised by the slow loader after its sleep: the command got as far as loading data."""


@pytest.fixture
def slow_data(monkeypatch):
    calls = []

    def slow(*args, **kwargs):
        calls.append(args)
        time.sleep(SLOW_S)
        raise Loaded

    for where in ("dflbench.recipes.aedfl.load_dataset", "dflbench.recipes.p2pft.load_dataset",
                  "dflbench.recipes.pretrain.load_dataset"):
        monkeypatch.setattr(where, slow)
    return calls


P2PFT = ["p2pft", "--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=8,patch_size=4", "--threads", "1"]
AEDFL = ["aedfl", "--devices", "4", "--max-updates", "1"]
CASES = [
    (AEDFL + ["--lr", "-0.1"], "--lr"), (AEDFL + ["--lr", "nan"], "--lr"),
    (AEDFL + ["--method-opt", "fedbuff.bufer=3", "--methods", "fedbuff"], "--method-opt"),
    (AEDFL + ["--method-opt", "fedbuff.buffer=0", "--methods", "fedbuff"], "--method-opt"),
    (AEDFL + ["--model", "lenet6"], "--model"), (AEDFL + ["--corrupt", "9"], "--corrupt"),
    (AEDFL + ["--corrupt-mode", "nois"], "--corrupt-mode"), (AEDFL + ["--batch-size", "0"], "--batch-size"),
    (AEDFL + ["--slot-width", "nan"], "--slot-width"), (AEDFL + ["--topology", "moebius"], "--topology"),
    (P2PFT + ["--lr", "0"], "--lr"), (P2PFT + ["--topology", "moebius"], "--topology"),
    (P2PFT + ["--topology", "adjacency:/nonexistent.txt"], "adjacency file"),
    (P2PFT + ["--split", "dirichlet:-1"], "--split"), (P2PFT + ["--split", "halves"], "--split"),
    (P2PFT + ["--model", "vit_nonesuch"], "--model"), (P2PFT + ["--algorithms", "p2pft,dsgd"], "--algorithms"),
    (["pretrain", "--lr", "-1", "--threads", "1"], "--lr"), (["pretrain", "--model", "vit_nonesuch"], "--model"),
]


@pytest.mark.parametrize("args, option", CASES, ids=[" ".join(a[-2:]) for a, _ in CASES])
def test_a_bad_value_fails_before_the_data_loads(slow_data, tmp_path, args, option):
    start = time.perf_counter()
    line = one_error_line([*args, "--out", str(tmp_path / "o")])
    assert time.perf_counter() - start < 3.0
    assert option in line and not slow_data
    assert line.startswith(f"error: {option}") or option == "adjacency file", line


def test_good_values_reach_the_loader(slow_data, tmp_path, monkeypatch):
    """The same commands with good values do load (so the test above can fail)."""
    monkeypatch.setattr(f"{__name__}.SLOW_S", 0.0)
    for args in (AEDFL, P2PFT, ["pretrain"]):
        res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / args[0])])
        assert res.exit_code == 1 and "Loaded" in res.output, res.output     # the loader ran: an unexpected error
    assert len(slow_data) == 3
