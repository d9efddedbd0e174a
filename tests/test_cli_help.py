"""Every command's --help and every listing at COLUMNS=80: wrapped, not cut (no "…", no line over 80 columns, a
table's right border on every row), and no text lost to rich markup (every help string and docstring whole)."""

import re

import click
import pytest
import typer
from typer.testing import CliRunner

from dflbench.cli.main import COMMANDS, app

ENV = {"COLUMNS": "80", "TERMINAL_WIDTH": "80"}
BOX = "│╭╮╰╯─┃┏┓┗┛━┡┩╇┳┻┣┫╋┃┼├┤┬┴└┘┌┐"


def _commands() -> list[list[str]]:
    """Every command path: [], ["demo"], ..., ["topology", "show"]."""
    root = typer.main.get_command(app)
    ctx = click.Context(root)
    paths = [[]]
    for name in COMMANDS:
        cmd = root.get_command(ctx, name)
        paths.append([name])
        paths += [[name, sub] for sub in getattr(cmd, "commands", {})]
    return paths


def _flat(text: str) -> str:
    """The output without box characters, whitespace collapsed: wrapped text reads as one line."""
    return " ".join(re.sub(f"[{BOX}]", " ", text).split())


def _check_width(output: str) -> None:
    assert "…" not in output, output
    lines = output.splitlines()
    assert max(len(line) for line in lines) <= 80, output
    for line in lines:                              # a bordered row that starts is closed: nothing cropped
        if line[:1] and line[0] in "│┃":
            assert line.rstrip()[-1] in "│┃", line


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "dflbench")
def test_help_reads_whole_at_80_columns(path):
    res = CliRunner().invoke(app, [*path, "--help"], env=ENV, prog_name="dflbench")
    assert res.exit_code == 0, res.output
    _check_width(res.output)
    root = typer.main.get_command(app)
    cmd, ctx = root, click.Context(root)
    for name in path:
        cmd = cmd.get_command(ctx, name)
    flat = _flat(res.output)
    texts = [cmd.help or ""] + [p.help for p in cmd.params if getattr(p, "help", None)]
    for text in texts:
        words = _flat(text.replace("\\[", "["))
        assert words in flat, f"{words!r} not whole in the help of {' '.join(path)}"


def test_help_keeps_bracketed_words():
    for path, words in ((["aedfl"], "TOML file whose [config] sets the run"),
                        (["run"], "(default: its [config])"), (["p2pft"], "classes[:ROW] | dirichlet:ALPHA")):
        res = CliRunner().invoke(app, [*path, "--help"], env=ENV, prog_name="dflbench")
        assert words in _flat(res.output), res.output


def test_list_methods_shows_every_option_whole():
    from dflbench.methods.registry import METHODS, list_methods

    res = CliRunner().invoke(app, ["aedfl", "--list-methods"], env=ENV)
    assert res.exit_code == 0, res.output
    _check_width(res.output)
    rows = res.output.splitlines()
    for name in list_methods():
        assert any(re.match(rf"│ {re.escape(name)} +│", row) for row in rows), name
        for option in METHODS.get(name).describe_options("\n").splitlines():
            assert any(f"│ {option} " in row for row in rows), option


def test_reproduce_list_shows_every_title_whole():
    from dflbench.recipes.reproduce import list_recipes, load_recipe

    res = CliRunner().invoke(app, ["reproduce", "--list"], env=ENV)
    assert res.exit_code == 0, res.output
    _check_width(res.output)
    flat = _flat(res.output)
    for name in list_recipes():
        recipe = load_recipe(name)
        assert name in flat
        for word in recipe.title.split():           # titles wrap between words, never inside one
            assert re.search(rf"(^|\s){re.escape(word)}(\s|$)", flat), word
