"""Which code produced a result: every results.json carries `code` = {"version", "commit", "dirty"}."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def code_provenance() -> dict:
    """dflbench's version and, when it runs from a git checkout, the commit and whether the tree had uncommitted
    changes (None where git or the checkout is absent: an installed wheel)."""
    try:
        ver = version("dflbench")
    except PackageNotFoundError:
        ver = None
    root = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"version": ver, "commit": commit, "dirty": None if status is None else bool(status)}
