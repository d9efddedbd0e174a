"""Command-line options made from config dataclass fields, so that a default lives once, in its config.

`field_option(Config, "lr")` is a typer option `--lr` whose default is None ("not given"), whose help is the
field's doc (`dflbench.registry.option`) followed by the field's default, and `given(...)` keeps the values the user
gave; the command merges those over the config file and the dataclass defaults (`recipes.config.with_config_file`).
A flag (`--download`, `--no-cache`) defaults to False, which also reads as "not given".
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import typer

from dflbench.registry import field_default, option_doc


def shown(value: Any) -> str | None:
    """A default as the help shows it: a tuple as a comma list; None, False and an empty value show nothing."""
    if value is None or value is False or value == () or value == "":
        return None
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def with_default(doc: str, default: Any) -> str:
    """`doc` followed by '[default: VALUE]' where the default shows (`shown`)."""
    text = shown(default)
    return doc if text is None else f"{doc} [default: {text}]"


def field_option(source: Any, name: str, *decls: str, flag: bool = False) -> Any:
    """A typer option for field `name` of config dataclass `source` (a class, or an instance whose values are the
    defaults shown, e.g. the demo's config): `--name-with-dashes` unless `decls` name it, default None (False for a
    `flag`), help = the field's doc plus its default."""
    doc = option_doc(next(f for f in dataclasses.fields(source) if f.name == name))
    if not doc:
        raise TypeError(f"{type(source).__name__}.{name} has no doc for its --help")
    help_ = doc if flag else with_default(doc, field_default(source, name))
    return typer.Option(False if flag else None, *(decls or (f"--{name.replace('_', '-')}",)), help=help_)


def param_option(function: Any, name: str, *decls: str, help: str) -> Any:
    """A typer option for parameter `name` of `function` (where its default lives): default None, `help` plus the
    parameter's default."""
    default = inspect.signature(function).parameters[name].default
    return typer.Option(None, *(decls or (f"--{name.replace('_', '-')}",)), help=with_default(help, default))


class _GivenNone:
    def __repr__(self) -> str:
        return "NONE"


NONE = _GivenNone()  # an option given with the value that means None (`--time-budget 0`: no budget)


def given(**values: Any) -> dict[str, Any]:
    """The values the user gave: without None (an option not given) and False (a flag not given); `NONE` is None."""
    return {k: None if v is NONE else v for k, v in values.items() if v is not None and v is not False}
