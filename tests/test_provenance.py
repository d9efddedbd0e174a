import subprocess
from pathlib import Path

from dflbench.provenance import code_provenance


def test_provenance_names_this_checkouts_commit():
    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    p = code_provenance()
    assert p["version"]
    if head.returncode == 0:                                      # a git checkout (CI's clean clone is one)
        assert p["commit"] == head.stdout.strip() and isinstance(p["dirty"], bool)
