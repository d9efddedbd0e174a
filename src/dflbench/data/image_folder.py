"""`folder:PATH`: an ImageFolder tree `PATH/train/<class>/*` with `PATH/val/<class>/*` or `PATH/test/<class>/*`."""

from __future__ import annotations

from pathlib import Path

import torch

from dflbench.errors import UserError

from .file_tree import IMAGE_SUFFIXES, FileTree, decode_images
from .image_data import ImageData


def load_image_folder(path: Path, image_size: int) -> ImageData:
    if not (path / "train").is_dir():
        raise FileNotFoundError(f"folder dataset {str(path)!r} has no train/ subfolder; expected "
                                "PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg (or test/)")
    test_dir = next((d for d in ("val", "test") if (path / d).is_dir()), None)
    if test_dir is None:
        raise FileNotFoundError(f"folder dataset {str(path)!r} has no val/ or test/ subfolder next to train/")
    tree = FileTree(path)
    names = [n for n in tree.names() if n.lower().endswith(IMAGE_SUFFIXES) and n.count("/") == 2]
    classes = sorted({n.split("/")[1] for n in names if n.startswith("train/")})
    if not classes:
        raise UserError(f"folder dataset {str(path)!r}: train/ has no class folders with images")
    index = {c: i for i, c in enumerate(classes)}

    def load(split):
        items = [n for n in names if n.startswith(split + "/")]
        bad = sorted({n.split("/")[1] for n in items} - set(index))
        if bad:
            raise UserError(f"folder dataset {str(path)!r}: {split}/ has classes {bad} missing from train/")
        x = decode_images([tree.read(n) for n in items], image_size, [f"{tree}/{n}" for n in items])
        return x, torch.tensor([index[n.split("/")[1]] for n in items], dtype=torch.int64)

    x_tr, y_tr = load("train")
    x_te, y_te = load(test_dir)
    return ImageData(f"folder:{path}", x_tr, y_tr, x_te, y_te, tuple(classes))
