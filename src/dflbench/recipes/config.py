"""The one path from a TOML file and `--set KEY=VALUE` text to a recipe's config dataclass (`AEDFLRunConfig`,
`P2PFTConfig`).

A config file names its experiment and holds the dataclass's fields in `[config]`:

    experiment = "aedfl"                 # aedfl | p2pft | pretrain
    [config]
    model = "lenet5"
    methods = ["aedfl", "fedavg"]        # a tuple field: a TOML array (or "a,b" text)
    [config.method_options.fedbuff]      # a mapping field: a TOML table
    buffer = 10

Values are checked against the field types with `dflbench.registry.coerce` (the same coercion as method options:
text is parsed, so `--set lr=0.01` works; "none" is None for an optional field). `--set a.b=v` writes into a
nested table (`--set method_options.fedbuff.buffer=4`). An unknown key is a UserError naming it and listing the
valid ones.

Every default lives once, in its config dataclass (a field's `dflbench.registry.option`: default and doc, the doc being
its command-line help). The sources of a run merge over those defaults key by key (nested tables too), later sources
winning, in one order:

    dataclass defaults < file [config] < [scales.SCALE.config] < [stand_in.config] < --set < command-line options

(`dflbench run` / `reproduce` give a file, a scale, the stand-in and `--set`, with `--data-dir` / `--download` as the
command-line options; `dflbench aedfl|p2pft --config FILE` give a file and the options; an option not given on the
command line is None and takes no part.)
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from dflbench.errors import UserError
from dflbench.registry import coerce, field_default, type_name


@dataclass(frozen=True)
class Experiment:
    """A kind of experiment a config file or recipe names: its recipe module (imported on first use: `dflbench aedfl`
    never loads the P2P-FT stack, torchvision, timm and captum, which costs seconds of start-up; bench/RESULTS.md,
    "Start-up"), the config class there, the config field listing its parts (`parts`: methods / algorithms; None: one
    part named as the experiment), the key naming the part of each recorded run (`run_key`: method / algorithm), the
    keys of a recipe's paper rows, `report`: the name of the function in `recipes/report.py` that summarizes its
    seeds, `part_resume`: a finished seed continues when more parts are asked (AEDFL's methods are
    independent runs), `progress`: a part reports how far it is (`on_progress`), and `stacked`: seeds not yet done
    run together, the module's `run_seeds_stacked(cfgs, folders, on_run_done)` (P2P-FT, unless the config's
    `batch_seeds` is false). The module's `run_seed(cfg, folder, on_run_done, on_progress)` runs one seed into
    `folder`, writing as each part finishes."""

    name: str
    module: str
    config: str
    parts: str | None
    run_key: str
    paper_keys: tuple[str, ...]
    report: str
    part_resume: bool = False
    progress: bool = False
    stacked: bool = False

    def config_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.config)

    def part_names(self, cfg) -> tuple[str, ...]:
        return (self.name,) if self.parts is None else getattr(cfg, self.parts)

    def part_name(self, recorded: str) -> str:
        """A part's name as a record holds it, read as today's (the config class's `RENAMED_VALUES` of `parts`)."""
        return getattr(self.config_class(), "RENAMED_VALUES", {}).get(self.parts, {}).get(recorded, recorded)

    def upgrade_results(self, doc: dict) -> dict:
        """A results.json (`config` and `runs`) with its config (`upgrade_record`) and its runs' part names read as
        today's; `doc` itself is left as it is."""
        return {**doc, "config": upgrade_record(self.config_class(), doc["config"]),
                "runs": [{**run, self.run_key: self.part_name(run[self.run_key])} for run in doc["runs"]]}

    def run_seed(self, cfg, folder: Path, on_run_done=None, on_progress=None) -> None:
        importlib.import_module(self.module).run_seed(cfg, folder, on_run_done, on_progress)

    def check_finished(self, cfg, folder: Path) -> None:
        """For a seed `folder` done with `cfg`'s config: a part-resuming experiment's module checks that its parts
        ran with the options `cfg` gives them today (`check_finished(cfg, folder)`: AEDFL's method options)."""
        if self.part_resume:
            importlib.import_module(self.module).check_finished(cfg, folder)

    def stacks(self, cfg, seeds: int) -> bool:
        """Whether `seeds` pending seeds of `cfg` run together (`run_seeds_stacked`)."""
        return self.stacked and seeds > 1 and getattr(cfg, "batch_seeds", None) is not False

    def run_seeds_stacked(self, cfgs: list, folders: list[Path], on_run_done=None) -> None:
        """The seeds `cfgs` into `folders`, together; `on_run_done(s, run)` after each part of seed index s."""
        importlib.import_module(self.module).run_seeds_stacked(cfgs, folders, on_run_done)


EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(experiment: Experiment) -> Experiment:
    """Add `experiment` to `EXPERIMENTS`; ValueError when its name is taken."""
    if experiment.name in EXPERIMENTS:
        raise ValueError(f"experiment {experiment.name!r} is already registered; registered: {', '.join(EXPERIMENTS)}")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


register_experiment(Experiment("aedfl", "dflbench.recipes.aedfl", "AEDFLRunConfig", "methods", "method",
                               ("acc", "time", "mfp"), "summarize_aedfl", part_resume=True, progress=True))
register_experiment(Experiment("p2pft", "dflbench.recipes.p2pft", "P2PFTConfig", "algorithms", "algorithm",
                               ("nodes",), "summarize_p2pft", stacked=True))
register_experiment(Experiment("pretrain", "dflbench.recipes.pretrain", "PretrainRunConfig", None, "run",
                               ("test_accuracy",), "summarize_pretrain"))


def experiment(name: str, where: str) -> Experiment:
    """The registered experiment `name`; UserError naming `where` and the valid names for an unknown one."""
    if name not in EXPERIMENTS:
        raise UserError(f"{where}: unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def read_toml(path: str | Path) -> dict:
    """The parsed TOML file; a missing file or a syntax error is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None


def experiment_class(name: str, where: str) -> type:
    """The config dataclass of experiment `name` (imported now); UserError naming `where` for an unknown one."""
    return experiment(name, where).config_class()


def check_keys(table: Mapping, valid, where: str) -> None:
    """UserError naming the first key of `table` not in `valid`."""
    for key in table:
        if key not in valid:
            raise UserError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")


def merge(base: Mapping, over: Mapping) -> dict:
    """`over` on top of `base`, merging nested tables key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_sets(items: list[str] | tuple[str, ...]) -> dict:
    """['lr=0.01', 'method_options.fedbuff.buffer=4'] -> {'lr': '0.01', 'method_options': {'fedbuff': {...}}}
    (values stay text; `config_values` coerces them to the field types)."""
    out: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not eq or not all(parts):
            raise UserError(f"--set {item!r} must be KEY=VALUE (e.g. --set lr=0.01 or --set "
                            "method_options.fedbuff.buffer=4)")
        nested: Any = value.strip()
        for part in reversed(parts):
            nested = {part: nested}
        out = merge(out, nested)
    return out


def parse_model_kwargs(spec: str) -> tuple[tuple[str, Any], ...]:
    """'img_size=32,patch_size=4,global_pool=avg' -> (('img_size', 32), ...): ints, floats, else strings."""
    out = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--model-kwargs item {item!r} must be KEY=VALUE (e.g. img_size=32,depth=4)")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        out.append((key.strip(), value))
    return tuple(out)


def _field_value(value, tp, where: str):
    """`value` (TOML or text) as a value of field annotation `tp`."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if typing.get_origin(args[0]) is tuple:                             # model_kwargs: (key, value) pairs
            if isinstance(value, str):
                return parse_model_kwargs(value)
            if not isinstance(value, Mapping):
                raise UserError(f"{where} must be a table of KEY = VALUE, got {value!r}")
            return tuple((str(k), v) for k, v in value.items())
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise UserError(f"{where} must be a list (or comma-separated text), got {value!r}")
        return tuple(coerce(v, args[0], where) for v in items)
    if origin is Mapping or origin is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"{where} must be a table, got {value!r}")
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in value.items()}
    return coerce(value, tp, where)


def config_values(cls: type, table: Mapping, where: str) -> dict:
    """The fields of `table` checked and coerced for dataclass `cls` (no defaults filled)."""
    types_ = typing.get_type_hints(cls)
    check_keys(table, list(types_), where)
    return {k: _field_value(v, types_[k], f"{where}: {k} ({type_name(types_[k])})") for k, v in table.items()}


def build_config(experiment: str, *tables: Mapping, where: str = "config"):
    """The config dataclass of `experiment` from `tables` merged in order (later wins)."""
    cls = experiment_class(experiment, where)
    merged: dict = {}
    for table in tables:
        merged = merge(merged, table)
    return cls(**config_values(cls, merged, where))


def upgrade_record(cls: type, config: Mapping) -> dict:
    """A config recorded in a results.json / done.json with the values `cls` renamed since read as today's: a config
    class lists them in its `RENAMED_VALUES` ({field: {former value: today's}}; a list field's items are renamed
    one by one), e.g. P2P-FT's algorithm names."""
    out = dict(config)
    for key, renamed in getattr(cls, "RENAMED_VALUES", {}).items():
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [renamed.get(v, v) if isinstance(v, str) else v for v in value]
        elif isinstance(value, str):
            out[key] = renamed.get(value, value)
    return out


def recorded_config(cls: type, config: Mapping) -> dict:
    """A config recorded in a results.json / done.json, upgraded (`upgrade_record`) and with the fields added to
    `cls` since then at their defaults (as JSON): a field added later held its default in every run recorded before
    it (`runtime`, for one), so an old record still resumes and compares equal."""
    added = {f.name: field_default(cls, f.name) for f in dataclasses.fields(cls) if f.name not in config}
    return {**json.loads(json.dumps(added, default=str)), **upgrade_record(cls, config)}


def with_config_file(cls: type, path: str | Path | None, given: Mapping[str, Any]):
    """`cls(**values)` for a command that also takes `--config FILE`: the dataclass defaults, then the file's
    `[config]`, then `given`, the options given on the command line (field names, typed values). Mapping fields
    merge."""
    if path is None:
        return cls(**given)
    doc = read_toml(path)
    name = next((k for k, v in EXPERIMENTS.items() if (v.module, v.config) == (cls.__module__, cls.__qualname__)),
                None)
    if doc.get("experiment", name) != name:
        raise UserError(f"{path} configures experiment {doc['experiment']!r}; use it with `dflbench "
                        f"{doc['experiment']}` or `dflbench run`")
    return cls(**merge(config_values(cls, doc.get("config", {}), f"{path} [config]"), given))
