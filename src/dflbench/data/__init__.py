"""dflbench.data: in-memory image datasets (registry), batched timm transforms, seeded partitioners.

`BatchTransform` is imported on first use (PEP 562): it needs torchvision, which the AEDFL path never does."""

from . import image_folder, text, tiny_imagenet, torchvision_sets  # noqa: F401  (register their loaders)
from .datasets import default_data_dir, list_datasets, load_dataset, register_dataset
from .image_data import ImageData, random_subset, to_nchw_uint8
from .partitioners import (
    TABLE_II,
    Partition,
    class_ranges,
    list_partitioners,
    parse_split,
    partition,
    register_partitioner,
)

__all__ = ["BatchTransform", "ImageData", "Partition", "TABLE_II", "class_ranges", "default_data_dir",
           "list_datasets", "list_partitioners", "load_dataset", "parse_split", "partition", "random_subset",
           "register_dataset", "register_partitioner", "to_nchw_uint8"]


def __getattr__(name: str):
    if name == "BatchTransform":
        from .transforms import BatchTransform

        return BatchTransform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
