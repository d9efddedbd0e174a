"""Model registry (`dflbench.registry.Registry`): a name maps to a constructor, as timm's `register_model` does.

`make_model(name, num_classes, in_channels, image_size, **options)` builds a fresh `nn.Module`; `list_models()`
names them; an unknown name raises a ValueError listing the valid ones.
"""

from __future__ import annotations

from torch import nn

from dflbench.errors import UserError
from dflbench.registry import Registry

MODELS = Registry("model", context=("num_classes", "in_channels", "image_size"), sort=True)


def register_model(name: str):
    """Decorator: register `fn(num_classes, in_channels, image_size, **options) -> nn.Module` under `name`; its
    keyword parameters with defaults are the model's options."""
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.list()


def make_model(name: str, num_classes: int, in_channels: int | None = None, image_size: int | None = None,
               **options) -> nn.Module:
    """Build the registered model `name` for `num_classes` outputs.

    Image models need `in_channels` and `image_size` (square side in pixels); `textcnn` takes neither and
    needs `vocab_size` instead. `options` are the model's own keyword options (e.g. resnet8's `norm`); an unknown
    one raises a ValueError listing the valid ones.
    """
    MODELS.get(name)
    if num_classes < 2:
        raise UserError(f"num_classes must be at least 2, got {num_classes}")
    return MODELS.make(name, options, num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def require_image_shape(name: str, in_channels: int | None, image_size: int | None, min_size: int) -> None:
    """Raise a ValueError unless an image model got a channel count and an image side of at least `min_size`."""
    if in_channels is None or image_size is None:
        raise UserError(f"model {name!r} needs in_channels and image_size (got {in_channels}, {image_size})")
    if in_channels < 1:
        raise UserError(f"model {name!r}: in_channels must be positive, got {in_channels}")
    if image_size < min_size:
        raise UserError(f"model {name!r} needs images of at least {min_size}x{min_size}, got {image_size}")
