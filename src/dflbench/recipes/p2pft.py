"""P2P-FT end to end (paper Sec. IV): data -> class-disjoint split -> frozen prefix + n stacked tails ->
Local-FT / P2P-FT (push-pull, Algorithm 1) / DGD / GT-DGD / centralized -> Table I-style results.

    results = run_p2pft(P2PFTConfig(dataset="digits", epochs=20), out_dir="runs/x")

Every algorithm starts from the same model (same seed, same frozen prefix, same initial tail), trains on the
same cached features, and is evaluated per node on the full test set. An epoch is ceil(largest node / batch)
steps for every node (smaller nodes wrap around their own data). `central` is ONE model trained on the union of
all nodes' data with batch nodes x batch_size, so every node column shows that single model; by default
(`central_steps="match"`) it takes the decentralized runs' steps per epoch, so both make the same number of
gradient steps on the same number of samples; `"epoch"` makes one pass over the union instead (fewer steps when
nodes are unequal).

Each run records the mixing matrices it used (`matrices`: W, or push-pull's A and B) beside the graph's
`topology.weights`. Results (results.json, results.csv) are written as soon as training ends; pictures come after
(an accuracy-vs-epoch PNG, and with `attention` Fig. 2's maps) and a failing picture is reported in results.json,
never losing the results.
"""

from __future__ import annotations

import copy
import hashlib
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dflbench.data import BatchTransform, load_dataset, parse_split, partition, random_subset
from dflbench.engines import SyncConfig, SyncResult, SyncSimulator, TailInputs
from dflbench.errors import UserError, check_numbers, for_option, user_input
from dflbench.io import (
    atomic_write_csv,
    atomic_write_json,
    differing_fields,
    keep_earlier_runs,
    read_results_file,
    read_tensors,
)
from dflbench.mixing import NonFiniteError, from_topology, make_algorithm
from dflbench.plots import line_plot
from dflbench.registry import Registry, option
from dflbench.runtime.backend import check_runtime, resolve_device
from dflbench.topology import topology_from_spec
from dflbench.vision import architecture_of, check_model_name, create_model, parse_policy, split_for_cache

from .config import recorded_config

# CLI name -> a dflbench.mixing algorithm (`mixing`: its name; None: ONE centralized model trained on the union of
# the nodes' data) and the label of plots.
ALGORITHMS = Registry("algorithm", metadata=("mixing", "label"), context=("lr", "momentum", "topology"))


@ALGORITHMS.register("local", mixing="local", label="Local-FT")
def _local(lr: float, momentum: float, topology):
    """Plain SGD per node (`central` uses it too, on one model)."""
    return make_algorithm("local", lr, momentum=momentum)


def _register_mixing(name: str, mixing: str, label: str) -> None:
    @ALGORITHMS.register(name, mixing=mixing, label=label)
    def build(lr: float, momentum: float, topology):
        return from_topology(mixing, topology, lr, momentum=momentum)


# The baselines run on the --topology graph with its own row-stochastic weights (dflbench.mixing.from_topology), so
# off weight-balanced graphs DGD and GT-DGD converge to a Perron-weighted, biased point: the paper's contrast with
# push-pull. Defaults: `dgd` is adapt-then-combine with each node's own gradient (the paper's reading of eq. 1,
# "a local gradient descent update"; eq. 1 as printed costs in-degree + 1 gradients per node and step), `gt-dgd`
# is Qu & Li's form (eq. 2 as printed); the other forms are named variants.
_register_mixing("p2pft", "pushpull", "P2P-FT")
_register_mixing("dgd", "dgd", "DGD")
_register_mixing("gt-dgd", "gtdgd", "GT-DGD")


ALGORITHMS.register("central", mixing=None, label="Centralized")(_local)

_register_mixing("dgd-cta", "dpsgd", "DGD (CTA)")
_register_mixing("dgd-eq1", "dgd_eq1", "DGD (eq. 1)")
_register_mixing("gt-dgd-atc", "gtdgd_atc", "GT-DGD (ATC)")


def list_p2pft_algorithms() -> list[str]:
    return ALGORITHMS.list()


def label(name: str) -> str:
    """The algorithm's name in tables and plots (Local-FT, P2P-FT, ...)."""
    return ALGORITHMS.get(name).metadata["label"]


def single_model(name: str) -> bool:
    """True for `central`: one model on the union of the nodes' data, not one per node."""
    return ALGORITHMS.get(name).metadata["mixing"] is None


def parse_algorithms(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'local,p2pft,central' -> ('local', 'p2pft', 'central'); UserError naming the valid choices."""
    names = tuple(a.strip() for a in (spec.split(",") if isinstance(spec, str) else spec) if a.strip())
    bad = [a for a in names if a not in ALGORITHMS]
    if bad or not names:
        raise UserError(f"--algorithms: unknown algorithm(s) {', '.join(bad) or '(none given)'}; valid: "
                        f"{', '.join(ALGORITHMS)}")
    if len(set(names)) != len(names):
        raise UserError(f"--algorithms: {','.join(names)} repeats a name")
    return names


# "auto": last-layer CLS attention for ViT / DeiT (the layer fine-tuning changes), Grad-CAM for Swin (no CLS token)
ATTENTION_METHODS = ("auto", "cls", "rollout", "gradcam", "integrated_gradients")
CENTRAL_STEPS = ("match", "epoch")
RANDOM_BACKBONE = ("the backbone is randomly initialised (no --pretrained or --checkpoint): fine-tuning its last "
                   "block says little about P2P-FT; see `dflbench pretrain`")


# numeric fields -> (the option as the user gives it, the interval it must lie in; `dflbench.errors.check_numbers`)
P2PFT_NUMBERS = {
    "nodes": ("--nodes", "[1, inf)"), "epochs": ("--epochs", "[1, inf)"), "lr": ("--lr", "(0, inf)"),
    "momentum": ("--momentum", "[0, 1)"), "batch_size": ("--batch-size", "[1, inf)"), "seed": ("--seed", "[0, inf)"),
    "image_size": ("--image-size", "[1, inf)"), "train_samples": ("--train-samples", "[1, inf)"),
    "attention": ("--attention", "[0, inf)"),
}


@dataclass(frozen=True)
class P2PFTConfig:
    """One P2P-FT experiment. Paper defaults (Sec. IV): 4 nodes, directed strongly connected graph, lr 1e-3,
    100 epochs, `last_block` policy, class-disjoint split (Table II). `train_samples` keeps a random subset of the
    training set (the `cpu` scales): drawn once with seed 0, not per seed, so that every seed fine-tunes on the same
    images and stacked seeds share one feature cache (seeds vary the initial head, the sampling and a seeded graph).
    `batch_seeds` only chooses how several seeds run (`run_p2pft_seeds`), never what they compute."""

    model: str = option("vit_small_patch16_224", "timm model name.")
    dataset: str = option("digits", "Dataset name, npz:PATH or folder:PATH.")
    train_samples: int | None = option(None, "Fine-tune on a random subset of the training set (the same for every "
                                             "seed).")
    nodes: int = option(4, "Number of nodes.")
    topology: str = option("hub_ring", "Topology name or adjacency:PATH (hub_ring: directed, A != B).")
    split: str = option("classes", "classes[:ROW] | dirichlet:ALPHA | iid | shards:K.")
    algorithms: tuple[str, ...] = option(("local", "p2pft", "central"),
                                         f"Comma list of: {', '.join(ALGORITHMS.list())}.")
    epochs: int = option(100, "Training epochs.")
    lr: float = option(1e-3, "Learning rate of every node.")
    momentum: float = option(0.0, "Heavy-ball momentum on every node's direction.")
    batch_size: int = option(32, "Per-node batch size (central: nodes x this).")
    device: str = option("auto", "auto | cpu | cuda.")
    seed: int = option(0, "Seed of the initial tail, the batches and a seeded graph.")
    policy: str = option("last_block", "Freezing policy.")
    checkpoint: str | None = option(None, "Backbone state dict (dflbench pretrain).")
    pretrained: bool = option(False, "timm pretrained weights (needs the network).")
    model_kwargs: tuple[tuple[str, Any], ...] = option((), "timm kwargs, e.g. img_size=32,patch_size=4.")
    data_dir: str | None = option(None, "Dataset root folder.")
    download: bool = option(False, "Allow torchvision downloads.")
    image_size: int = option(224, "Load size for datasets with varying image sizes.")
    cache: bool = option(True, "Train on the frozen prefix's cached features (--no-cache: recompute the prefix every "
                               "batch).")
    attention: int = option(0, "Write Fig. 2 attention maps for N test images.")
    attention_method: str = option("auto", "auto (cls for ViT/DeiT, gradcam for Swin) | cls | rollout | gradcam | "
                                           "integrated_gradients.")
    attention_node: int = option(1, "Node (from 1) whose unseen classes Fig. 2 shows.")
    central_steps: str = option("match", "match (central takes the nodes' steps per epoch) | epoch (one pass over "
                                         "the union per epoch).")
    runtime: str = option("simulator", "simulator (one process) | distributed (one rank per node group, torchrun).")
    batch_seeds: bool | None = option(None, "Several seeds: stacked where possible (none) / always (true) / never "
                                            "(false); never changes what they compute.")

    def __post_init__(self):
        """Every field is checked here, before any data loads; an error names the option as the user gives it."""
        parse_algorithms(self.algorithms)
        check_numbers(self, P2PFT_NUMBERS)
        mixing = [a for a in self.algorithms if ALGORITHMS.get(a).metadata["mixing"] not in (None, "local")]
        if mixing and self.nodes < 2:
            raise UserError(f"--nodes {self.nodes}: {', '.join(mixing)} exchange{'s' if len(mixing) == 1 else ''} "
                            "models over a graph of nodes; "
                            "give --nodes 2 or more (or only --algorithms local,central)")
        with for_option("--split"):
            parse_split(self.split)
        with for_option("--model"):
            check_model_name(self.model)
        with for_option("--runtime"):
            check_runtime(self.runtime)
        if mixing:
            self.graph()
        if self.checkpoint is not None and self.pretrained:
            raise UserError("give either --checkpoint or --pretrained, not both")
        if self.attention_method not in ATTENTION_METHODS:
            raise UserError(f"--attention-method: unknown attention method {self.attention_method!r}; valid: "
                            f"{', '.join(ATTENTION_METHODS)}")
        if not 1 <= self.attention_node <= self.nodes:
            raise UserError(f"--attention-node must be in 1..{self.nodes} (nodes are numbered from 1), got "
                            f"{self.attention_node}")
        if self.central_steps not in CENTRAL_STEPS:
            raise UserError(f"--central-steps must be one of {', '.join(CENTRAL_STEPS)}, got {self.central_steps!r}")
        with user_input("--lr/--momentum"):  # mixing's own check of both, before any data is loaded
            make_algorithm("local", self.lr, momentum=self.momentum)
        with user_input("--policy"):
            parse_policy(self.policy)

    def graph(self):
        """The communication graph of `topology` on `nodes` (seeded by `seed` where the generator draws); a bad spec
        is a UserError naming --topology."""
        with for_option("--topology"):
            return topology_from_spec(self.topology, self.nodes, self.seed)

    @property
    def backbone(self) -> str:
        """'pretrained' (timm weights), 'checkpoint' (a local file) or 'random' (nothing loaded)."""
        return "pretrained" if self.pretrained else "checkpoint" if self.checkpoint else "random"


@dataclass
class P2PFTRun:
    """What run_p2pft returns: the JSON-ready results plus the live objects (for attention maps, tests)."""

    results: dict
    sim_results: dict[str, SyncResult] = field(default_factory=dict)


@dataclass(frozen=True)
class P2PFTRuntime:
    """Where `run_p2pft` runs the nodes. The default: all of them in this process (`SyncSimulator`).
    `dflbench.recipes.p2pft_distributed` passes `DistributedSyncSimulator` with its rank's device and role."""

    simulator: Callable[..., SyncSimulator] = SyncSimulator  # (tail, inputs, nodes, algorithm, config, name=)
    device: str | None = None  # None: resolve_device(cfg.device)
    lead: bool = True  # this process shows the feature-cache progress, writes the results and returns them
    info: dict | None = None  # stored as results["runtime"] when given


def _build_model(cfg: P2PFTConfig, num_classes: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        with user_input("--model/--model-kwargs/--checkpoint", ValueError, TypeError):
            return create_model(cfg.model, num_classes, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint,
                                **dict(cfg.model_kwargs)).eval()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_context(cfg: P2PFTConfig, topology) -> dict:
    """What in `cfg` shapes a trajectory beyond the simulator's own fingerprint (algorithm, nodes, batch, seed,
    lr, momentum, node sizes, shapes): stored in every checkpoint, so `--resume` refuses another run's files."""
    return {"model": cfg.model, "model_kwargs": [list(kv) for kv in cfg.model_kwargs], "backbone": cfg.backbone,
            "checkpoint_sha256": _sha256(cfg.checkpoint) if cfg.checkpoint else None, "dataset": cfg.dataset,
            "image_size": cfg.image_size, "split": cfg.split, "topology": cfg.topology,
            "topology_sha256": None if topology is None else
            hashlib.sha256(topology.weights.numpy().tobytes()).hexdigest(),
            "policy": cfg.policy, "cache": cfg.cache, "central_steps": cfg.central_steps}


@dataclass
class _Seed:
    """One seed's experiment before training: its graph, algorithms, split, model, cached inputs, context."""

    cfg: P2PFTConfig
    out: Path
    topology: Any
    algorithms: dict
    part: Any
    model: torch.nn.Module
    transform: BatchTransform
    tail: torch.nn.Module
    inputs: TailInputs
    init: dict
    context: dict


def _prepare(cfg: P2PFTConfig, out: Path, device: str, data, runtime: P2PFTRuntime, progress: bool | None,
             earlier: list[_Seed]) -> _Seed:
    """Build one seed's run; its feature cache is an earlier seed's when their frozen prefixes are equal (a
    pretrained or checkpoint backbone), so the prefix runs once for all seeds."""
    needs_graph = any(ALGORITHMS.get(a).metadata["mixing"] not in (None, "local") for a in cfg.algorithms)
    topology = cfg.graph() if needs_graph else None
    with user_input("--algorithms"):  # every algorithm (and its matrices) is checked before any of them trains
        algorithms = {name: ALGORITHMS.make(name, None, lr=cfg.lr, momentum=cfg.momentum, topology=topology)
                      for name in cfg.algorithms}
    part = partition(data.y_train.numpy(), cfg.nodes, cfg.split, cfg.seed, dataset=cfg.dataset,
                     num_classes=data.num_classes)
    model = _build_model(cfg, data.num_classes)
    transform = BatchTransform.from_model(model)
    with user_input("--policy"):
        prefix, tail = split_for_cache(model, cfg.policy)
    sync = SyncConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, cache=cfg.cache, device=device)
    inputs = next((e.inputs for e in earlier if _same_module(e.inputs.pre.prefix, prefix)), None)
    if inputs is None:
        inputs = TailInputs(prefix, transform, data, sync, progress=progress if runtime.lead else False)
    return _Seed(cfg, out, topology, algorithms, part, model, transform, tail, inputs,
                 copy.deepcopy(tail.state_dict()), run_context(cfg, topology))


def _same_module(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k].to(sb[k].device), sb[k]) for k in sa)


def _simulator(seed: _Seed, name: str, device: str, runtime: P2PFTRuntime) -> SyncSimulator:
    """Algorithm `name` of one seed, its tail reset to the seed's initial weights."""
    cfg, part = seed.cfg, seed.part
    seed.tail.load_state_dict(seed.init)
    sync = SyncConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, cache=cfg.cache, device=device)
    if single_model(name):
        node_steps = -(-max(part.sizes()) // cfg.batch_size)                      # ceil(largest node / batch)
        central = {"batch_size": cfg.batch_size * cfg.nodes,
                   "steps_per_epoch": node_steps if cfg.central_steps == "match" else None}
        nodes, run_cfg = [np.concatenate(part.indices)], SyncConfig(**{**asdict(sync), **central})
    else:
        nodes, run_cfg = list(part.indices), sync
    return runtime.simulator(seed.tail, seed.inputs, nodes, seed.algorithms[name], run_cfg, name=name)


def _train(name: str, sims: list[SyncSimulator], seeds: list[_Seed], resume: bool, progress: bool | None,
           batch: bool | None) -> tuple[list[SyncResult], list[list[int]]]:
    """Train one algorithm for every seed: stacked as one `SyncSimulator.stacked` run per group of seeds whose runs
    have the same shape (`SyncSimulator.stack_groups`), one by one when `batch` is False. Returns the results
    and, per seed, the seeds it trained with."""
    paths = [s.out / "checkpoints" / f"{name}.pt" for s in seeds]
    if resume:
        check_checkpoints(paths)
    if batch is False:
        groups, split = [[i] for i in range(len(sims))], []
    else:
        groups, split = SyncSimulator.stack_groups(sims, paths, resume)
    if batch and [f for f in split if f != "resume epoch"]:
        raise UserError(f"batch_seeds=true but the seeds' {name} runs cannot be stacked: they differ in "
                        f"{', '.join(split)} (a seeded graph, or splits of other sizes); --set batch_seeds=none "
                        "stacks what can be stacked (the default), batch_seeds=false runs the seeds one by one")
    if len(groups) > 1 and batch is not False:
        print(f"note: {name}: seeds {[[seeds[i].cfg.seed for i in g] for g in groups]} run as {len(groups)} "
              f"stacks: they differ in {', '.join(split)}", file=sys.stderr)
    results: list[SyncResult | None] = [None] * len(sims)
    with_seeds: list[list[int]] = [[] for _ in sims]
    for group in groups:
        with user_input("--lr", NonFiniteError):  # divergence: the message names the nodes and says to lower it
            if len(group) == 1:
                i = group[0]
                out = [sims[i].run(checkpoint=paths[i], resume=resume, progress=progress, context=seeds[i].context)]
            else:
                out = SyncSimulator.stacked([sims[i] for i in group]).run_parts(
                    [paths[i] for i in group], resume, progress, [seeds[i].context for i in group])
        for i, res in zip(group, out):
            results[i], with_seeds[i] = res, [seeds[j].cfg.seed for j in group]
    return results, with_seeds


# config fields that do not change what a run computes: a results.json that differs only in them is this run's
SAME_RUN = ("algorithms", "device", "cache", "batch_seeds", "attention", "attention_method", "attention_node")


def config_differences(cfg: P2PFTConfig, previous: dict) -> list[str]:
    """The config fields, less `SAME_RUN`, in which `previous` (a results.json) differs from `cfg`, sorted."""
    return differing_fields({**asdict(cfg), "model_kwargs": dict(cfg.model_kwargs)},
                            recorded_config(P2PFTConfig, previous.get("config", {})), SAME_RUN)


def read_results(out: str | Path) -> dict | None:
    """`out`/results.json if an earlier run wrote one, else None; a damaged or foreign file is a UserError naming
    it (`dflbench.io.read_results_file`)."""
    return read_results_file(out, "algorithm")


def earlier_results(cfg: P2PFTConfig, out: Path) -> dict | None:
    """The results.json a resumed run keeps the other algorithms of; one of another configuration is refused,
    naming the fields that differ."""
    previous = read_results(out)
    differ = [] if previous is None else config_differences(cfg, previous)
    if differ:
        raise UserError(f"{out / 'results.json'} holds results of another configuration (differs in "
                        f"{', '.join(differ)}); use another output folder or run without resuming")
    return previous


def check_checkpoints(paths: list[Path]) -> None:
    """Every existing checkpoint a resume would read holds tensors and plain data only (`dflbench.io.read_tensors`)
    and a SyncSimulator's keys; a damaged, foreign or unsafe file is a UserError naming it."""
    fix = "delete it to train that algorithm from the start, give another --out, or use --overwrite"
    for path in paths:
        if path.is_file():
            ckpt = read_tensors(path, "a checkpoint of an earlier run", fix)
            if not (isinstance(ckpt, dict) and {"epoch", "fingerprint", "state", "history"} <= ckpt.keys()):
                raise UserError(f"{path} (a checkpoint of an earlier run) is not a dflbench training checkpoint; {fix}")


def run_p2pft(cfg: P2PFTConfig, out_dir: str | Path, resume: bool = False, progress: bool | None = None,
              runtime: P2PFTRuntime = P2PFTRuntime()) -> P2PFTRun | None:
    """Run every algorithm of `cfg`, write `out_dir/results.json` and `results.csv`, then the pictures, and return
    the results (None in a process that is not `runtime.lead`)."""
    return run_p2pft_seeds([cfg], [out_dir], resume, progress, runtime)[0]


def run_seed(cfg: P2PFTConfig, folder: Path, on_run_done: Callable[[dict], None] | None = None,
             on_progress=None) -> None:
    """One seed of a reproduction (`recipes.config.Experiment.run_seed`): `run_p2pft` into `folder`, resuming from
    its checkpoints; `on_run_done(run)` for each algorithm (P2P-FT reports no progress within one)."""
    for r in run_p2pft(cfg, folder, resume=True).results["runs"]:
        if on_run_done is not None:
            on_run_done(r)


def run_p2pft_seeds(cfgs: list[P2PFTConfig], out_dirs: list[str | Path], resume: bool = False,
                    progress: bool | None = None, runtime: P2PFTRuntime = P2PFTRuntime(),
                    on_run_done: Callable[[int, dict], None] | None = None) -> list[P2PFTRun | None]:
    """`run_p2pft` for several seeds of one experiment (`cfgs` equal but for `seed`), `cfgs[s]` into `out_dirs[s]`.

    `batch_seeds` (of the configs) chooses how: None (the default) trains each algorithm's seeds as one stacked
    `SyncSimulator` run (seeds x nodes rows, block-diagonal mixing: exact, see `SyncSimulator`), in several
    stacks (with a note) where seeds differ in shape (a seeded graph, unequal steps per epoch, checkpoints
    at different epochs); True the same but a UserError where the seeds cannot all be stacked, or with the
    distributed runtime (one seed per launch); False runs the seeds one after another. Every seed gets
    exactly the folder, checkpoints and results its own `run_p2pft` writes, each run recording the seeds it was
    stacked with (`stacked_seeds`) and its share of their wall time; checkpoints of one mode resume in the other.
    `on_run_done(s, run)` is called after each algorithm of seed index s."""
    if len(cfgs) != len(out_dirs) or not cfgs:
        raise ValueError(f"need one output folder per config, got {len(cfgs)} configs and {len(out_dirs)} folders")
    first = replace(cfgs[0], seed=0)
    if any(replace(c, seed=0) != first for c in cfgs):
        raise ValueError("run_p2pft_seeds takes configs that differ only in their seed")
    batch = cfgs[0].batch_seeds
    if batch and runtime.simulator is not SyncSimulator:
        raise UserError("batch_seeds=true needs the simulator runtime: the distributed runtime runs one seed per "
                        "launch; drop batch_seeds")
    if runtime.simulator is not SyncSimulator:
        batch = False                                   # the default for the distributed runtime: not stacked
    if batch is False and len(cfgs) > 1:
        done = []
        for s, (c, out) in enumerate(zip(cfgs, out_dirs)):
            report = None if on_run_done is None else (lambda _, run, s=s: on_run_done(s, run))
            done += run_p2pft_seeds([c], [out], resume, progress, runtime, report)
        return done
    cfg = cfgs[0]
    earlier = [earlier_results(c, Path(out)) if resume and runtime.lead else None for c, out in zip(cfgs, out_dirs)]
    device = str(resolve_device(cfg.device)) if runtime.device is None else runtime.device
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.image_size)
    keep = random_subset(len(data.y_train), cfg.train_samples, 0)
    if keep is not None:
        data = replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])
    seeds: list[_Seed] = []
    for c, out in zip(cfgs, out_dirs):
        seeds.append(_prepare(c, Path(out), device, data, runtime, progress, seeds))
    runs: list[list[dict]] = [[] for _ in seeds]
    sims: list[dict[str, SyncResult]] = [{} for _ in seeds]
    for name in cfg.algorithms:
        sim_list = [_simulator(seed, name, device, runtime) for seed in seeds]
        results, with_seeds = _train(name, sim_list, seeds, resume, progress, batch)
        for s, (sim, res) in enumerate(zip(sim_list, results)):
            sims[s][name] = res
            accs = res.node_accuracy * cfg.nodes if len(res.node_accuracy) == 1 else res.node_accuracy
            runs[s].append({"algorithm": name, "mixing": sim.algorithm.name,
                            "matrices": {k: m.tolist() for k, m in sim.algorithm.matrices().items()},
                            "node_accuracy": accs, "mean_accuracy": float(np.mean(accs)),
                            "single_model": single_model(name), "history": res.history,
                            "wall_time_s": res.wall_time_s, "stacked_seeds": with_seeds[s],
                            "bytes_sent": int(sum(res.bytes_sent)), "bytes_sent_per_node": res.bytes_sent,
                            "steps": res.steps, "steps_per_epoch": sim.sampler.steps_per_epoch})
            if on_run_done is not None and runtime.lead:
                on_run_done(s, runs[s][-1])
    if not runtime.lead:
        return [None] * len(seeds)
    return [_finish(seed, data, device, seed_runs, seed_sims, runtime, previous) for seed, seed_runs, seed_sims,
            previous in zip(seeds, runs, sims, earlier)]


def _finish(seed: _Seed, data, device: str, runs: list[dict], sims: dict[str, SyncResult],
            runtime: P2PFTRuntime, previous: dict | None) -> P2PFTRun:
    """One seed's results.json / results.csv, then its pictures; the runs of other algorithms a resumed folder
    held (`previous`) are kept after this run's."""
    cfg, out, part, topology = seed.cfg, seed.out, seed.part, seed.topology
    results = {
        "config": {**asdict(cfg), "model_kwargs": dict(cfg.model_kwargs), "device": device,
                   "cache": seed.inputs.cached},
        "backbone": {"kind": cfg.backbone, **({"warning": RANDOM_BACKBONE} if cfg.backbone == "random" else {})},
        **({} if runtime.info is None else {"runtime": runtime.info}),
        "data": {"name": data.name, "classes": list(data.classes), "train": len(data.y_train),
                 "test": len(data.y_test), "image_size": list(data.image_size)},
        "partition": {"spec": cfg.split, "sizes": part.sizes(),
                      "class_histograms": part.histograms(data.y_train.numpy(), data.num_classes).tolist()},
        "topology": None if topology is None else {"name": topology.name, "weights": topology.weights.tolist()},
        "runs": runs,
    }
    results = keep_earlier_runs(results, previous, "algorithm", "algorithms")
    write_results(results, out)                                   # results first: a picture can never lose them
    curves = {label(r["algorithm"]): ([h["epoch"] for h in r["history"]], [h["mean_accuracy"] for h in r["history"]])
              for r in runs}
    results["figures"] = {"accuracy": _picture(out, "accuracy", lambda: {"path": str(line_plot(
        out / "accuracy.png", curves, "epoch", "mean test accuracy over nodes (%)", f"{cfg.model} on {cfg.dataset}",
        percent=True))})}
    if cfg.attention:
        results["attention"] = _picture(out, "attention", lambda: write_attention(
            out / "attention.png", seed.model, seed.tail, seed.transform, data, part, sims, cfg, device))
    write_results(results, out)
    return P2PFTRun(results, sims)


def _picture(out: Path, what: str, draw: Callable[[], dict]) -> dict:
    """Draw a figure after the results are on disk; a failure is one warning line on stderr and recorded as
    {"error": ...} in results.json instead of ending the run."""
    try:
        return draw()
    except Exception as exc:  # noqa: BLE001 - any failure of a picture must leave the results
        print(f"warning: the {what} figure failed ({type(exc).__name__}: {exc}); the results in {out} are complete",
              file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}


def unseen_test_images(data, part, node: int, count: int) -> torch.Tensor:
    """Indices of the first `count` test images of classes node `node` (numbered from 1) never trains on (Fig. 2's
    setting); empty when that node holds every class."""
    seen = np.flatnonzero(part.histograms(data.y_train.numpy(), data.num_classes)[node - 1])
    return torch.as_tensor(np.flatnonzero(~np.isin(data.y_test.numpy(), seen))[:count])


def attention_method(cfg: P2PFTConfig, model) -> str:
    """The map `cfg.attention_method` names; "auto": last-layer CLS attention for ViT / DeiT, Grad-CAM (captum)
    on the last stage for Swin, whose windowed attention has no CLS token."""
    if cfg.attention_method != "auto":
        return cfg.attention_method
    return "gradcam" if architecture_of(model) == "swin" else "cls"


def write_attention(path: Path, model, tail, transform, data, part, sims: dict[str, SyncResult], cfg: P2PFTConfig,
                    device: str) -> dict:
    """Fig. 2: node `cfg.attention_node`'s model under each algorithm (central: the single model) on test images
    of classes that node never saw, maps side by side (`dflbench.vision.plots.compare_attention`). A node that
    holds every class has no unseen classes: the figure is skipped and the reason recorded."""
    from dflbench.vision.plots import compare_attention

    node, method = cfg.attention_node, attention_method(cfg, model)
    idx = unseen_test_images(data, part, node, cfg.attention)
    if len(idx) == 0:
        reason = (f"node {node} holds every class under split {cfg.split!r}, so it has no unseen classes to show; "
                  "use --split classes or another --attention-node")
        print(f"note: attention maps skipped: {reason}", file=sys.stderr)
        return {"skipped": reason, "node": node, "method": method}
    models = {}
    for name, res in sims.items():
        row = 0 if single_model(name) else node - 1
        with torch.no_grad():
            for key, prm in tail.named_parameters():
                prm.copy_(res.params[key][row])
        models[label(name)] = copy.deepcopy(model).float().eval()
    images = transform(data.x_test[idx]).to(device)
    compare_attention(models, images, path, method=method)
    return {"path": str(path), "test_indices": idx.tolist(), "labels": data.y_test[idx].tolist(), "node": node,
            "method": method}


def write_results(results: dict, out: Path) -> None:
    """results.json (everything) and results.csv (one row per algorithm: per-node and mean accuracy, cost)."""
    atomic_write_json(out / "results.json", results)
    rows = []
    for r in results["runs"]:
        row = {"algorithm": r["algorithm"]}
        row.update({f"node_{i + 1}": a for i, a in enumerate(r["node_accuracy"])})
        row.update(mean=r["mean_accuracy"], wall_time_s=r["wall_time_s"], bytes_sent=r["bytes_sent"],
                   epochs=len(r["history"]) - 1)
        rows.append(row)
    atomic_write_csv(out / "results.csv", rows)
