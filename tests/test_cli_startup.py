"""`dflbench --help` and `--version` start without importing torch or any command (issue 27), and the help they
list is each command's own."""

import json
import subprocess
import sys
from importlib import import_module

import pytest
import typer
from typer.testing import CliRunner

from dflbench.cli.main import COMMANDS, app


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_no_command_and_no_torch(flag):
    code = ("import json, sys\n"
            f"sys.argv = ['dflbench', {flag!r}]\n"
            "from dflbench.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith('dflbench.cli.')\n"
            "                        and m.split('.')[2] not in ('main',))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_listed_help_is_the_commands_own(name):
    module, attr, short_help = COMMANDS[name]
    target = getattr(import_module(f"dflbench.cli.{module}"), attr)
    if isinstance(target, typer.Typer):
        own = target.info.help
    else:
        own = (target.__doc__ or "").strip().split("\n\n")[0]
    assert " ".join(own.split()) == short_help


def test_help_lists_every_command():
    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    for name, (_, _, short_help) in COMMANDS.items():
        assert name in out and short_help[:40] in out
