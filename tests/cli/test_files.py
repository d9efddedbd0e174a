"""Files a user hands in or an earlier run left (npz and folder datasets, results.json, done.json, checkpoints,
TOML): a damaged or foreign one is one line naming the file and what is wrong, exit 2, no traceback, and no advice
toward unsafe loading."""

import json
import os

import numpy as np
import pytest
import torch


class Payload:
    """An object whose unpickling would run code: writes the marker file named by DFLBENCH_TEST_MARKER."""

    def __reduce__(self):
        return (os.system, (f"touch {os.environ['DFLBENCH_TEST_MARKER']}",))


def _no_unsafe_advice(line):
    assert "weights_only" not in line and "pickle" not in line.lower() and "allow_pickle" not in line


@pytest.mark.parametrize("damage, says", [
    ("truncate", "is not a readable npz dataset (not a zip archive of named arrays)"),
    ("garbage", "is not a readable npz dataset (not a zip archive of named arrays)"),
    ("pickled", "is not a readable npz dataset (it holds object arrays, refused because loading them could run"),
    ("npy", "is not a readable npz dataset (not a zip archive of named arrays)"),
    ("bad member", "is not a readable npz dataset ("),
    ("lengths", "x_train (120 images) and y_train (shape (100,), int64) must hold one integer label per image"),
    ("float labels", "x_train (120 images) and y_train (shape (120,), float64) must hold one integer label per"),
    ("float images", "images must be uint8, got torch.float64"),
])
def test_a_damaged_npz_is_one_line_naming_it(cli, tmp_path, damage, says):
    path = cli.write_npz(tmp_path / "d.npz")
    z = dict(np.load(path))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:2000])
    elif damage == "garbage":
        path.write_bytes(os.urandom(5000))
    elif damage == "pickled":
        np.savez(path, x_train=np.array([{"a": 1}], dtype=object), y_train=z["y_train"], x_test=z["x_test"],
                 y_test=z["y_test"])
    elif damage == "bad member":                                # a zip whose member is damaged
        data = bytearray(path.read_bytes())
        data[100:400] = b"\0" * 300
        path.write_bytes(bytes(data))
    elif damage == "npy":
        with open(path, "wb") as f:
            np.save(f, z["x_train"])
    elif damage == "lengths":
        np.savez(path, **{**z, "y_train": z["y_train"][:100]})
    elif damage == "float labels":
        np.savez(path, **{**z, "y_train": z["y_train"].astype(float)})
    else:
        np.savez(path, **{**z, "x_train": z["x_train"].astype(float)})
    line = cli.one_error_line(cli.aedfl_args(path, tmp_path / "o"))
    assert line.startswith(f"error: {path}") and says in line, line
    _no_unsafe_advice(line)


def test_a_folder_dataset_with_a_damaged_image_names_it(cli, tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "f" / split / c).mkdir(parents=True)
            Image.new("RGB", (16, 16), (40, 80, 120)).save(tmp_path / "f" / split / c / "1.png")
    (tmp_path / "f" / "train" / "b" / "2.jpg").write_bytes(b"not an image")
    line = cli.one_error_line(cli.aedfl_args("x", tmp_path / "o", "--dataset", f"folder:{tmp_path / 'f'}"))
    assert f"{tmp_path / 'f'}/train/b/2.jpg is not a readable image" in line


@pytest.mark.parametrize("text, says", [
    ('{"config": {"devices": 4}, "runs": [', "(the results of an earlier run) is not valid JSON"),
    ('{"config": {}, "runs": [{"accuracy": NaN}]}', "is not valid JSON (non-finite number NaN"),
    ('[1, 2]', "is not a dflbench results.json (it needs a config table and runs, each with its method)"),
])
def test_a_damaged_results_json_is_named_before_resume(cli, small_npz, tmp_path, text, says):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.json").write_text(text)
    for flags in ((), ("--resume",)):
        line = cli.one_error_line(cli.aedfl_args(small_npz, out, *flags))
        assert line.startswith(f"error: {out / 'results.json'}") and says in line and "--overwrite" in line, line
    assert cli.invoke(cli.app, cli.aedfl_args(small_npz, out, "--methods", "fedavg", "--overwrite")).exit_code == 0


def test_an_unsafe_checkpoint_is_refused_without_running_it(cli, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setenv("DFLBENCH_TEST_MARKER", str(marker))
    out = tmp_path / "o"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"epoch": 1, "state": Payload()}, out / "checkpoints" / "pushpull.pt")
    line = cli.one_error_line([*cli.TINY, "--algorithms", "pushpull", "--resume", "--out", str(out)])
    assert line == (f"error: {out / 'checkpoints' / 'pushpull.pt'} (a checkpoint of an earlier run) cannot be read: it "
                    "holds objects other than tensors, refused because loading them could run code; delete it to "
                    "train that algorithm from the start, give another --out, or use --overwrite")
    torch.save({"epoch": 1}, out / "checkpoints" / "pushpull.pt")
    assert "is not a dflbench training checkpoint" in cli.one_error_line(
        [*cli.TINY, "--algorithms", "pushpull", "--resume", "--out", str(out)])
    (out / "checkpoints" / "pushpull.pt").write_bytes(b"\x80\x04garbage")
    assert "(a checkpoint of an earlier run) cannot be read: " in cli.one_error_line(
        [*cli.TINY, "--algorithms", "pushpull", "--resume", "--out", str(out)])
    backbone = tmp_path / "backbone.pt"
    torch.save({"w": Payload()}, backbone)
    line = cli.one_error_line([*cli.TINY, "--algorithms", "local", "--checkpoint", str(backbone), "--out",
                               str(tmp_path / "b")])
    assert "refused because loading them could run code" in line
    _no_unsafe_advice(line)
    assert not marker.exists()                                     # no code of the files ran


def test_a_damaged_toml_or_done_record_is_named(cli, small_npz, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_bytes(b'experiment = "aedfl"\n[config]\nmodel = "\xff\xfe"\n')
    line = cli.one_error_line(["aedfl", "--config", str(toml), "--out", str(tmp_path / "o")])
    assert line.startswith(f"error: {toml} is not valid TOML")
    toml.write_text(f'experiment = "aedfl"\n[config]\ndataset = "npz:{small_npz}"\ndevices = 4\nmax_updates = 1\n'
                    'methods = ["fedavg"]\neval_samples = 20\n')
    (tmp_path / "r" / "seed-0").mkdir(parents=True)
    (tmp_path / "r" / "seed-0" / "done.json").write_text("{")
    line = cli.one_error_line(["run", str(toml), "--out", str(tmp_path / "r")])
    assert line.startswith(f"error: {tmp_path / 'r' / 'seed-0' / 'done.json'} (the record of a finished seed) is not "
                           "valid JSON")
    (tmp_path / "r" / "seed-0" / "done.json").unlink()
    assert cli.invoke(cli.app, ["run", str(toml), "--out", str(tmp_path / "r")]).exit_code == 0
    assert json.loads((tmp_path / "r" / "seed-0" / "done.json").read_text())["experiment"] == "aedfl"
