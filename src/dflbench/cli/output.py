"""The output folder of a command: created and probed for writing before any data loads, and never a place where a
finished result is overwritten or dropped unless the user says so (`--overwrite`)."""

from __future__ import annotations

from pathlib import Path

from dflbench.errors import UserError
from dflbench.io import writable_folder


def prepare_out(out: Path, resume: bool, overwrite: bool) -> Path:
    """`out` created and writable (`dflbench.io.writable_folder`); `--resume` with `--overwrite` is refused."""
    if resume and overwrite:
        raise UserError("--resume keeps the results in --out and --overwrite replaces them; give one of them")
    return writable_folder(out)


def guard_finished(path: Path, held: list[str], asked: tuple[str, ...], differ: list[str], resume: bool,
                   unit: str = "methods") -> None:
    """Refuse a run that would lose finished results: `path` holds runs of `held` (`unit`: methods or algorithms),
    the run asks for `asked` and its config differs from theirs in the fields `differ`. Refused: another
    configuration (always), or without `--resume` a list that leaves held ones out. One line: what is there and
    the choices (`--resume`, another `--out`, `--overwrite`)."""
    if not differ and (resume or set(held) <= set(asked)):
        return
    there = f"{path} holds finished runs of {', '.join(held) or f'no {unit}'}"
    if differ:
        raise UserError(f"{there} of another configuration (differs in {', '.join(differ)}); give another --out, "
                        "or replace them with --overwrite")
    raise UserError(f"{there}, and --{unit} {','.join(asked)} would drop {', '.join(m for m in held if m not in asked)}"
                    f"; keep them with --resume (runs only the {unit} not there yet), give another --out, or replace "
                    "them with --overwrite")
