"""The line between a user's mistake and a bug in dflbench.

`UserError` is raised where dflbench validates what a user gave it (options, config fields, files, data); the CLI
prints it as one line and exits 2. Every other exception is a bug: the CLI prints its traceback and exits 1.
The packages under `packages/` raise plain ValueError; where the root hands them user input, `user_input` turns
their ValueError into a UserError naming the option the input came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Iterator


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


@contextmanager
def for_option(option: str) -> Iterator[None]:
    """Inside the block, a ValueError (a UserError too) becomes a UserError that starts with `option`, the name the
    user gave the value by (`--split: unknown split 'x'; valid: ...`): for the checks a config runs on its fields
    before any data loads."""
    try:
        yield
    except ValueError as exc:
        if str(exc).startswith(option):
            raise
        raise UserError(f"{option}: {exc}") from exc


def check_numbers(obj: Any, ranges: Mapping[str, tuple[str, str]]) -> None:
    """The one check of numeric options: for each field of `obj` (a dataclass or a mapping) in `ranges` ({field:
    (name, interval)}), its value must be None (where the field is optional), or a finite number inside `interval`
    ("[2, inf)", "(0, 1]", ...), else a UserError naming the option as the user gives it (`name`, e.g. "--lr").
    Config dataclasses call it in `__post_init__`, so command-line flags, TOML files and `--set` are checked alike,
    before any data loads."""
    for field, (name, interval) in ranges.items():
        value = obj[field] if isinstance(obj, Mapping) else getattr(obj, field)
        if value is None:
            continue
        low, high = (float(b.strip(" [()]")) for b in interval.split(","))
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (number and (value > low if interval.startswith("(") else value >= low)
                and (value < high if interval.endswith(")") else value <= high)):
            raise UserError(f"{name} must be {_describe(interval, low, high)}, got {value!r}")


def _describe(interval: str, low: float, high: float) -> str:
    """'(0, inf)' -> 'a finite number > 0'; '[0, 1)' -> 'a number in [0, 1)'."""
    if math.isinf(high):
        return f"a finite number {'>' if interval.startswith('(') else '>='} {low:g}"
    return f"a number in {interval[0]}{low:g}, {high:g}{interval[-1]}"
