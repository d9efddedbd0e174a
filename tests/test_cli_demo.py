"""`dflbench demo` names every file it wrote, its accuracy plot reads in percent like its table, and the
random-backbone warning and Python's warnings print once under torchrun (rank 0 only)."""

import json
import warnings

import pytest
from typer.testing import CliRunner

from dflbench.cli.main import app, warn_once_per_run

TINY = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=8,patch_size=4,embed_dim=16,depth=2,num_heads=2",
        "--device", "cpu", "--threads", "1", "--epochs", "1", "--algorithms", "local"]


def test_demo_names_every_file_and_plots_percent(tmp_path, saved_figures):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--epochs", "1", "--out", str(out)])
    assert res.exit_code in (0, 1), res.output                      # 1: the claim fails after one epoch
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("wrote "), res.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "accuracy.png" in written and "results.json" in written
    for name in written:                                             # every file named, by path or in its folder
        folder, _, file = name.rpartition("/")
        assert str(out / name) in last or (folder and f"{out / folder}/" in last and file in last), (name, last)
    ((_, fig),) = saved_figures
    ax = fig.axes[0]
    assert ax.get_ylabel().endswith("(%)")
    ticks = [float(t) for t in ax.get_yticks() if 0 <= t <= 1]
    assert [float(ax.yaxis.get_major_formatter()(t, 0)) for t in ticks] == pytest.approx([100 * t for t in ticks])
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert "test accuracy (%)" in res.output                          # the table is in percent too
    assert all(f"{100 * r['mean_accuracy']:.2f}" in res.output for r in runs)


def test_random_backbone_warning_prints_on_rank_0_only(tmp_path):
    def warnings(rank: str) -> list[str]:
        res = CliRunner().invoke(app, ["p2pft", *TINY, "--out", str(tmp_path / rank)], env={"RANK": rank})
        assert res.exit_code == 0, res.output
        return [line for line in res.output.splitlines() if "randomly initialised" in line]

    assert len(warnings("0")) == 1
    assert warnings("1") == [] and warnings("3") == []


def test_python_warnings_come_from_rank_0_only(monkeypatch):
    for rank, shown in (("0", 1), ("2", 0), (None, 1)):
        if rank is None:
            monkeypatch.delenv("RANK", raising=False)
        else:
            monkeypatch.setenv("RANK", rank)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_once_per_run()
            warnings.warn("a per-run notice", UserWarning, stacklevel=1)
        assert len(caught) == shown, rank
