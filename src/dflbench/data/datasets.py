"""Dataset registry (`dflbench.registry.Registry`): a name (or `npz:PATH` / `folder:PATH`) maps to a loader
returning `ImageData`.

`load_dataset("digits")` needs no files (scikit-learn's embedded 8x8 digits). The torchvision sets read from
`data_dir` (default `$DFLBENCH_DATA_DIR` or `~/.cache/dflbench/data`) and download only when asked.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from dflbench.errors import UserError
from dflbench.registry import Registry

from .image_data import ImageData, to_nchw_uint8

DATASETS = Registry("dataset", context=("root", "download", "image_size"), sort=True,
                    forms=("npz:PATH", "folder:PATH"))
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


def register_dataset(name: str):
    """Decorator: register `loader(root, download, image_size) -> ImageData` under `name`."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """Registered names plus the path forms `npz:PATH` and `folder:PATH`."""
    return DATASETS.list() + list(DATASETS.forms)


def default_data_dir() -> Path:
    return Path(os.environ.get("DFLBENCH_DATA_DIR", Path.home() / ".cache" / "dflbench" / "data"))


def load_dataset(spec: str, data_dir: str | Path | None = None, download: bool = False,
                 image_size: int = 224) -> ImageData:
    """Load dataset `spec` into memory.

    `image_size` is used only where source images differ in size (Pets, Flowers, some folders): they are resized
    (shorter side) and center-cropped to it once at load time. Unknown names raise UserError (a ValueError) listing
    the valid ones.
    """
    from .image_folder import load_image_folder

    if spec.startswith("npz:"):
        return load_npz(Path(spec[4:]))
    if spec.startswith("folder:"):
        return load_image_folder(Path(spec[7:]), image_size)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return DATASETS.make(spec, None, root, download, image_size)


@register_dataset("digits")
def load_digits(root: Path, download: bool, image_size: int) -> ImageData:
    """scikit-learn's 1,797 8x8 digits (values 0..16 scaled to uint8), stratified seeded 75/25 train/test split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(images, bunch.target, test_size=DIGITS_TEST_FRACTION,
                                              random_state=DIGITS_SPLIT_SEED, stratify=bunch.target)
    return ImageData("digits", to_nchw_uint8(x_tr), torch.as_tensor(y_tr, dtype=torch.int64),
                     to_nchw_uint8(x_te), torch.as_tensor(y_te, dtype=torch.int64),
                     tuple(str(c) for c in bunch.target_names))


def load_npz(path: Path) -> ImageData:
    """`npz:PATH`: arrays x_train, y_train, x_test, y_test (uint8 NHWC or NHW) of equal lengths per split, optional
    `classes`. A file numpy cannot read as such an archive (truncated, not an npz, object arrays) is a UserError
    naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"npz dataset {str(path)!r} does not exist; give npz:PATH to a file with arrays "
                                "x_train, y_train, x_test, y_test")
    how = "save one with numpy.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)"
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a readable npz dataset (not a zip archive of named arrays); {how}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise UserError(f"{path}: missing arrays {missing}; it has {z.files}")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test", "classes") if k in z.files}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy raises zip, EOF, OS and value errors for damaged files
        reason = ("it holds object arrays, refused because loading them could run code" if "allow_pickle" in str(exc)
                  else f"{type(exc).__name__}: {exc}")
        raise UserError(f"{path} is not a readable npz dataset ({reason}); {how}") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 1 or y.ndim != 1 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{path}: x_{split} ({len(x) if x.ndim else 0} images) and y_{split} (shape "
                            f"{y.shape}, {y.dtype}) must hold one integer label per image; {how}")
    y_train = torch.as_tensor(arrays["y_train"].astype(np.int64))
    y_test = torch.as_tensor(arrays["y_test"].astype(np.int64))
    if "classes" in arrays:
        classes = tuple(str(c) for c in arrays["classes"].tolist())
    else:
        classes = tuple(str(c) for c in range(int(max(y_train.max(), y_test.max())) + 1))
    try:
        x_train, x_test = to_nchw_uint8(arrays["x_train"]), to_nchw_uint8(arrays["x_test"])
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return ImageData(f"npz:{path}", x_train, y_train, x_test, y_test, classes)
