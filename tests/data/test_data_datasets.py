import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dflbench.data import list_datasets, load_dataset, torchvision_sets
from dflbench.errors import UserError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_digits_split_deterministic_and_stratified():
    from sklearn.datasets import load_digits

    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape[1:] == (1, 8, 8) and a.num_classes == 10
    assert len(a.y_train) + len(a.y_test) == 1797
    # every original image appears exactly once across the two splits
    raw = np.rint(load_digits().images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    ours = torch.cat([a.x_train, a.x_test]).reshape(1797, -1).numpy()
    assert sorted(map(bytes, raw)) == sorted(map(bytes, ours))
    counts = np.bincount(a.y_test.numpy(), minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47


def test_unknown_dataset_lists_valid():
    with pytest.raises(ValueError, match="valid: cifar10, cifar100, digits"):
        load_dataset("mnist")
    assert "npz:PATH" in list_datasets() and "tiny-imagenet" in list_datasets()


@pytest.mark.parametrize("name,where", [("cifar10", "cifar-10-batches-py"), ("tiny-imagenet", "tiny-imagenet-200"),
                                        ("oxford-pets", "oxford-iiit-pet")])
def test_missing_dataset_says_where_and_how(tmp_path, name, where):
    with pytest.raises(FileNotFoundError, match=where) as e:
        load_dataset(name, data_dir=tmp_path)
    assert str(tmp_path) in str(e.value)


def test_npz_nhw_and_nhwc(tmp_path):
    g = np.random.default_rng(0)
    for shape in [(6, 5, 5), (6, 5, 5, 3)]:
        x = g.integers(0, 256, shape, dtype=np.uint8)
        y = np.arange(6) % 3
        np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
        d = load_dataset(f"npz:{tmp_path / 'd.npz'}")
        expected = torch.from_numpy(x).unsqueeze(1) if x.ndim == 3 else torch.from_numpy(x).permute(0, 3, 1, 2)
        assert torch.equal(d.x_train, expected) and d.classes == ("0", "1", "2")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'none.npz'}")


def _jpeg(color, size=(6, 6)):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_tiny_imagenet_official_and_subset_layouts(tmp_path):
    wnids = ["n02", "n01"]
    official = {f"tiny-imagenet-200/train/{w}/images/{w}_{k}.JPEG": _jpeg((i * 100, k, 0))
                for i, w in enumerate(wnids) for k in range(3)}
    official.update({f"tiny-imagenet-200/val/images/val_{k}.JPEG": _jpeg((k, 0, 0)) for k in range(2)})
    official["tiny-imagenet-200/val/val_annotations.txt"] = (b"val_0.JPEG\tn02\t0\t0\t1\t1\n"
                                                              b"val_1.JPEG\tn01\t0\t0\t1\t1\n")
    with zipfile.ZipFile(tmp_path / "tiny-imagenet-200.zip", "w") as z:
        for k, v in official.items():
            z.writestr(k, v)
    d = load_dataset("tiny-imagenet", data_dir=tmp_path)
    assert d.classes == ("n01", "n02")  # sorted wnids
    assert d.x_train.shape == (6, 3, 6, 6) and d.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert d.y_test.tolist() == [1, 0] and d.x_test[:, 0, 0, 0].tolist() == [0, 1]
    # n01 (label 0) was written with red 100, n02 with red 0
    assert d.x_train[:, 0, 0, 0].tolist() == [100, 100, 100, 0, 0, 0]

    sub = tmp_path / "sub" / "tinyimagenet200-subset"
    for split, files in (("train", 2), ("val", 1)):
        for w in wnids:
            (sub / split / w).mkdir(parents=True)
            for k in range(files):
                (sub / split / w / f"{k}.JPEG").write_bytes(_jpeg((k, 0, 0)))
    (sub / "classes.tsv").write_text("n01\tgoldfish\nn02\tsalamander\n")
    d2 = load_dataset("tiny-imagenet", data_dir=tmp_path / "sub")
    assert d2.classes == ("goldfish", "salamander") and d2.y_test.tolist() == [0, 1]


def test_folder_mixed_sizes_resized(tmp_path):
    for split in ("train", "test"):
        for c, size in (("cat", (10, 6)), ("dog", (4, 4))):
            (tmp_path / split / c).mkdir(parents=True)
            (tmp_path / split / c / "a.png").write_bytes(_jpeg((50, 60, 70), size))
    d = load_dataset(f"folder:{tmp_path}", image_size=5)
    assert d.x_train.shape == (2, 3, 5, 5) and d.classes == ("cat", "dog")
    assert d.x_test[1, :, 2, 2].tolist() == [50, 60, 70]
    with pytest.raises(FileNotFoundError, match="no train/"):
        load_dataset(f"folder:{tmp_path / 'train'}")


def _idx_gz(arr):
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_debian_idx(tmp_path, monkeypatch):
    g = np.random.default_rng(0)
    x, y = g.integers(0, 256, (7, 28, 28)), g.integers(0, 10, 7)
    deb = tmp_path / "debian"
    deb.mkdir()
    for name, arr in (("train-images-idx3-ubyte.gz", x), ("train-labels-idx1-ubyte.gz", y),
                      ("t10k-images-idx3-ubyte.gz", x[:3]), ("t10k-labels-idx1-ubyte.gz", y[:3])):
        (deb / name).write_bytes(_idx_gz(arr))
    monkeypatch.setattr(torchvision_sets, "DEBIAN_FASHION_MNIST", deb)
    d = load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    assert torch.equal(d.x_train[:, 0], torch.from_numpy(x.astype(np.uint8)))
    assert d.y_test.tolist() == y[:3].tolist() and d.num_classes == 10
    for cut, size in ((-5, "less"), (None, "more")):         # a truncated file, one with trailing bytes
        raw = gzip.decompress(_idx_gz(x))
        (deb / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:cut] if cut else raw + b"\x00"))
        with pytest.raises(UserError, match=f"the IDX header says \\[7, 28, 28\\], the file holds {size} data"):
            load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    (deb / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x03"))
    with pytest.raises(UserError, match="is not a uint8 IDX file"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    monkeypatch.setattr(torchvision_sets, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "empty")


@pytest.mark.data
@pytest.mark.skipif(not (SHARED / "cifar10-subset.npz").is_file(), reason="shared data not present")
def test_shared_cifar10_subset():
    d = load_dataset(f"npz:{SHARED / 'cifar10-subset.npz'}")
    assert d.x_train.shape == (5438, 3, 32, 32) and d.classes[0] == "airplane"


@pytest.mark.parametrize("name", [n for n in list_datasets() if ":" not in n])
def test_every_registered_dataset_loads_or_says_where(tmp_path, name):
    """Every registry entry either loads without files (digits) or, with an empty data_dir and no download, raises
    FileNotFoundError naming that folder; nothing is downloaded."""
    try:
        d = load_dataset(name, data_dir=tmp_path)
    except FileNotFoundError as e:
        assert str(tmp_path) in str(e)
        return
    assert len(d.y_train) > 0 and len(d.y_test) > 0 and not any(tmp_path.iterdir())


def test_random_subset_is_seeded_without_replacement_and_refuses_too_many():
    from dflbench.data import random_subset
    from dflbench.errors import UserError

    assert random_subset(10, None, 0) is None
    a, b = random_subset(1000, 300, 3), random_subset(1000, 300, 3)
    assert torch.equal(a, b) and len(set(a.tolist())) == 300 and 0 <= int(a.min()) and int(a.max()) < 1000
    assert not torch.equal(a, random_subset(1000, 300, 4))
    assert sorted(random_subset(7, 7, 1).tolist()) == list(range(7))
    for bad in (0, 8):
        with pytest.raises(UserError, match="train_samples must be in 1..7"):
            random_subset(7, bad, 0)
