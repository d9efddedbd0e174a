"""The `gpu` marker (conftest.py at the repository root): a marked test runs only where its needs are met, and
otherwise is skipped with what is missing. CUDA is faked by patching torch, so this runs on any machine."""

from pathlib import Path

import pytest
import torch

MARKED = """
import pytest

@pytest.mark.gpu
def test_one_gpu(): pass

@pytest.mark.gpu(devices=2)
def test_two_gpus(): pass

@pytest.mark.gpu(nccl=True)
def test_nccl(): pass

def test_cpu(): pass
"""


def _outcomes(pytester, monkeypatch, devices: int, nccl: bool) -> dict[str, str]:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: devices > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: nccl)
    pytester.makeconftest((Path(__file__).resolve().parents[1] / "conftest.py").read_text())
    pytester.makepyfile(test_marked=MARKED)
    result = pytester.runpytest_inprocess("-rs", "-p", "no:cacheprovider")
    reports = result.reprec.getreports("pytest_runtest_logreport")
    outcome = {}
    for r in reports:
        name = r.nodeid.split("::")[-1]
        if r.when == "call" or r.skipped:
            outcome[name] = r.longrepr[2].removeprefix("Skipped: ") if r.skipped else r.outcome
    return outcome


def test_without_cuda_every_marked_test_is_skipped(pytester, monkeypatch):
    assert _outcomes(pytester, monkeypatch, devices=0, nccl=False) == {
        "test_one_gpu": "needs CUDA", "test_two_gpus": "needs CUDA", "test_nccl": "needs CUDA", "test_cpu": "passed"}


def test_one_gpu_without_nccl(pytester, monkeypatch):
    assert _outcomes(pytester, monkeypatch, devices=1, nccl=False) == {
        "test_one_gpu": "passed", "test_two_gpus": "needs 2 CUDA devices, found 1",
        "test_nccl": "needs the NCCL backend of torch.distributed", "test_cpu": "passed"}


def test_two_gpus_with_nccl_run_everything(pytester, monkeypatch):
    assert set(_outcomes(pytester, monkeypatch, devices=2, nccl=True).values()) == {"passed"}


def test_positional_arguments_are_a_usage_error(pytester):
    pytester.makeconftest((Path(__file__).resolve().parents[1] / "conftest.py").read_text())
    pytester.makepyfile(test_bad="import pytest\n\n@pytest.mark.gpu(2)\ndef test_x(): pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest.mark.gpu takes the keywords devices=N and nccl=True/False*"])
