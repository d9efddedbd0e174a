"""Tiny-ImageNet-200 from the official zip layout or the project's subset layout, folder or .zip.

Official: `train/<wnid>/images/*.JPEG`, `val/images/*.JPEG` + `val/val_annotations.txt`.
Subset:   `train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`. Classes are the sorted training wnids.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dflbench.errors import UserError

from .datasets import register_dataset
from .file_tree import IMAGE_SUFFIXES, FileTree, decode_images, find_tree
from .image_data import ImageData

CANDIDATES = ("tiny-imagenet-200", "tiny-imagenet-200.zip", "tinyimagenet200-subset", "tinyimagenet200-subset.zip")


def _locate(root: Path) -> FileTree:
    looked = [root] + [root / c for c in CANDIDATES]
    for path in looked:
        tree = find_tree(path, "train")
        if tree is not None and tree.has_dir("val"):
            return tree
    raise FileNotFoundError(
        f"dataset 'tiny-imagenet' not found: looked for a train/ and val/ tree in {', '.join(map(str, looked))}; "
        "download http://cs231n.stanford.edu/tiny-imagenet-200.zip into --data-dir (zip or unzipped)")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _words(tree: FileTree, names: set[str]) -> dict[str, str]:
    for table in ("words.txt", "classes.tsv"):
        if table in names:
            rows = (line.split("\t", 1) for line in tree.read(table).decode().splitlines() if "\t" in line)
            return {wnid.strip(): words.strip() for wnid, words in rows}
    return {}


@register_dataset("tiny-imagenet")
def load_tiny_imagenet(root: Path, download: bool, image_size: int) -> ImageData:
    tree = _locate(root)
    names = tree.names()
    train = [(n, n.split("/")[1]) for n in names if n.startswith("train/") and _is_image(n)]
    wnids = sorted({w for _, w in train})
    index = {w: i for i, w in enumerate(wnids)}
    if "val/val_annotations.txt" in names:
        ann = dict(line.split("\t")[:2] for line in tree.read("val/val_annotations.txt").decode().splitlines()
                   if line.strip())
        val = [(f"val/images/{f}", w) for f, w in sorted(ann.items())]
    else:
        val = [(n, n.split("/")[1]) for n in names if n.startswith("val/") and _is_image(n)]
    unknown = sorted({w for _, w in val} - set(index))
    if unknown:
        raise UserError(f"tiny-imagenet at {tree}: val classes {unknown[:5]} have no training images")
    words = _words(tree, set(names))

    def load(items):
        x = decode_images([tree.read(n) for n, _ in items], image_size)
        return x, torch.tensor([index[w] for _, w in items], dtype=torch.int64)

    x_tr, y_tr = load(train)
    x_te, y_te = load(val)
    return ImageData("tiny-imagenet", x_tr, y_tr, x_te, y_te, tuple(words.get(w, w) for w in wnids))
