"""Each package is its own distribution: it builds alone, ships only its own module, needs no sibling
(except mixing -> topology), and importing it imports no other dflbench package."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["topology", "mixing", "aggregation", "pruning", "vision"]
ALLOWED_SIBLINGS = {"mixing": {"dflbench-topology"}}


def test_no_namespace_init_anywhere():
    assert not list(ROOT.glob("**/src/dflbench/__init__.py"))


@pytest.mark.parametrize("name", PACKAGES)
def test_wheel_builds_alone_with_own_files_and_deps(name, tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT / "packages" / name)], check=True)
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        modules = {n.split("/")[1] for n in zf.namelist() if n.startswith("dflbench/")}
        assert modules == {name}
        assert "dflbench/__init__.py" not in zf.namelist()
        meta = next(zf.read(n).decode() for n in zf.namelist() if n.endswith("METADATA"))
    requires = {line.split(":", 1)[1].strip().split(">")[0].split("=")[0].split("[")[0].split(";")[0].strip()
                for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}
    siblings = {r for r in requires if r.startswith("dflbench")}
    assert siblings == ALLOWED_SIBLINGS.get(name, set())


@pytest.mark.parametrize("name", PACKAGES)
def test_import_pulls_in_no_other_dflbench_package(name):
    code = (f"import sys, dflbench.{name}; "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('dflbench.')}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    loaded = set(eval(out))
    assert loaded <= {name} | {s.split("-")[1] for s in ALLOWED_SIBLINGS.get(name, set())}


@pytest.mark.parametrize("module", ["dflbench.cli.aedfl", "dflbench.recipes.aedfl", "dflbench.recipes.config"])
def test_the_aedfl_path_loads_no_vision_stack(module):
    """`dflbench aedfl` starts without the P2P-FT stack (torchvision, timm, captum, torch._dynamo): seconds of
    start-up (issue 17; a recipe-config import once pulled it in and start-up went from ~6 s to ~17 s at load 5)."""
    code = (f"import sys, {module}; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torchvision', 'timm', 'captum'}), "
            "'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split("\n")[0]
    assert out == "[] False", out
