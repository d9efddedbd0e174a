"""torchvision-backed datasets (CIFAR-10/100, Fashion-MNIST, EMNIST-letters, Oxford-IIIT Pets, Flowers-102).

Downloads are off unless `download=True`. Fashion-MNIST is also read from Debian's `dataset-fashion-mnist`
package (`/usr/share/datasets/fashion-mnist/*.gz`) when torchvision's layout is absent.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from dflbench.errors import UserError

from .datasets import register_dataset
from .image_data import ImageData, to_nchw_uint8

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def _open(name: str, cls, root: Path, download: bool, hint: str, **kwargs):
    try:
        return cls(root=str(root), download=download, **kwargs)
    except RuntimeError as exc:
        raise FileNotFoundError(
            f"dataset {name!r} not found under {root} ({exc}); {hint}, pass --data-dir to the folder that holds it, "
            "or add --download to fetch it") from None


def _labels(y) -> torch.Tensor:
    return torch.tensor(np.asarray(y), dtype=torch.int64)        # a copy: the arrays may be read-only (np.load)


def _cifar(name: str, cls, root: Path, download: bool) -> ImageData:
    hint = f"torchvision expects {root}/{cls.base_folder}"
    train = _open(name, cls, root, download, hint, train=True)
    test = _open(name, cls, root, download, hint, train=False)
    return ImageData(name, to_nchw_uint8(train.data), _labels(train.targets), to_nchw_uint8(test.data),
                     _labels(test.targets), tuple(train.classes))


@register_dataset("cifar10")
def load_cifar10(root: Path, download: bool, image_size: int) -> ImageData:
    from torchvision.datasets import CIFAR10

    return _cifar("cifar10", CIFAR10, root, download)


@register_dataset("cifar100")
def load_cifar100(root: Path, download: bool, image_size: int) -> ImageData:
    from torchvision.datasets import CIFAR100

    return _cifar("cifar100", CIFAR100, root, download)


def read_idx_gz(path: Path) -> torch.Tensor:
    """Parse a gzip-compressed IDX file (MNIST format: magic 0x0000 08 ndim, big-endian dims, uint8 data),
    decompressing straight into the returned uint8 tensor: no compressed or decompressed copy lives beside it (the
    whole-file reads it replaced peaked at 2.5x the data set)."""
    with gzip.open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08":
            raise UserError(f"{path} is not a uint8 IDX file")
        dims = [int(d) for d in np.frombuffer(f.read(4 * head[3]), dtype=">u4")]
        out = torch.empty(dims, dtype=torch.uint8)
        buf, filled = memoryview(out.numpy()).cast("B"), 0
        while filled < len(buf) and (n := f.readinto(buf[filled:])):
            filled += n
        if filled < len(buf) or f.read(1):
            size = "less" if filled < len(buf) else "more"
            raise UserError(f"{path}: the IDX header says {dims}, the file holds {size} data than that")
    return out


def _debian_fashion_mnist(folder: Path) -> ImageData | None:
    names = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
             "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}
    paths = {k: folder / v for k, v in names.items()}
    if not all(p.is_file() for p in paths.values()):
        return None
    arr = {k: read_idx_gz(p) for k, p in paths.items()}
    return ImageData("fashion-mnist", arr["x_train"].unsqueeze(1), arr["y_train"].long(), arr["x_test"].unsqueeze(1),
                     arr["y_test"].long(), FASHION_CLASSES)


@register_dataset("fashion-mnist")
def load_fashion_mnist(root: Path, download: bool, image_size: int) -> ImageData:
    """torchvision's `<root>/FashionMNIST/raw`, else idx .gz files in `root` itself or Debian's location (read
    without importing torchvision)."""
    if not download and not (root / "FashionMNIST" / "raw").is_dir():
        for folder in (root, DEBIAN_FASHION_MNIST):
            found = _debian_fashion_mnist(folder)
            if found is not None:
                return found
        raise FileNotFoundError(
            f"dataset 'fashion-mnist' not found: looked in {root}/FashionMNIST/raw, {root} and "
            f"{DEBIAN_FASHION_MNIST}; install it with `apt-get install dataset-fashion-mnist`, pass --data-dir, "
            "or add --download")
    from torchvision.datasets import FashionMNIST

    hint = f"torchvision expects {root}/FashionMNIST/raw"
    train = _open("fashion-mnist", FashionMNIST, root, download, hint, train=True)
    test = _open("fashion-mnist", FashionMNIST, root, download, hint, train=False)
    return ImageData("fashion-mnist", to_nchw_uint8(train.data.numpy()), _labels(train.targets),
                     to_nchw_uint8(test.data.numpy()), _labels(test.targets), FASHION_CLASSES)


@register_dataset("emnist-letters")
def load_emnist_letters(root: Path, download: bool, image_size: int) -> ImageData:
    """EMNIST letters: 26 classes a..z (raw labels 1..26 shifted to 0..25, images transposed upright)."""
    from torchvision.datasets import EMNIST

    hint = f"torchvision expects {root}/EMNIST/raw"
    train = _open("emnist-letters", EMNIST, root, download, hint, split="letters", train=True)
    test = _open("emnist-letters", EMNIST, root, download, hint, split="letters", train=False)
    classes = tuple(chr(ord("a") + i) for i in range(26))
    return ImageData("emnist-letters", to_nchw_uint8(train.data.transpose(1, 2).numpy()),
                     _labels(train.targets) - 1, to_nchw_uint8(test.data.transpose(1, 2).numpy()),
                     _labels(test.targets) - 1, classes)


def _decode_resized(dataset, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterate a PIL dataset once: shorter side -> image_size, center crop, stack as uint8 [N, 3, S, S]."""
    from torchvision.transforms.v2 import functional as F

    xs, ys = [], []
    for img, label in dataset:
        t = F.pil_to_tensor(img.convert("RGB"))
        t = F.center_crop(F.resize(t, image_size, antialias=True), [image_size, image_size])
        xs.append(t)
        ys.append(label)
    return torch.stack(xs), _labels(ys)


@register_dataset("oxford-pets")
def load_oxford_pets(root: Path, download: bool, image_size: int) -> ImageData:
    from torchvision.datasets import OxfordIIITPet

    hint = f"torchvision expects {root}/oxford-iiit-pet"
    train = _open("oxford-pets", OxfordIIITPet, root, download, hint, split="trainval")
    test = _open("oxford-pets", OxfordIIITPet, root, download, hint, split="test")
    x_tr, y_tr = _decode_resized(train, image_size)
    x_te, y_te = _decode_resized(test, image_size)
    return ImageData("oxford-pets", x_tr, y_tr, x_te, y_te, tuple(train.classes))


@register_dataset("flowers102")
def load_flowers102(root: Path, download: bool, image_size: int) -> ImageData:
    """Oxford Flowers-102: train + val splits for training, the official test split for testing."""
    from torchvision.datasets import Flowers102

    hint = f"torchvision expects {root}/flowers-102"
    parts = [_decode_resized(_open("flowers102", Flowers102, root, download, hint, split=s), image_size)
             for s in ("train", "val", "test")]
    x_tr, y_tr = torch.cat([parts[0][0], parts[1][0]]), torch.cat([parts[0][1], parts[1][1]])
    return ImageData("flowers102", x_tr, y_tr, parts[2][0], parts[2][1], tuple(str(i) for i in range(102)))
