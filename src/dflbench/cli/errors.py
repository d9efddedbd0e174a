"""How a command ends on an exception. A user error (`dflbench.errors.UserError`, or a path the user gave that
does not exist) prints one line `error: ...` on stderr and exits 2; a run aborted by its environment
(`dflbench.errors.RunAborted`, e.g. a dead peer rank) prints one line and exits 3. Any other exception is a bug in
dflbench: its traceback, then one line saying so (version, where to report it), exit code 1. DFLBENCH_DEBUG=1
re-raises them all."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from importlib.metadata import version

import typer
from rich.console import Console
from rich.text import Text

from dflbench.errors import RunAborted, UserError

USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError)

_stderr = Console(stderr=True)


def bug_report_line() -> str:
    """The line printed under the traceback of an exception that is not a user error."""
    return (f"this is a bug in dflbench {version('dflbench')}, not in your input: please report it on the dflbench "
            "issue tracker with the command you ran and the traceback above")


def user_errors(fn):
    """Decorate a command: a user error prints `error: ...` and exits 2; any other exception prints its traceback
    and `bug_report_line()` and exits 1. typer's own exits (`typer.Exit`, aborts, usage errors) pass through."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except USER_ERRORS as exc:
            if os.environ.get("DFLBENCH_DEBUG"):
                raise
            _stderr.print(Text.assemble(("error:", "bold red"), f" {exc}"), highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except RunAborted as exc:
            if os.environ.get("DFLBENCH_DEBUG"):
                raise
            _stderr.print(Text.assemble(("aborted:", "bold red"), f" {exc}"), highlight=False, soft_wrap=True)
            raise typer.Exit(code=3) from None
        except Exception as exc:
            if os.environ.get("DFLBENCH_DEBUG"):
                raise
            traceback.print_exception(exc, file=sys.stderr)
            _stderr.print(Text.assemble(("bug:", "bold red"), f" {bug_report_line()}"), highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper
