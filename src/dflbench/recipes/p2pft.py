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

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

from dflbench.data import load_dataset, parse_split, random_subset
from dflbench.engines import SyncResult, SyncSimulator
from dflbench.errors import UserError, check_numbers, for_option, user_input
from dflbench.io import keep_earlier_runs
from dflbench.mixing import RENAMED, make_algorithm
from dflbench.plots import figure_or_error, line_plot
from dflbench.provenance import code_provenance
from dflbench.registry import option
from dflbench.runtime.backend import check_runtime, resolve_device
from dflbench.topology import topology_from_spec
from dflbench.vision import check_model_name, parse_policy

from .p2pft_algorithms import CENTRAL, label, list_p2pft_algorithms, needs_graph, parse_algorithms, single_model
from .p2pft_attention import write_attention
from .p2pft_results import earlier_results, run_record, write_results
from .p2pft_seeds import Seed, prepare, simulator, train

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
    `batch_seeds` only chooses how several seeds run (`run_p2pft_seeds`), never what they compute. Algorithms
    recorded under a former name read as today's (`RENAMED_VALUES`, `recipes.config.upgrade_record`)."""

    RENAMED_VALUES: ClassVar[dict] = {"algorithms": RENAMED}

    model: str = option("vit_small_patch16_224", "timm model name.")
    dataset: str = option("digits", "Dataset name, npz:PATH or folder:PATH.")
    train_samples: int | None = option(None, "Fine-tune on a random subset of the training set (the same for every "
                                             "seed).")
    nodes: int = option(4, "Number of nodes.")
    topology: str = option("hub_ring", "Topology name or adjacency:PATH (hub_ring: directed, A != B).")
    split: str = option("classes", "classes[:ROW] | dirichlet:ALPHA | iid | shards:K.")
    algorithms: tuple[str, ...] = option(("local", "pushpull", CENTRAL),
                                         f"Comma list of: {', '.join(list_p2pft_algorithms())}.")
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
        object.__setattr__(self, "algorithms", parse_algorithms(self.algorithms))
        check_numbers(self, P2PFT_NUMBERS)
        mixing = [a for a in self.algorithms if needs_graph(a)]
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


def run_seeds_stacked(cfgs: list[P2PFTConfig], folders: list[Path],
                      on_run_done: Callable[[int, dict], None] | None = None) -> None:
    """Seeds of a reproduction together (`recipes.config.Experiment.run_seeds_stacked`): `run_p2pft_seeds`, resuming
    from their checkpoints."""
    run_p2pft_seeds(cfgs, folders, resume=True, on_run_done=on_run_done)


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
    seeds: list[Seed] = []
    for c, out in zip(cfgs, out_dirs):
        seeds.append(prepare(c, Path(out), device, data, runtime, progress, seeds))
    runs: list[list[dict]] = [[] for _ in seeds]
    sims: list[dict[str, SyncResult]] = [{} for _ in seeds]
    for name in cfg.algorithms:
        sim_list = [simulator(seed, name, device, runtime) for seed in seeds]
        results, with_seeds = train(name, sim_list, seeds, resume, progress, batch)
        for s, (sim, res) in enumerate(zip(sim_list, results)):
            sims[s][name] = res
            runs[s].append(run_record(name, sim, res, cfg.nodes, with_seeds[s], single_model(name)))
            if on_run_done is not None and runtime.lead:
                on_run_done(s, runs[s][-1])
    if not runtime.lead:
        return [None] * len(seeds)
    return [_finish(seed, data, device, seed_runs, seed_sims, runtime, previous) for seed, seed_runs, seed_sims,
            previous in zip(seeds, runs, sims, earlier)]


def _finish(seed: Seed, data, device: str, runs: list[dict], sims: dict[str, SyncResult],
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
        "code": code_provenance(),
        "runs": runs,
    }
    results = keep_earlier_runs(results, previous, "algorithm", "algorithms")
    write_results(results, out)                                   # results first: a picture can never lose them
    curves = {label(r["algorithm"]): ([h["epoch"] for h in r["history"]], [h["mean_accuracy"] for h in r["history"]])
              for r in runs}
    results["figures"] = {"accuracy": figure_or_error(out, "accuracy", lambda: {"path": str(line_plot(
        out / "accuracy.png", curves, "epoch", "mean test accuracy over nodes (%)", f"{cfg.model} on {cfg.dataset}",
        percent=True))})}
    if cfg.attention:
        results["attention"] = figure_or_error(out, "attention", lambda: write_attention(
            out / "attention.png", seed.model, seed.tail, seed.transform, data, part, sims, cfg, device))
    write_results(results, out)
    return P2PFTRun(results, sims)

