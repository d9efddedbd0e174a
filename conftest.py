"""pytest hooks shared by tests/ and bench/ (pytest loads this file for both): the `gpu` marker.

`@pytest.mark.gpu` runs a test only where CUDA is available; `@pytest.mark.gpu(devices=2)` needs that many CUDA
devices and `@pytest.mark.gpu(nccl=True)` also torch.distributed's NCCL backend. Elsewhere the test is skipped,
and the skip says what is missing. The marker is registered in pyproject.toml; `-m gpu` selects these tests.
"""

from __future__ import annotations

import pytest
import torch

pytest_plugins = ["pytester"]  # tests/test_gpu_marker.py runs this file's hook in an inner pytest session


def gpu_missing(*, devices: int = 1, nccl: bool = False) -> str | None:
    """What this machine lacks for a test that needs `devices` CUDA devices (and NCCL if `nccl`); None if nothing."""
    if not torch.cuda.is_available():
        return "needs CUDA"
    if torch.cuda.device_count() < devices:
        return f"needs {devices} CUDA devices, found {torch.cuda.device_count()}"
    if nccl and not torch.distributed.is_nccl_available():
        return "needs the NCCL backend of torch.distributed"
    return None


def pytest_collection_modifyitems(config, items):
    """Skip every `gpu`-marked test (module marks included) whose needs this machine does not meet."""
    for item in items:
        for mark in item.iter_markers("gpu"):
            try:
                reason = gpu_missing(*mark.args, **mark.kwargs)
            except TypeError as exc:
                raise pytest.UsageError(f"{item.nodeid}: pytest.mark.gpu takes the keywords devices=N and "
                                        f"nccl=True/False ({exc})") from None
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))
                break
