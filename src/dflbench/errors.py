"""The line between a user's mistake and a bug in dflbench.

`UserError` is raised where dflbench validates what a user gave it (options, config fields, files, data); the CLI
prints it as one line and exits 2. Every other exception is a bug: the CLI prints its traceback and exits 1.
The packages under `packages/` raise plain ValueError; where the root hands them user input, `user_input` turns
their ValueError into a UserError naming the option the input came from.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class UserError(ValueError):
    """Invalid user input: the message says what is wrong and how to fix it. A ValueError, so callers that catch
    ValueError keep working."""


class RunAborted(RuntimeError):
    """The run stopped for a reason outside dflbench and outside the user's input (a peer process died or hung):
    neither a user error nor a bug. The message says what happened and how to continue; the CLI prints it as one
    line and exits 3."""


@contextmanager
def user_input(option: str, *errors: type[Exception]) -> Iterator[None]:
    """Inside the block, an exception of a type in `errors` (default: ValueError) becomes a UserError prefixed with
    `option`, e.g. `with user_input("--topology"): topo.check_strongly_connected()`. Wrap only the calls that
    consume the option's value, so that an unrelated exception is not mistaken for the user's."""
    caught = errors or (ValueError,)
    try:
        yield
    except UserError:
        raise
    except caught as exc:
        raise UserError(f"{option}: {exc}") from exc
