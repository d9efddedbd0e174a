"""The method registry: metadata, typed options that round-trip through make_method and reach the methods, errors,
and adding a method as one class in one file."""

import dataclasses
import json
import re
from dataclasses import asdict, dataclass

import pytest
import torch
from typer.testing import CliRunner

from dflbench.cli.main import app
from dflbench.methods.gossip.base import DecentralizedMethod
from dflbench.methods.registry import (
    ABLATIONS,
    KINDS,
    METHODS,
    RUNTIMES,
    list_methods,
    make_method,
    method_options,
    parse_method_option,
    register_method,
)
from dflbench.registry import option


def changed(entry):
    """A valid options instance with every field moved off its default (ints + 1, floats halved, bools flipped)."""
    values = {}
    for name, default in entry.defaults().items():
        if isinstance(default, bool):
            values[name] = not default
        elif isinstance(default, int):
            values[name] = default + 1
        elif isinstance(default, float):
            values[name] = default / 2
    return entry.options(**values)


def carried(name, method):
    """The options a built method runs with."""
    return method.options


@pytest.mark.parametrize("name", list_methods())
def test_metadata_and_frozen_options(name):
    entry = METHODS.get(name)
    meta = entry.metadata
    assert meta["kind"] in KINDS and set(meta["runtimes"]) <= set(RUNTIMES) and "simulator" in meta["runtimes"]
    assert re.search(r"(19|20)\d\d \(AEDFL (Table 1|Sec\. 6\.1 ablation)\)", meta["paper"]) or name == "d-psgd"
    assert entry.options.__dataclass_params__.frozen
    assert all(f.metadata.get("doc") for f in entry.fields())                  # a one-line doc per option
    with pytest.raises(dataclasses.FrozenInstanceError):
        method_options(name).x = 1


@pytest.mark.parametrize("name", list_methods())
def test_options_round_trip_through_make_method(name):
    """dict -> options -> method and command-line text -> value give back the same non-default options."""
    entry = METHODS.get(name)
    opts = changed(entry)
    assert method_options(name, asdict(opts)) == opts
    built = make_method(name, asdict(opts))
    assert type(built) is type(make_method(name))
    if entry.fields():
        assert opts != entry.options() and carried(name, built) == opts
        assert carried(name, make_method(name, opts)) is opts
    for f in entry.fields():
        assert parse_method_option(f"{name}.{f.name}={getattr(opts, f.name)}") == (name, f.name, getattr(opts, f.name))


def test_ablation_switches():
    for name, (rl, dwu, prune) in ABLATIONS.items():
        cfg = make_method(name).cfg
        assert (cfg.rl, cfg.dwu, cfg.prune) == (rl, dwu, prune)
    assert {n for n in list_methods() if "distributed" in METHODS.get(n).metadata["runtimes"]} == set(ABLATIONS)


def test_no_option_is_swallowed():
    with pytest.raises(ValueError, match=r"method 'ad-psgd' has no option 'buffer'; valid: none"):
        make_method("ad-psgd", {"buffer": 2})
    with pytest.raises(ValueError,
                       match=r"method 'fedavg' has no option 'mu'; valid: fraction: float = 0.1, rounds: int = 0$"):
        make_method("fedavg", {"mu": 0.1})
    with pytest.raises(ValueError, match=r"has no option 'prune_every'; valid: lambda_lr: float = 0.1, .*"
                                         r"every: int = 10, until: int = 10000"):
        make_method("aedfl", {"prune_every": 2})


@pytest.mark.parametrize("name,options,match", [
    ("fedbuff", {"buffer": "x"}, "method 'fedbuff' option 'buffer' must be int, got 'x'"),
    ("fedbuff", {"server_lr": 0}, "method 'fedbuff': server_lr must be > 0, got 0.0"),
    ("sageflow", {"gamma": 1.5}, r"gamma must be in \(0, 1\]"),
    ("port", {"staleness_bound": -1}, "staleness_bound must be > 0"),
    ("safa", {"lag_tolerance": -1}, "lag_tolerance must be >= 0"),
    ("fedsa", {"tau0": -1}, "tau0 must be > 0"),
    ("fedprox", {"mu": -0.1}, "mu must be >= 0"),
    ("dispfl", {"alpha": 1.0}, r"alpha in \[0, 1\)"),
    ("aedfl", {"C": 0.5}, "C >= 1"),
    ("hrank", {"rate": 1.0}, r"rate in \[0, 1\)"),
])
def test_bad_values_raise(name, options, match):
    with pytest.raises(ValueError, match=match):
        make_method(name, options)


def test_parse_method_option_errors():
    assert parse_method_option("aedfl.C=4") == ("aedfl", "C", 4.0)
    with pytest.raises(ValueError, match="must be METHOD.OPTION=VALUE"):
        parse_method_option("fedbuff.buffer")
    with pytest.raises(ValueError, match="unknown method 'fedfoo'; valid: aedfl, aedfl-0"):
        parse_method_option("fedfoo.buffer=2")


def test_fedbuff_server_lr_scales_the_buffered_step(aedfl_sim):
    """The first buffer holds all 4 first uploads x_k (staleness 0, s(0) = 1, all started from x_0):
    x_g = x_0 + eta_g / 4 sum_k (x_k - x_0)."""
    from dflbench.engines.async_sim import Message

    sim = aedfl_sim(make_method("fedbuff", {"buffer": 4, "server_lr": 0.5}), max_updates=2)
    m = sim.method
    m.setup(sim)
    sent = []
    sim.send = lambda src, dst, payload, nbytes, at=None: sent.append(Message(src, dst, payload, nbytes, 0.0))
    m.on_complete(sim, torch.arange(4), torch.zeros(4, dtype=torch.float64))
    x0 = m.xg.clone()
    for msg in list(sent):
        m.on_arrive(sim, msg)
    assert m.version == 1 and len(sent) == 8                                # 4 uploads, 4 replies
    torch.testing.assert_close(m.xg, x0 + 0.5 / 4 * (sim.x - x0).sum(0), rtol=1e-5, atol=1e-7)


def test_dispfl_alpha_zero_keeps_the_initial_masks(aedfl_sim):
    """alpha = 0: rate_t = 0, no prune-and-regrow; alpha > 0 changes the masks and keeps their density."""

    def masks(alpha, run):
        sim = aedfl_sim(make_method("dispfl", {"alpha": alpha, "anneal_rounds": 10}), max_updates=3)
        sim.run() if run else sim.method.setup(sim)
        return sim.method.masks.clone()

    initial = masks(0.0, run=False)
    assert torch.equal(masks(0.0, run=True), initial)
    after = masks(0.5, run=True)
    assert not torch.equal(after, initial) and torch.equal(after.sum(1), initial.sum(1))


def test_aedfl_pruning_options_reach_the_pruner(aedfl_sim):
    sim = aedfl_sim(make_method("aedfl-p", {"every": 1, "C": 4, "hutchinson": 2, "damping": 0.01}), max_updates=1)
    sim.method.setup(sim)
    pruner = sim.method.pruner
    assert (pruner.cfg.C, pruner.cfg.hutchinson, pruner.cfg.damping, pruner.cfg.every) == (4.0, 2, 0.01, 1)
    assert pruner.probes(sim, torch.tensor([0, 2]), sim.P).shape == (2, 2, sim.P)


@dataclass(frozen=True)
class LocalOnlyOptions:
    lr_scale: float = option(1.0, "multiplies the run's learning rate")


class LocalOnly(DecentralizedMethod):
    """A throwaway method: devices train alone and never communicate."""

    name = "local-only"

    def setup(self, sim):
        self._init_common(sim)
        sim.schedule_completions(torch.arange(sim.D), torch.zeros(sim.D, dtype=torch.float64))

    def on_complete(self, sim, devs, times):
        x, loss, _ = sim.local_sgd(devs, sim.x[devs], lr=sim.cfg.lr * self.options.lr_scale)
        sim.x[devs], sim.loss[devs] = x, loss
        sim.t[devs] += 1
        sim.schedule_completions(devs, times)

    def on_rejoin(self, sim, dev):
        sim.schedule_completions(torch.tensor([dev]), torch.tensor([sim.now], dtype=torch.float64))


def test_adding_a_method_is_one_class(monkeypatch, aedfl_sim, aedfl_npz, tmp_path):
    """Registering a class makes it listed, buildable with its options, runnable by the simulator and the recipe,
    and shown by --list-methods."""
    from dflbench.recipes.aedfl import AEDFLRunConfig, run_aedfl

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))      # registrations end with the test
    register_method("local-only", options=LocalOnlyOptions, kind="decentralized", paper="nobody 2024")(LocalOnly)
    assert list_methods()[-1] == "local-only"
    frozen = aedfl_sim(make_method("local-only", {"lr_scale": 0.0}), max_updates=2)
    frozen.run()
    assert frozen.t.tolist() == [2] * 4 and torch.equal(frozen.x, frozen.net.init.expand_as(frozen.x))
    moving = aedfl_sim(make_method("local-only"), max_updates=2)
    res = moving.run()
    assert res.stop_reason == "max updates" and res.bytes_sent == 0 and not torch.equal(moving.x[0], moving.x[1])
    out = run_aedfl(AEDFLRunConfig(dataset=f"npz:{aedfl_npz}", devices=4, methods=("local-only",), max_updates=2,
                                   batch_size=8, eval_samples=16, method_options={"local-only": {"lr_scale": 0.5}}))
    assert out["runs"][0]["options"] == {"lr_scale": 0.5}
    listing = CliRunner().invoke(app, ["aedfl", "--list-methods"], env={"COLUMNS": "250"})
    assert listing.exit_code == 0 and "local-only" in listing.output and "lr_scale: float = 1.0" in listing.output


def test_cli_method_options_are_recorded(aedfl_npz, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["aedfl", "--dataset", f"npz:{aedfl_npz}", "--devices", "4", "--methods",
                                     "fedbuff,aedfl-p,fedavg", "--max-updates", "2", "--batch-size", "8",
                                     "--eval-samples", "16", "--method-opt", "fedbuff.buffer=3", "--method-opt",
                                     "aedfl-p.C=4", "--method-opt", "fedbuff.server_lr=0.5", "--prune-every", "2",
                                     "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r["options"] for r in results["runs"]}
    assert runs == {"fedbuff": {"buffer": 3, "server_lr": 0.5}, "fedavg": {"fraction": 0.1, "rounds": 0},
                    "aedfl-p": {"every": 2, "until": 10000, "min_rate": 0.25, "max_rate": 0.4, "C": 4.0,
                                "hutchinson": 1, "damping": 0.001, "lanczos_steps": 6, "hessian": "auto",
                                "lambda_lr": 0.1, "lambda_step": "normalized", "policy_lr": 0.05,
                                "policy_reward": "change", "reuse_aggregated": False}}
    assert results["config"]["method_options"] == {"aedfl-p": {"every": 2, "C": 4.0},
                                                   "fedbuff": {"buffer": 3, "server_lr": 0.5}}
    assert "options" not in (out / "results.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("item,needles", [
    ("fedbuff.bufer=3", ["method 'fedbuff' has no option 'bufer'; valid: buffer: int = 10, server_lr: float = 1.0"]),
    ("fedbuff.buffer=ten", ["method 'fedbuff' option 'buffer' must be int, got 'ten'"]),
    ("fedfoo.buffer=3", ["unknown method 'fedfoo'; valid: aedfl, aedfl-0", "hap"]),
    ("aedfl.policy_reward=gain", ["policy_reward in ('change', 'loss')", "'gain'"]),
])
def test_cli_bad_method_option_exits_2_with_one_line(aedfl_npz, tmp_path, item, needles):
    res = CliRunner().invoke(app, ["aedfl", "--dataset", f"npz:{aedfl_npz}", "--devices", "4", "--methods",
                                     "fedbuff", "--method-opt", item, "--out", str(tmp_path)], env={"COLUMNS": "300"})
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert all(n in lines[0] for n in needles), lines[0]
    assert not (tmp_path / "results.json").exists()


def test_cli_list_methods_table():
    res = CliRunner().invoke(app, ["aedfl", "--list-methods"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    rows = {line.split("│")[1].strip(): line for line in res.output.splitlines() if line.startswith("│")
            and line.split("│")[1].strip()}
    assert list(rows) == list_methods()
    assert "server" in rows["fedbuff"] and "Nguyen et al. 2022" in rows["fedbuff"] and "buffer: int = 10" in rows[
        "fedbuff"]
    assert "simulator, distributed" in rows["aedfl"] and "simulator, distributed" not in rows["fedbuff"]
    for name in list_methods():
        for line in METHODS.get(name).describe_options("\n").splitlines():
            assert line in res.output


def test_run_config_validates_its_method_options():
    from dflbench.recipes.aedfl import AEDFLRunConfig

    cfg = AEDFLRunConfig(methods=("fedbuff", "aedfl"), method_options={"fedbuff": {"buffer": "4"}})
    assert cfg.options("fedbuff") == METHODS.get("fedbuff").options(buffer=4) and cfg.options("aedfl").every == 10
    # a recipe carries options for methods a `--set methods=...` may leave out: kept, still checked, not run
    cfg = AEDFLRunConfig(methods=("fedbuff",), method_options={"fedavg": {"fraction": 0.5}})
    assert cfg.options("fedavg").fraction == 0.5
    with pytest.raises(ValueError, match="method 'fedavg' has no option 'rounds_x'"):
        AEDFLRunConfig(methods=("fedbuff",), method_options={"fedavg": {"rounds_x": 1}})
    with pytest.raises(ValueError, match="options are given for 'fedfoo', which is not a method; valid: aedfl"):
        AEDFLRunConfig(methods=("fedbuff",), method_options={"fedfoo": {"buffer": 1}})
    with pytest.raises(ValueError, match="method 'fedbuff' has no option 'fraction'"):
        AEDFLRunConfig(methods=("fedbuff",), method_options={"fedbuff": {"fraction": 0.5}})
    with pytest.raises(ValueError, match="--devices must be a finite number >= 2, got 1"):
        AEDFLRunConfig(devices=1)


def test_a_method_file_in_a_package_of_methods_registers_itself(tmp_path, monkeypatch):
    """`import_submodules` (what methods/server and methods/gossip run) imports every file of the package, so a new
    method is its file: here a package holding only a new file, imported the same way."""
    import importlib
    import sys

    pkg = tmp_path / "more_methods"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from dflbench.registry import import_submodules\n\n"
                                     "import_submodules(__name__, __path__)\n")
    (pkg / "echo.py").write_text("from dflbench.methods.registry import register_method\n"
                                 "from tests_local_only import LocalOnly, LocalOnlyOptions\n\n"
                                 "register_method('echo-only', options=LocalOnlyOptions, kind='decentralized',\n"
                                 "                paper='nobody 2024')(LocalOnly)\n")
    monkeypatch.setitem(sys.modules, "tests_local_only", sys.modules[__name__])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))      # registrations end with the test
    importlib.import_module("more_methods")
    assert list_methods()[-1] == "echo-only"
    assert METHODS._entries["echo-only"].constructor is LocalOnly
    server = {e.constructor.__module__ for e in METHODS._entries.values() if e.metadata["kind"] == "server"}
    assert server == {f"dflbench.methods.server.{m}" for m in ("aso_fed", "fedavg", "fedbuff", "fedsa", "port",
                                                                "safa", "sageflow")}
