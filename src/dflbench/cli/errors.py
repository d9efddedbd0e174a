"""How a command ends on an exception. A user error (`dflbench.errors.UserError`, or a path the user gave that
does not exist) prints one line `error: ...` on stderr and exits 2; a run aborted by its environment
(`dflbench.errors.RunAborted`, e.g. a dead peer rank) prints one line and exits 3. Ctrl-C (exit 130) and SIGTERM
(exit 143) print one line: what the command had saved (`on_interrupt`) and the command that continues. Any other
exception is a bug in dflbench: its traceback, then one line saying so (version, where to report it), exit code 1.
DFLBENCH_DEBUG=1 re-raises them all. A command whose results are complete but a figure failed exits
`FIGURE_FAILED` after its one warning line."""

from __future__ import annotations

import functools
import os
import shlex
import signal
import sys
import threading
import traceback
from importlib.metadata import version
from typing import Callable

import typer
from rich.console import Console
from rich.text import Text

from dflbench.errors import RunAborted, UserError

USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError)

FIGURE_FAILED = 3  # the results are written, a picture is not (the environment failed, e.g. a full disk)

_stderr = Console(stderr=True)
_interrupt: dict = {}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is (as Ctrl-C raises KeyboardInterrupt), so that `finally` blocks and the
    atomic writers finish or roll back before the command reports and exits 143."""


def _terminate(signum, frame):
    raise Terminated()


def on_interrupt(saved: Callable[[], str], flag: str | None) -> None:
    """Register what an interrupted command reports: `saved()` says what is on disk (called after the interrupt),
    and the command that continues is the command line with `flag` (e.g. "--resume") added if missing (None: the
    same command line, e.g. `reproduce`, which skips finished seeds)."""
    _interrupt.update(saved=saved, flag=flag)


def _continue_command() -> str:
    """The command line that continues the interrupted command: under torchrun, every rank started again."""
    from .main import _LazyGroup  # the app's group records the command line as it parses it

    args = list(_LazyGroup.argv)
    flag = _interrupt.get("flag")
    if flag and flag not in args:
        args.append(flag)
    launcher = (["torchrun", "--nproc-per-node", os.environ["LOCAL_WORLD_SIZE"], "-m"]
                if "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_WORLD_SIZE" in os.environ else [])
    return shlex.join([*launcher, "dflbench", *args])


def _interrupted(exc: KeyboardInterrupt) -> typer.Exit:
    saved = _interrupt["saved"]() if "saved" in _interrupt else "nothing was saved"
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    _stderr.print(Text.assemble((f"{what}:", "bold red"), f" {saved}; continue with: {_continue_command()}"),
                  highlight=False, soft_wrap=True)
    return typer.Exit(code=143 if isinstance(exc, Terminated) else 130)


def bug_report_line() -> str:
    """The line printed under the traceback of an exception that is not a user error."""
    return (f"this is a bug in dflbench {version('dflbench')}, not in your input: please report it on the dflbench "
            "issue tracker with the command you ran and the traceback above")


def user_errors(fn):
    """Decorate a command: a user error prints `error: ...` and exits 2; Ctrl-C / SIGTERM print what was saved and
    how to continue and exit 130 / 143; any other exception prints its traceback and `bug_report_line()` and exits
    1. typer's own exits (`typer.Exit`, aborts, usage errors) pass through."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _interrupt.pop("saved", None)
        _interrupt.pop("flag", None)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt as exc:
            if os.environ.get("DFLBENCH_DEBUG"):
                raise
            raise _interrupted(exc) from None
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
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)

    return wrapper
