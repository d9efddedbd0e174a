"""Lazy package exports (PEP 562): a package's names are imported from their modules on first use, so importing
one submodule (`dflbench.engines.async_sim`) does not pull in its siblings' heavy dependencies (the synchronous
engine's torchvision / timm / captum stack costs seconds of CLI start-up)."""

from __future__ import annotations

from importlib import import_module
from typing import Callable


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[Callable[[str], object], list[str]]:
    """(`__getattr__`, `__all__`) for `package` from {submodule: names it exports}."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f".{module_of[name]}", package), name)

    return __getattr__, list(module_of)
