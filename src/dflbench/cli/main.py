"""The `dflbench` typer app."""

from __future__ import annotations

from importlib.metadata import version

import typer

from . import aedfl, demo, p2pft, pretrain, reproduce, run, topology

app = typer.Typer(help="dflbench: decentralized fine-tuning and asynchronous decentralized FL in PyTorch.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(topology.app, name="topology")
app.command("demo")(demo.demo)
app.command("aedfl")(aedfl.aedfl)
app.command("p2pft")(p2pft.p2pft)
app.command("pretrain")(pretrain.pretrain)
app.command("reproduce")(reproduce.reproduce)
app.command("run")(run.run)


def _version(value: bool):
    if value:
        typer.echo(f"dflbench {version('dflbench')}")
        raise typer.Exit()


@app.callback()
def _root(_version_flag: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                             help="Print the version and exit.")):
    """dflbench command line."""


def main():
    app(prog_name="dflbench")
