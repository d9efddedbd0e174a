"""Every default lives once: each command-line option of a config field is that field (name, default, help), no
option in cli/*.py has a numeric default, and the engine/runtime configs an AEDFL run builds share its defaults."""

import ast
import dataclasses
from pathlib import Path

import click
import pytest
import typer
from rich.markup import escape

from dflbench.cli.main import app
from dflbench.cli.options import shown
from dflbench.engines.async_sim import AsyncConfig
from dflbench.recipes.aedfl import AEDFLRunConfig
from dflbench.recipes.demo import DEMO
from dflbench.recipes.p2pft import P2PFTConfig
from dflbench.recipes.pretrain import PretrainRunConfig
from dflbench.registry import field_default, option_doc
from dflbench.runtime.async_node import AsyncRuntimeConfig

CLI = Path(__file__).parents[2] / "src" / "dflbench" / "cli"
# command -> (its config (class or instance: the defaults shown), options that are no field, options that set a field
# of another name)
COMMANDS = {
    "aedfl": (AEDFLRunConfig, {"prune_every", "method_opt", "list_methods_", "out", "resume", "overwrite", "config"},
              {}),
    "p2pft": (P2PFTConfig, {"out", "resume", "overwrite", "threads", "backend", "peer_timeout", "config"},
              {"no_cache": "cache"}),
    "pretrain": (PretrainRunConfig, {"out", "threads"}, {}),
    "demo": (DEMO, {"out", "threads"}, {}),
}


def _command(name: str) -> click.Command:
    root = typer.main.get_command(app)
    return root.get_command(click.Context(root), name)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_its_config_field(name):
    source, other, renamed = COMMANDS[name]
    fields = {f.name: f for f in dataclasses.fields(source)}
    checked = 0
    for param in _command(name).params:
        if param.name in other:
            continue
        field = fields[renamed.get(param.name, param.name)]            # KeyError: an option that is no field
        assert param.default in (None, False), (param.name, param.default)   # not given: the config decides
        doc = option_doc(field)
        if param.name in renamed or getattr(param, "is_flag", False):
            assert param.help == escape(doc)                              # the help as typer's markup escapes it
        else:
            text = shown(field_default(source, field.name))
            assert param.help == escape(doc if text is None else f"{doc} [default: {text}]"), param.name
            assert param.opts[0] == "--" + field.name.replace("_", "-")
        checked += 1
    assert checked >= (1 if name == "demo" else 10)


def test_every_run_field_has_a_doc():
    for cls in (AEDFLRunConfig, P2PFTConfig, PretrainRunConfig):
        assert all(option_doc(f) for f in dataclasses.fields(cls)), cls


def _is_option(node) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("Option", "Argument")


def _number(node) -> bool:
    node = node.operand if isinstance(node, ast.UnaryOp) else node
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _numeric_defaults(path: Path) -> list[str]:
    """`typer.Option(<number>, ...)` / `typer.Argument(<number>, ...)` in `path`, and numeric defaults of the
    other parameters of a command (a function with a typer option)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if _is_option(node) and node.args and _number(node.args[0]):
            found.append(f"{path.name}:{node.lineno}")
        if isinstance(node, ast.FunctionDef):
            defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
            if any(_is_option(d) for d in defaults):
                found += [f"{path.name}:{d.lineno}" for d in defaults if _number(d)]
    return found


def test_no_numeric_default_in_the_cli():
    assert [hit for path in sorted(CLI.glob("*.py")) for hit in _numeric_defaults(path)] == []


def test_the_scan_finds_a_numeric_default(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("import typer\ndef f(lr: float = typer.Option(0.05, '--lr'), k=-1): ...\n"
                    "def g(x=typer.Option(None), k=2.0): ...\ndef fmt(digits=3): ...\n")
    assert sorted(_numeric_defaults(path)) == ["x.py:2", "x.py:2", "x.py:3"]


@pytest.mark.parametrize("engine, names", [
    (AsyncConfig, {}), (AsyncRuntimeConfig, {"time_budget_s": "time_budget"})])
def test_engine_configs_share_the_run_defaults(engine, names):
    """A field an engine/runtime config shares with the run config has no default there, or the same one."""
    run = {f.name: f.default for f in dataclasses.fields(AEDFLRunConfig)}
    shared = 0
    for f in dataclasses.fields(engine):
        key = names.get(f.name, f.name)
        if key in run:
            shared += 1
            assert f.default is dataclasses.MISSING or f.default == run[key], f.name
    assert shared >= 6


def test_engine_configs_are_built_from_the_run_config():
    from dflbench.recipes.aedfl_distributed import runtime_config

    cfg = AEDFLRunConfig(methods=("aedfl",), local_steps=3, lr=0.2, slot_width=0.5, time_budget=7.0, seed=4)
    sim = cfg.async_config()
    assert (sim.local_steps, sim.lr, sim.slot_width, sim.time_budget, sim.seed) == (3, 0.2, 0.5, 7.0, 4)
    rt = runtime_config(cfg)
    assert (rt.local_steps, rt.lr, rt.time_budget_s, rt.eval_samples, rt.seed) == (3, 0.2, 7.0, 1000, 4)
    assert rt.heartbeat_timeout_s == AsyncRuntimeConfig.heartbeat_timeout_s
