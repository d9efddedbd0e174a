"""The `dflbench` typer app.

Commands are imported when they run (`_LazyGroup`): `dflbench aedfl` never imports the P2P-FT stack (timm,
torchvision, captum), which took seconds of its start-up; `--help` and `--version` import no command (nor torch).
"""

from __future__ import annotations

import os
import warnings
from importlib import import_module

import click
import typer
from typer.core import TyperGroup

# command name -> (module of dflbench.cli, its attribute: a command function or a Typer sub-app, its one-line help
# as the command states it: `--help` lists the commands without importing them; a test checks that they agree)
COMMANDS = {
    "demo": ("demo", "demo",
             "P2P-FT in miniature: 4 nodes, class-disjoint digits, tiny ViT; exits 1 if the paper's claim fails."),
    "aedfl": ("aedfl", "aedfl",
              "Run AEDFL / ablations / baselines and print a Table 1-style table; write results.json, results.csv, "
              "accuracy_vs_time.png and, for the AEDFL variants, diagnostics.png."),
    "p2pft": ("p2pft", "p2pft",
              "Fine-tune the last block + head over n peer-to-peer nodes and compare algorithms (P2P-FT Table I)."),
    "pretrain": ("pretrain", "pretrain", "Train a whole timm model on a dataset (AdamW) and save its state dict (our "
                                         "offline ImageNet substitute)."),
    "topology": ("topology", "app", "Inspect communication graphs and their mixing matrices."),
    "reproduce": ("reproduce", "reproduce", "Reproduce a paper table: run a named recipe over seeds and write "
                                            "report.md beside the paper's numbers."),
    "run": ("run", "run", "Run the experiment a TOML file describes and write results.json, report.md and the PNGs."),
}


class _LazyGroup(TyperGroup):
    """A typer group that imports a command's module only when the command is looked up; its own `--help` lists
    the commands by their help in `COMMANDS`, importing none of them."""

    _listing = False

    argv: list[str] = []  # the command line, for the line that says how an interrupted run continues

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        _LazyGroup.argv = list(args)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS) + [n for n in super().list_commands(ctx) if n not in COMMANDS]

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return super().get_command(ctx, name)
        module, attr, short_help = COMMANDS[name]
        if self._listing:
            return click.Command(name, short_help=short_help)
        target = getattr(import_module(f".{module}", __package__), attr)
        holder = typer.Typer(pretty_exceptions_enable=False)          # a parent, as app.add_typer/command made it
        holder.callback()(lambda: None)
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=name)
        else:
            holder.command(name)(target)
        return _literal_help(typer.main.get_command(holder).get_command(ctx, name))


def _literal_help(command: click.Command | None) -> click.Command | None:
    """`command` (and its subcommands) with every help text escaped for rich markup: typer reads help as markup,
    where "[config]" in "a TOML file whose [config] table ..." is a style tag and vanished from the help."""
    from rich.markup import escape

    if command is None:
        return None
    command.help = command.help and escape(command.help)
    for param in command.params:
        if getattr(param, "help", None):
            param.help = escape(param.help)
    for sub in getattr(command, "commands", {}).values():
        _literal_help(sub)
    return command


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


def warn_once_per_run() -> None:
    """Under torchrun, Python warnings only from rank 0: every rank runs the same code and printed each warning (torch's
    own, e.g. its ProcessGroupGloo deprecation notice) once per rank."""
    if os.environ.get("RANK", "0") != "0":
        warnings.simplefilter("ignore")


def main():
    from dflbench.malloc import configure

    configure()
    warn_once_per_run()
    app(prog_name="dflbench")
