"""Named reproductions: the TOML recipes in `recipes/configs/` (P2P-FT Table I, AEDFL Table 1), their scales,
multi-seed runs and the report.

A recipe file is a config file (`dflbench.recipes.config`) with more top-level keys:

    experiment = "aedfl"
    title = "AEDFL Table 1: EMNIST-letters + LeNet-5"
    [config]               # the paper's setting (scale `paper`)
    [scales.cpu]           # note = what was shrunk; [scales.cpu.config] = the fields it changes
    [stand_in]             # optional: an offline substitute dataset, used only with --stand-in
    [paper]                # source = table and column; [paper.results.NAME] = the paper's numbers

`run_seeds` runs seeds cfg.seed, cfg.seed + 1, ... into `out/seed-S/` (the experiment's own results.json and
pictures): AEDFL one after another, P2P-FT together (`run_p2pft_seeds`: the seeds of each algorithm stacked into one
synchronous run; `--set batch_seeds=false` runs them one after another; the results are the same); a seed is done
when `out/seed-S/done.json` holds the same resolved config, so a rerun skips finished seeds and an `out` holding
another experiment is refused. An interrupted P2P-FT batch resumes from its per-seed checkpoints.
`dflbench.recipes.report` then writes `out/report.md`, its PNGs and `out/results.json`.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from dflbench.errors import UserError
from dflbench.io import atomic_write_json, read_json

from .config import EXPERIMENTS, build_config, check_keys, experiment_class, read_toml, recorded_config

TOP_KEYS = ("experiment", "title", "config", "scales", "stand_in", "paper")
SCALES = ("paper", "paper-cpu", "cpu", "smoke")
SEEDS = 1  # seeds a reproduction runs unless told


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe (or plain config) file; `scales` maps a scale to (note, config overrides)."""

    name: str
    experiment: str
    title: str
    config: Mapping[str, Any]
    scales: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    stand_in: tuple[str, Mapping[str, Any]] | None = None
    paper_source: str = ""
    paper: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    path: str = ""

    def resolve(self, scale: str | None = None, sets: Mapping | None = None, stand_in: bool = False):
        """The experiment config at `scale` (None: the file's own [config]), with the stand-in dataset when asked,
        then `sets` (from `--set`)."""
        where = f"{self.name}"
        tables = [self.config]
        if scale is not None:
            if scale not in self.scales:
                raise UserError(f"{where} has no scale {scale!r}; valid: {', '.join(self.scales) or 'none'}")
            tables.append(self.scales[scale][1])
        if stand_in:
            if self.stand_in is None:
                raise UserError(f"{where} has no stand-in dataset; drop --stand-in")
            tables.append(self.stand_in[1])
        return build_config(self.experiment, *tables, sets or {}, where=where)

    def notes(self, scale: str | None, stand_in: bool) -> list[str]:
        out = [self.scales[scale][0]] if scale is not None and self.scales[scale][0] else []
        return out + ([self.stand_in[0]] if stand_in and self.stand_in is not None else [])


def _table(doc: Mapping, key: str, where: str) -> Mapping:
    value = doc.get(key, {})
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: {key} must be a table")
    return value


def _note_and_config(table: Mapping, where: str) -> tuple[str, Mapping]:
    check_keys(table, ("note", "config"), where)
    return str(table.get("note", "")), _table(table, "config", where)


def parse_recipe(doc: Mapping, name: str, path: str = "") -> Recipe:
    """A Recipe from a parsed TOML document; every scale and the stand-in are resolved once, so a bad key
    anywhere is reported now, naming it."""
    experiment = doc.get("experiment")
    fields = typing.get_type_hints(experiment_class(experiment, name)) if experiment in EXPERIMENTS else {}
    misplaced = [k for k in doc if k not in TOP_KEYS and k in fields]
    if misplaced:
        raise UserError(f"{name}: {', '.join(map(repr, misplaced))} must go under [config] (the run's fields), not at "
                        "the top level")
    check_keys(doc, TOP_KEYS, name)
    if experiment is None:
        raise UserError(f"{name}: missing key 'experiment' (one of {', '.join(EXPERIMENTS)})")
    experiment_class(experiment, name)
    scales = {}
    for scale, table in _table(doc, "scales", name).items():
        if scale not in SCALES:
            raise UserError(f"{name}: unknown scale {scale!r}; valid: {', '.join(SCALES)}")
        scales[scale] = _note_and_config(table, f"{name} [scales.{scale}]")
    stand_in = _note_and_config(doc["stand_in"], f"{name} [stand_in]") if "stand_in" in doc else None
    paper = _table(doc, "paper", name)
    check_keys(paper, ("source", "results"), f"{name} [paper]")
    kind = EXPERIMENTS[experiment]
    results = {kind.part_name(row): values for row, values in _table(paper, "results", f"{name} [paper]").items()}
    for row, values in results.items():
        check_keys(values, kind.paper_keys, f"{name} [paper.results.{row}]")
    recipe = Recipe(name, experiment, str(doc.get("title", name)), _table(doc, "config", name), scales, stand_in,
                    str(paper.get("source", "")), results, path)
    base = recipe.resolve()
    names = kind.part_names(base)
    unknown = [row for row in results if row not in names]
    if unknown:
        raise UserError(f"{name} [paper.results]: rows {unknown} are not among the runs ({', '.join(names)})")
    for scale in scales:
        recipe.resolve(scale)
    if stand_in is not None:
        recipe.resolve(stand_in=True)
    return recipe


def recipe_dir():
    return files("dflbench.recipes") / "configs"


def list_recipes() -> list[str]:
    """The names of the recipes shipped with dflbench (file stems, sorted)."""
    return sorted(p.name[:-5] for p in recipe_dir().iterdir() if p.name.endswith(".toml"))


def load_recipe(name: str) -> Recipe:
    """A shipped recipe by name; an unknown name lists the valid ones."""
    if name not in list_recipes():
        raise UserError(f"unknown recipe {name!r}; `dflbench reproduce --list` shows them: {', '.join(list_recipes())}")
    path = recipe_dir() / f"{name}.toml"
    return parse_recipe(read_toml(path), name, str(path))


def load_recipe_file(path: str | Path) -> Recipe:
    """A recipe or plain config file given by path (`dflbench run FILE.toml`)."""
    return parse_recipe(read_toml(path), Path(path).stem, str(path))


def _config_record(cfg) -> dict:
    """The resolved config (a config dataclass, or a recorded one as a dict) a finished seed is recorded and compared
    with; P2P-FT's `batch_seeds` is left out (it chooses how seeds run, not what they compute), so a folder finished
    in one mode is kept in the other."""
    record = json.loads(json.dumps(cfg if isinstance(cfg, dict) else asdict(cfg), default=str))
    record.pop("batch_seeds", None)
    return record


def _differing_fields(finished: dict, record: dict) -> list[str]:
    """The fields (recipe, experiment or config keys) in which two seed records differ, sorted."""
    a, b = finished.get("config", {}), record["config"]
    top = [k for k in ("recipe", "experiment") if finished.get(k) != record[k]]
    return top + sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def run_seeds(recipe: Recipe, cfg, out: str | Path, seeds: int = SEEDS,
              on_seed_start: Callable[[int], None] | None = None,
              on_run_done: Callable[[int, dict], None] | None = None,
              on_progress: Callable[[int, str, float, dict | None], None] | None = None) -> list[Path]:
    """Run `seeds` seeds of `cfg` into `out/seed-S/`, skipping seeds already done with the same config; returns
    the seed folders. A finished AEDFL seed whose config differs only in its methods is done when it holds every
    method named (`write_report(methods=...)` reports those), and continued when they add to its own: its methods
    are kept and the new ones run (`run_aedfl`'s method-level resume). `on_seed_start(seed)` and
    `on_run_done(seed, run)` (after each method / algorithm) report progress; `on_progress(seed, method,
    fraction, latest)` within an AEDFL method (`run_aedfl`). P2P-FT seeds not yet done train together
    (`run_p2pft_seeds`: each algorithm's seeds stacked into one run) unless `batch_seeds` is false; a seed's
    `done.json` is written when its results are."""
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    if getattr(cfg, "runtime", "simulator") != "simulator":
        raise UserError(f"runtime = {cfg.runtime!r}: a reproduction runs its seeds on the simulator; run the config "
                        f"with `dflbench {recipe.experiment} --config FILE` under torchrun instead")
    out, kind = Path(out), EXPERIMENTS[recipe.experiment]
    folders, pending = [], []
    for seed in range(cfg.seed, cfg.seed + seeds):
        seed_cfg = replace(cfg, seed=seed)
        folder = out / f"seed-{seed}"
        folders.append(folder)
        record = {"recipe": recipe.name, "experiment": recipe.experiment, "config": _config_record(seed_cfg)}
        done = folder / "done.json"
        if done.is_file():
            finished = read_json(done, "the record of a finished seed", "delete it to run that seed again, or give "
                                 "another --out")
            finished = {**finished, "config": _config_record(recorded_config(
                experiment_class(recipe.experiment, recipe.name), finished.get("config", {})))}
            if finished == record:
                kind.check_finished(seed_cfg, folder)
                continue
            differ = _differing_fields(finished, record)
            if differ == [kind.parts] and kind.part_resume:
                have, asked = finished["config"][kind.parts], kind.part_names(seed_cfg)
                if set(asked) <= set(have):
                    kind.check_finished(seed_cfg, folder)
                    continue                                # all there: the report takes the named ones
                missing = [m for m in have if m not in asked]
                if missing:
                    raise UserError(f"{folder} holds finished runs of {', '.join(missing)}, which --set {kind.parts} "
                                    "leaves out while adding others; name them too (they are kept, not run "
                                    "again) or give another --out")
            else:
                raise UserError(f"{folder} holds a finished run of another configuration (differs in "
                                f"{', '.join(differ)}); give another --out or remove that folder")
        pending.append((seed, seed_cfg, folder, record))
    if kind.stacks(cfg, len(pending)):                                              # P2P-FT: seeds stacked
        for seed, *_ in pending:
            if on_seed_start is not None:
                on_seed_start(seed)
        kind.run_seeds_stacked([c for _, c, _, _ in pending], [f for _, _, f, _ in pending],
                               None if on_run_done is None else (lambda s, run: on_run_done(pending[s][0], run)))
        for _, _, folder, record in pending:
            atomic_write_json(folder / "done.json", record)
        return folders
    for seed, seed_cfg, folder, record in pending:
        if on_seed_start is not None:
            on_seed_start(seed)
        kind.run_seed(
            seed_cfg, folder, None if on_run_done is None else (lambda run, s=seed: on_run_done(s, run)),
            None if on_progress is None else (lambda name, f, h, s=seed: on_progress(s, name, f, h)))
        atomic_write_json(folder / "done.json", record)
    return folders

