"""The `dflbench` typer app.

Commands are imported when they run (`_LazyGroup`): `dflbench aedfl` never imports the P2P-FT stack (timm,
torchvision, captum), which took seconds of its start-up. `--help` imports them all to list them.
"""

from __future__ import annotations

from importlib import import_module

import click
import typer
from typer.core import TyperGroup

from .errors import command_line

# command name -> (module of dflbench.cli, its attribute: a command function or a Typer sub-app)
COMMANDS = {
    "demo": ("demo", "demo"),
    "aedfl": ("aedfl", "aedfl"),
    "p2pft": ("p2pft", "p2pft"),
    "pretrain": ("pretrain", "pretrain"),
    "topology": ("topology", "app"),
    "reproduce": ("reproduce", "reproduce"),
    "run": ("run", "run"),
}


class _LazyGroup(TyperGroup):
    """A typer group that imports a command's module only when the command is looked up."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        command_line(args)                           # for the line that says how an interrupted run continues
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS) + [n for n in super().list_commands(ctx) if n not in COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return super().get_command(ctx, name)
        module, attr = COMMANDS[name]
        target = getattr(import_module(f".{module}", __package__), attr)
        holder = typer.Typer(pretty_exceptions_enable=False)          # a parent, as app.add_typer/command made it
        holder.callback()(lambda: None)
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=name)
        else:
            holder.command(name)(target)
        return typer.main.get_command(holder).get_command(ctx, name)


app = typer.Typer(cls=_LazyGroup, help="dflbench: decentralized fine-tuning and asynchronous decentralized FL in "
                  "PyTorch.", no_args_is_help=True, pretty_exceptions_enable=False)


def _version(value: bool):
    if value:
        from importlib.metadata import version  # 0.1 s of start-up, only for --version

        typer.echo(f"dflbench {version('dflbench')}")
        raise typer.Exit()


@app.callback()
def _root(_version_flag: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                             help="Print the version and exit.")):
    """dflbench command line."""


def main():
    from dflbench.malloc import configure

    configure()
    app(prog_name="dflbench")
