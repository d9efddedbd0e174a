"""The AEDFL experiment (Sec. 6, Table 1): load a dataset, Dirichlet-partition it over D devices on the
exponential graph (`topology`: any graph), run each method on the AsyncSimulator, and report Table 1's metrics.

Metrics per method: final accuracy (mean over devices on the global test set; the global model for server
methods), virtual time to the target accuracy, MFP (million multiply-accumulates per sample of the Conv/Linear
layers of the pruned structure), bytes sent, consensus distance over time (in `history`), device steps per
wall-clock second; each run also records its method's resolved options (`options`) and, for the AEDFL variants,
`diagnostics`: what the modules did over time (`dflbench.methods.aedfl.diagnostics`). A personalized method (one
with `personalized_accuracy(sim)`, e.g. DisPFL) also reports `personalized_accuracy`: each device's model on its
own label distribution, next to `accuracy` on the global test set. `write_results` stores results.json,
results.csv, the accuracy-vs-virtual-time PNG and diagnostics.png atomically. Methods are independent runs (each
starts from the same seed, data and model), so `run_aedfl(..., previous=...)` resumes an interrupted experiment by
keeping the methods a results.json of the same configuration already holds (`finished_runs`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dflbench.data import load_dataset, partition, random_subset
from dflbench.data.text import load_imdb
from dflbench.engines.async_checkpoint import Checkpoint, meta_of
from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
from dflbench.engines.async_stacked import DeviceData
from dflbench.engines.coordinator import FaultConfig
from dflbench.engines.devices import load_profiles, sample_profiles
from dflbench.engines.evaluation import convergence
from dflbench.errors import UserError, check_numbers, for_option
from dflbench.io import (
    as_json,
    atomic_write_csv,
    atomic_write_json,
    differing_fields,
    keep_earlier_runs,
    read_results_file,
)
from dflbench.methods.aedfl.diagnostics import BUCKETS, summary
from dflbench.methods.registry import list_methods, make_method, method_options
from dflbench.models import list_models, make_model
from dflbench.plots import Panel, panels_plot
from dflbench.provenance import code_provenance
from dflbench.registry import option
from dflbench.runtime.backend import check_runtime
from dflbench.topology import topology_from_spec

from .config import recorded_config
from .records import MethodRun

TEXT_DATASETS = ("imdb",)
CHECKPOINTS = "checkpoints"        # OUT/checkpoints/METHOD.pt: the running methods' checkpoints


# numeric fields -> (the option as the user gives it, the interval it must lie in); None is allowed where the field is
# optional (`dflbench.errors.check_numbers`)
AEDFL_NUMBERS = {
    "devices": ("--devices", "[2, inf)"), "alpha": ("--alpha", "(0, inf)"), "target_acc": ("--target-acc", "(0, 1]"),
    "time_budget": ("--time-budget", "(0, inf)"), "max_updates": ("--max-updates", "[1, inf)"),
    "batch_size": ("--batch-size", "[1, inf)"), "local_steps": ("--local-steps", "[1, inf)"),
    "lr": ("--lr", "(0, inf)"), "slot_width": ("--slot-width", "[0, inf)"),
    "eval_interval": ("--eval-interval", "(0, inf)"), "eval_samples": ("--eval-samples", "[1, inf)"),
    "train_samples": ("--train-samples", "[1, inf)"), "heterogeneity": ("--heterogeneity", "[0, inf)"),
    "time_per_sample": ("time_per_sample", "(0, inf)"), "bandwidth": ("bandwidth", "(0, inf)"),
    "latency": ("latency", "[0, inf)"), "fault_prob": ("--fault-prob", "[0, 1)"), "downtime": ("downtime", "(0, inf)"),
    "max_len": ("max_len", "[1, inf)"), "vocab_size": ("vocab_size", "[2, inf)"), "seed": ("--seed", "[0, inf)"),
    "peer_timeout": ("--peer-timeout", "[1, inf)"), "checkpoint_every": ("--checkpoint-every", "[0, inf)"),
}
# fields that decide how a run is carried out, not what it computes: never compared between runs or checkpoints
RUN_ONLY = ("methods", "peer_timeout", "checkpoint_every")


@dataclass(frozen=True)
class AEDFLRunConfig:
    """One AEDFL experiment (Sec. 6.1); the defaults are a small setting (16 devices, every method given the same 30
    virtual seconds, local updates of 5 SGD steps, a few minutes on a CPU) in which AEDFL and its baselines leave
    chance. Methods stop on the virtual-time budget (docs/EVALUATION.md: equal virtual time); `max_updates` (T local
    updates per device) stays available as a cap. `corrupt`: harmful
    neighbours (`FaultConfig`, mode `corrupt_mode`). `method_options`: per-method options, {method: {option:
    value}} (see `dflbench aedfl --list-methods`), for methods among `methods`; options left out keep their
    defaults."""

    model: str = option("lenet5", f"One of {', '.join(list_models())}.")
    dataset: str = option("fashion-mnist", "Dataset name (imdb for textcnn), npz:PATH, folder:PATH.")
    data_dir: str | None = option(None, "Where the dataset lives.")
    download: bool = option(False, "Allow torchvision / IMDB downloads.")
    devices: int = option(16, "Number of devices.")
    topology: str = option("exponential", "Topology name or adjacency:PATH (exponential: the AEDFL paper's graph).")
    methods: tuple[str, ...] = option(("aedfl", "fedavg", "ad-psgd"), f"Comma list of: {', '.join(list_methods())}.")
    alpha: float = option(0.5, "Dirichlet concentration of the label split.")
    target_acc: float = option(0.8, "Target accuracy of the Time column.")
    time_budget: float | None = option(30.0, "Virtual-time budget (s), the same for every method (0: none, stop on "
                                             "--max-updates).")
    max_updates: int | None = option(None, "T: a cap of local updates per device (each alive device does at most "
                                           "T; 0: no cap).")
    batch_size: int = option(32, "Samples per local SGD step.")
    local_steps: int = option(5, "SGD steps per local update.")
    lr: float = option(0.05, "Learning rate of the local SGD steps.")
    slot_width: float | None = option(0.01, "Virtual seconds batched together (0: only simultaneous events; -1: "
                                            "exact mode).")
    eval_interval: float = option(1.0, "Virtual seconds between evaluations.")
    eval_samples: int | None = option(1000, "Test samples per evaluation.")
    train_samples: int | None = option(None, "Use a random subset of the training set.")
    profiles: str | None = option(None, "Device profiles CSV/TOML (else sampled).")
    heterogeneity: float = option(0.5, "Log-normal sigma of sampled profiles.")
    time_per_sample: float = option(1e-3, "Median compute time per training sample (s) of sampled profiles.")
    bandwidth: float = option(1e7, "Median link bandwidth (bytes/s) of sampled profiles.")
    latency: float = option(0.01, "Median message latency (s) of sampled profiles.")
    fault_prob: float = option(0.0, "Failure probability after a local update.")
    downtime: float = option(1.0, "Virtual seconds a failed device stays down.")
    corrupt: tuple[int, ...] = option((), "Harmful devices, a comma list of ids (e.g. 3,11).")
    corrupt_mode: str = option("noise", "noise: every model they send (to a neighbour or a server, every method) "
                                        "is noise; labels: they train on flipped labels.")
    max_len: int = option(256, "Tokens kept per IMDB review.")
    vocab_size: int = option(20000, "IMDB vocabulary size.")
    seed: int = option(0, "Seed of the split, profiles, initial model and every random choice.")
    device: str = option("cpu", "cpu or cuda.")
    runtime: str = option("simulator", "simulator (virtual clock) | distributed (one device per torchrun rank, real "
                                       "time).")
    peer_timeout: float = option(10.0, "distributed: seconds without a heartbeat before a device is deemed failed "
                                       "and the run stops.")
    checkpoint_every: float = option(600.0, "simulator: wall seconds between checkpoints of a running method "
                                            "(OUT/checkpoints/METHOD.pt; a killed run continues from it with "
                                            "--resume; 0: none).")
    method_options: Mapping[str, Mapping[str, Any]] = option(doc="Per-method options, {method: {option: value}} "
                                                                 "(see --list-methods).", factory=dict)

    def __post_init__(self):
        """Every field is checked here, before any data loads; an error names the option as the user gives it."""
        unknown = [m for m in self.methods if m not in list_methods()]
        if unknown:
            raise UserError(f"--methods: unknown methods {unknown}; valid: {', '.join(list_methods())}")
        if not self.methods:
            raise UserError("--methods: give at least one method")
        check_numbers(self, AEDFL_NUMBERS)
        if self.model not in list_models():
            raise UserError(f"--model: unknown model {self.model!r}; valid: {', '.join(list_models())}")
        outside = [d for d in self.corrupt if not 0 <= d < self.devices]
        if outside or len(set(self.corrupt)) != len(self.corrupt):
            raise UserError(f"--corrupt: give distinct device ids in 0..{self.devices - 1}, got "
                            f"{','.join(map(str, self.corrupt))}")
        with for_option("--corrupt-mode"):
            self.faults()
        with for_option("--runtime"):
            check_runtime(self.runtime)
        self.graph()
        if self.max_updates is None and self.time_budget is None:
            raise UserError("the run has no end: give --time-budget SECONDS or --max-updates T (0 turns each off)")
        if self.train_samples is not None and self.train_samples < self.devices:
            raise UserError(f"--train-samples {self.train_samples} leaves devices without data: give at least one "
                            f"sample per device (--devices {self.devices})")
        typed = {}
        for name, given in self.method_options.items():  # a recipe may carry options for methods --set leaves out
            if name not in list_methods():
                raise UserError(f"--method-opt: options are given for {name!r}, which is not a method; valid: "
                                f"{', '.join(list_methods())}")
            with for_option("--method-opt"):
                options = self.options(name)                         # unknown options, bad values
            typed[name] = {key: getattr(options, key) for key in given}
        object.__setattr__(self, "method_options", typed)    # --set's text as the options' types: a typed record

    def graph(self):
        """The communication graph of `topology` on `devices` (seeded by `seed` where the generator draws); a bad
        spec is a UserError naming --topology."""
        with for_option("--topology"):
            return topology_from_spec(self.topology, self.devices, self.seed)

    def faults(self) -> FaultConfig:
        """The simulated faults of this run: failures (`fault_prob`, `downtime`) and harmful devices."""
        return FaultConfig(prob=self.fault_prob, downtime=self.downtime, corrupt=self.corrupt,
                           corrupt_mode=self.corrupt_mode)

    def async_config(self) -> AsyncConfig:
        """The simulator's settings of this run."""
        return AsyncConfig(batch_size=self.batch_size, local_steps=self.local_steps, lr=self.lr,
                           slot_width=self.slot_width, max_updates=self.max_updates, time_budget=self.time_budget,
                           eval_interval=self.eval_interval, eval_samples=self.eval_samples, seed=self.seed,
                           device=self.device)

    def options(self, name: str):
        """The options instance of method `name` in this run (`method_options` over the defaults)."""
        return method_options(name, self.method_options.get(name))


def load_device_data(cfg: AEDFLRunConfig) -> tuple[DeviceData, dict]:
    """The dataset split by `dirichlet:alpha` over the devices, plus the model's input description."""
    if cfg.dataset in TEXT_DATASETS:
        from dflbench.data import default_data_dir

        text = load_imdb(cfg.data_dir or default_data_dir(), max_len=cfg.max_len, vocab_size=cfg.vocab_size,
                         download=cfg.download)
        x, y, x_test, y_test, classes = text.x_train, text.y_train, text.x_test, text.y_test, text.classes
        shape = {"vocab_size": text.vocab_size}
    else:
        img = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
        x, y, x_test, y_test, classes = img.x_train, img.y_train, img.x_test, img.y_test, img.classes
        shape = {"in_channels": img.channels, "image_size": img.image_size[0]}
    keep = random_subset(len(y), cfg.train_samples, cfg.seed)
    if keep is not None:
        x, y = x[keep], y[keep]
    parts = partition(y.numpy(), cfg.devices, f"dirichlet:{cfg.alpha}", seed=cfg.seed, num_classes=len(classes))
    test_perm = torch.randperm(len(y_test), generator=torch.Generator().manual_seed(cfg.seed + 1))
    data = DeviceData.from_indices(x, y, parts.indices, x_test[test_perm], y_test[test_perm], device=cfg.device)
    return data, {"num_classes": len(classes), **shape, "train_samples": int(len(y)), "test_samples": int(len(y_test))}


def build_model(cfg: AEDFLRunConfig, info: dict) -> torch.nn.Module:
    if cfg.dataset in TEXT_DATASETS:
        return make_model(cfg.model, info["num_classes"], vocab_size=info["vocab_size"], dropout=0.0)
    return make_model(cfg.model, info["num_classes"], info["in_channels"], info["image_size"])


def config_differences(cfg: AEDFLRunConfig, previous: dict) -> list[str]:
    """The config fields, other than `RUN_ONLY` (the methods, when a distributed run gives up, how often a run
    checkpoints), in which `previous` (a results.json) differs from `cfg`, sorted."""
    return differing_fields(asdict(cfg), recorded_config(AEDFLRunConfig, previous.get("config", {})), RUN_ONLY)


def option_differences(cfg: AEDFLRunConfig, run: Mapping) -> list[str]:
    """The options in which a recorded `run` of a method differs from the options `cfg` gives that method (its
    `method_options` over today's defaults), as 'OPTION (recorded R, now N)'. An option added to the method since
    the run was recorded reads as its default (it held it in every run before it existed); a run recorded without
    options (before runs recorded them) has none to compare."""
    if run.get("options") is None:
        return []
    now = as_json(cfg.options(run["method"]))                  # as the run's record stores them
    recorded = {**as_json(method_options(run["method"])), **run["options"]}
    return [f"{k} (recorded {recorded.get(k)!r}, now {now.get(k)!r})" for k in sorted(recorded.keys() | now.keys())
            if recorded.get(k) != now.get(k)]


def finished_runs(cfg: AEDFLRunConfig, previous: dict | None, where: str = "the results to resume from") -> dict[
        str, dict]:
    """Every finished run of `previous` (a results.json; not a `partial` one, which stopped early) by method, when
    every config field but `methods` equals `cfg`'s:
    `run_aedfl` keeps those among `cfg.methods` (`dflbench.io.keep_earlier_runs` the others). A `previous` of
    another experiment is refused, naming the fields that differ, and so is a finished run of one of `cfg.methods`
    that ran with other method options than `cfg` gives it (`option_differences`: a default changed since, e.g.
    AEDFL's pruning cap), so a resume never mixes two settings in one table. `where` names `previous` in the
    errors."""
    if previous is None:
        return {}
    differ = config_differences(cfg, previous)
    if differ:
        raise UserError(f"{where} are of another configuration (differs in {', '.join(differ)}); "
                        "use another output folder or run without resuming")
    runs = {r["method"]: r for r in previous["runs"] if not r.get("partial")}
    other = {m: option_differences(cfg, runs[m]) for m in cfg.methods if m in runs}
    other = {m: d for m, d in other.items() if d}
    if other:
        listed = "; ".join(f"{m}: {', '.join(d)}" for m, d in other.items())
        raise UserError(f"{where} hold finished runs with other method options than this run gives them ({listed}): "
                        "a default changed since they ran, or the method options differ. Use another output "
                        "folder, or move those runs out of this one, to run them with today's options")
    return runs


def read_results(out: str | Path) -> dict | None:
    """`out`/results.json if an earlier run wrote one (the input of a resume), else None; a damaged or foreign
    file is a UserError naming it (`dflbench.io.read_results_file`)."""
    return read_results_file(out, "method")


def run_aedfl(cfg: AEDFLRunConfig, on_method_done: Callable[[dict, dict], None] | None = None,
              previous: dict | None = None,
              on_progress: Callable[[str, float, dict | None], None] | None = None,
              checkpoints: Path | None = None) -> dict:
    """Run every method of `cfg` on the same data, partition, profiles and initial model; returns the results.
    `on_method_done(run, results)` is called as each method finishes, with the results so far (the CLI writes them
    then, so a method that fails later cannot lose the ones before it). `previous`: an earlier results.json of this
    configuration whose finished methods are kept, not run again (`finished_runs`). `on_progress(method, fraction,
    latest)`: how far the running method is (`AsyncSimulator.fraction_done`) and its newest evaluation (a history
    record, None before the first), at its start (0.0, None), then about twice a wall second. `checkpoints`: a
    folder where each running method checkpoints every `cfg.checkpoint_every` wall seconds (`method_checkpoint`):
    a method whose checkpoint is there continues from it, and its checkpoint is removed once `on_method_done`
    has returned (the run is stored)."""
    done = finished_runs(cfg, previous)
    data, info = load_device_data(cfg)
    topo = cfg.graph()
    profiles = load_profiles(cfg.profiles, cfg.devices) if cfg.profiles else sample_profiles(
        cfg.devices, cfg.seed, cfg.time_per_sample, cfg.bandwidth, cfg.latency, cfg.heterogeneity)
    sim_cfg = cfg.async_config()
    faults = cfg.faults()
    results = {"config": asdict(cfg), "data": info, "code": code_provenance(), "runs": []}
    eval_n = evaluated_samples(results)
    for name in cfg.methods:
        if name in done:
            results["runs"].append(done[name])
            if on_method_done is not None:
                on_method_done(done[name], results)
            continue
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, info)
        options = cfg.options(name)
        sim = AsyncSimulator(model, data, topo, profiles, make_method(name, options), sim_cfg, faults=faults)
        if on_progress is not None:
            on_progress(name, 0.0, None)
        checkpoint = method_checkpoint(cfg, checkpoints, name, results["code"])
        res = sim.run(None if on_progress is None else
                      (lambda f, n=name, s=sim: on_progress(n, f, s.result.history[-1] if s.result.history else None)),
                      checkpoint=checkpoint)
        last = res.history[-1]
        record = MethodRun(
            name, res.accuracy, last["consensus_accuracy"], res.time_to(cfg.target_acc),
            res.time_to(cfg.target_acc, "consensus_accuracy"),
            {key: convergence(res.history, key) for key in ("accuracy", "consensus_accuracy")}, res.device_accuracy,
            sim.method.mflops(sim), res.bytes_sent, res.virtual_time, eval_n, res.wall_time, res.device_steps,
            res.device_steps / max(res.wall_time, 1e-9), sim.messages, sim.dropped, res.stop_reason,
            last["consensus"], last["mask_disagreement"], asdict(options), res.history)
        if cfg.corrupt and len(res.device_accuracy) == cfg.devices:   # decentralized: score honest devices apart
            honest = [a for d, a in enumerate(res.device_accuracy) if d not in cfg.corrupt]
            record.honest_accuracy = sum(honest) / len(honest)
        if hasattr(sim.method, "diagnostics"):
            record.diagnostics = sim.method.diagnostics
        if hasattr(sim.method, "personalized_accuracy"):
            record.personalized_accuracy = float(sim.method.personalized_accuracy(sim).mean())
        record.code = results["code"]
        run = record.to_dict()
        results["runs"].append(run)
        if on_method_done is not None:
            on_method_done(run, results)
        if checkpoint is not None:
            checkpoint.clear()
    return results


def method_checkpoint(cfg: AEDFLRunConfig, folder: Path | None, method: str, code: dict) -> Checkpoint | None:
    """Method `method`'s checkpoint in `folder` (FOLDER/METHOD.pt, every `cfg.checkpoint_every` wall seconds),
    fingerprinted by the configuration (all but `RUN_ONLY`), the method's options and the code (`meta_of`); None
    without a folder or with `checkpoint_every` 0."""
    if folder is None or not cfg.checkpoint_every:
        return None
    config = {k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY}
    return Checkpoint(Path(folder) / f"{method}.pt", meta_of(config, method, asdict(cfg.options(method)), code),
                      cfg.checkpoint_every)


def evaluated_samples(results: dict) -> int:
    """The number of test samples every accuracy of `results` is measured on (the first `eval_samples` of the
    shuffled test set, all of it when None)."""
    n, total = results["config"]["eval_samples"], results["data"]["test_samples"]
    return total if n is None else min(n, total)


def run_aedfl_into(cfg: AEDFLRunConfig, out: str | Path, previous: dict | None = None, resume: bool = True,
                   on_method_done: Callable[[dict, dict], None] | None = None,
                   on_progress: Callable[[str, float, dict | None], None] | None = None) -> tuple[dict, dict]:
    """`run_aedfl` writing `out` as each method finishes: the results so far (results.json, results.csv; the
    methods of `previous`, an earlier results.json of `out`, that this run does not hold stay in them,
    `keep_earlier_runs`) go to disk before the next method starts, and with the pictures at the end. `resume`: keep
    `previous`'s finished methods of this configuration instead of running them again, and continue each method
    whose checkpoint is in OUT/checkpoints from it (`run_aedfl`'s `checkpoints`; without `resume` those of the
    methods to run are removed first). `on_method_done(run, results)` runs first for each method that ran (it may
    raise to stop the run: what is written stays). Returns (the results written, `write_results`'s paths). Used by
    `dflbench aedfl`, `run` and `reproduce`."""
    kept = finished_runs(cfg, previous) if resume else {}
    checkpoints = Path(out) / CHECKPOINTS
    if not resume:
        for name in cfg.methods:
            (checkpoints / f"{name}.pt").unlink(missing_ok=True)

    def done(run: dict, so_far: dict) -> None:
        if run is kept.get(run["method"]):
            return
        if on_method_done is not None:
            on_method_done(run, so_far)
        write_results(keep_earlier_runs(so_far, previous, "method", "methods"), out, pictures=False)

    results = run_aedfl(cfg, on_method_done=done, previous=previous if resume else None, on_progress=on_progress,
                        checkpoints=checkpoints)
    written = keep_earlier_runs(results, previous, "method", "methods")
    return written, write_results(written, out)


def check_finished(cfg: AEDFLRunConfig, folder: Path) -> None:
    """A seed `folder` that `reproduce` finds done for `cfg`: UserError when one of `cfg.methods` finished there
    with other method options than `cfg` gives it (`finished_runs`), so a finished seed is never reported as
    today's setting when a default changed since it ran."""
    finished_runs(cfg, read_results(folder), f"{folder}/results.json")


def run_seed(cfg: AEDFLRunConfig, folder: Path, on_run_done: Callable[[dict], None] | None = None,
             on_progress: Callable[[str, float, dict | None], None] | None = None) -> None:
    """One seed of a reproduction (`recipes.config.Experiment.run_seed`): `run_aedfl_into` `folder`, keeping the
    methods its results.json already holds."""
    run_aedfl_into(cfg, folder, read_results(folder), on_progress=on_progress,
                   on_method_done=None if on_run_done is None else (lambda run, _: on_run_done(run)))


def write_results(results: dict, out: str | Path, pictures: bool = True) -> dict[str, Path]:
    """results.json and results.csv (one row per method, without its history and options) under `out`, then (with
    `pictures`) accuracy_vs_time.png and diagnostics.png; a failing picture is one warning line on stderr and leaves
    the two results files (no "png" key)."""
    cfg = results["config"]
    out = Path(out)
    paths = {"json": atomic_write_json(out / "results.json", results)}
    rows = [{**{k: v for k, v in r.items() if k not in ("history", "options", "diagnostics", "convergence",
                                                        "device_accuracy")},
             **{f"{key}_{label}": c[field] for key, c in r.get("convergence", {}).items() if c is not None
                for field, label in (("converged", "converged"), ("accuracy", "plateau"))}} for r in results["runs"]]
    paths["csv"] = atomic_write_csv(out / "results.csv", rows)
    if not pictures:
        return paths

    def curves(key):
        return {r["method"]: ([h["time"] for h in r["history"]], [h[key] for h in r["history"]])
                for r in results["runs"] if all(h.get(key) is not None for h in r["history"])}

    title = (f"{cfg['model']} on {cfg['dataset']}, {cfg['devices']} devices, accuracy on "
             f"{evaluated_samples(results)} test samples")
    accuracy = [Panel("accuracy of the consensus model", curves("consensus_accuracy"), hline=cfg["target_acc"],
                      title="consensus model (server methods: the global model)"),
                Panel("mean accuracy of the device models", curves("accuracy"), hline=cfg["target_acc"],
                      title="device models, mean")]
    pictures = {"png": lambda: panels_plot(out / "accuracy_vs_time.png", [p for p in accuracy if p.curves],
                                           "virtual time (s)", title)}
    panels = diagnostics_panels(results["runs"])
    if panels:
        pictures["diagnostics_png"] = lambda: panels_plot(out / "diagnostics.png", panels, "virtual time (s)",
                                                          f"AEDFL modules: {title}")
    for key, draw in pictures.items():
        try:
            paths[key] = draw()
        except Exception as exc:  # noqa: BLE001 - a picture must never lose the results written above
            what = "accuracy" if key == "png" else "diagnostics"
            print(f"warning: the {what} figure failed ({type(exc).__name__}: {exc}); {paths['json']} is complete",
                  file=sys.stderr)
    return paths


def diagnostics_panels(runs: list[dict]) -> list[Panel]:
    """Selection probability per slot kind, lambda, pruning rate and MFLOPs over virtual time (mean over devices,
    shaded min..max) for the runs that carry `diagnostics` (`dflbench.methods.aedfl.diagnostics`)."""
    selection, lam, rate = Panel("P(select)", {}, "selection probability by cached-model kind"), \
        Panel("lambda", {}, "dynamic-weight control parameter lambda_ij"), \
        Panel("pruning rate p_i", {}, "pruning rate (eq. 5.16)")
    mfp = Panel("MFLOPs per sample", {}, "MFLOPs of the pruned structure")
    for r in runs:
        d = r.get("diagnostics")
        if not d or not d["time"]:
            continue
        xs, name = d["time"], r["method"]
        for kind, style in zip(BUCKETS, ("-", "--", ":")):
            selection.curves[f"{name} {kind}"] = (xs, d["selection_by_bucket"][kind])
            selection.styles[f"{name} {kind}"] = style
        for panel, key in ((lam, "lambda"), (rate, "pruning_rate"), (mfp, "mflops")):
            if d.get(key):
                s = summary(d[key])
                panel.curves[name] = (xs, s["mean"])
                panel.bands[name] = (xs, s["min"], s["max"])
    return [p for p in (selection, lam, rate, mfp) if p.curves]
