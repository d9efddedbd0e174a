import platform
import subprocess
import sys

import pytest

from dflbench.malloc import configure


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_configure_sets_glibc_thresholds():
    assert configure() is True


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_cli_configures_the_allocator_before_any_command():
    code = ("import dflbench.malloc as m, dflbench.cli.main as c, sys\n"
            "calls = []\n"
            "m.configure = lambda: calls.append(1) or True\n"
            "c.app = lambda **kw: print(len(calls))\n"
            "c.main()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
