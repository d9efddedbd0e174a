"""Read image trees from a folder or a .zip alike, and decode them into one uint8 tensor."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch

from dflbench.errors import UserError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp")


class FileTree:
    """Files under `base` (a folder, or a zip and a prefix inside it), addressed by posix paths relative to it."""

    def __init__(self, path: Path, prefix: str = ""):
        self.path = Path(path)
        self.prefix = prefix
        self._zip = zipfile.ZipFile(self.path) if self.path.is_file() else None

    def names(self) -> list[str]:
        if self._zip is not None:
            n = len(self.prefix)
            return sorted(x[n:] for x in self._zip.namelist() if x.startswith(self.prefix) and not x.endswith("/"))
        base = self.path / self.prefix
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self.prefix + name)
        return (self.path / self.prefix / name).read_bytes()

    def has_dir(self, name: str) -> bool:
        if self._zip is not None:
            return any(x.startswith(self.prefix + name + "/") for x in self._zip.namelist())
        return (self.path / self.prefix / name).is_dir()

    def __str__(self) -> str:
        return f"{self.path}{'!' + self.prefix if self._zip is not None and self.prefix else ''}"


def find_tree(path: Path, required_dir: str) -> FileTree | None:
    """A FileTree rooted where `required_dir/` exists: `path` itself, or (for a zip) its single top-level folder."""
    if path.is_dir():
        return FileTree(path) if (path / required_dir).is_dir() else None
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        for prefix in sorted({""} | {n.split("/", 1)[0] + "/" for n in names if "/" in n}):
            if any(n.startswith(prefix + required_dir + "/") for n in names):
                return FileTree(path, prefix)
    return None


def decode_images(blobs: list[bytes], image_size: int, names: list[str] | None = None) -> torch.Tensor:
    """Decode encoded images to RGB uint8 `[N, 3, H, W]`; if sizes differ, resize (shorter side) + center crop.
    A file that is not a readable image is a UserError naming it (`names[i]`, else its index)."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    imgs = []
    for i, blob in enumerate(blobs):
        try:
            imgs.append(F.pil_to_tensor(Image.open(io.BytesIO(blob)).convert("RGB")))
        except (OSError, ValueError, SyntaxError) as exc:    # PIL's errors for damaged or foreign files
            name = names[i] if names is not None else f"image {i}"
            raise UserError(f"{name} is not a readable image ({type(exc).__name__}: {exc}); remove or replace "
                            "it") from None
    if len({tuple(t.shape) for t in imgs}) > 1:
        imgs = [F.center_crop(F.resize(t, image_size, antialias=True), [image_size, image_size]) for t in imgs]
    return torch.stack(imgs)
