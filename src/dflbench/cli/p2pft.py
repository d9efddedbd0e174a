"""`dflbench p2pft ...`: Local-FT / P2P-FT / DGD / GT-DGD / centralized fine-tuning, a Table I-style table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from dflbench.engines.sync import checkpoint_epoch
from dflbench.errors import UserError
from dflbench.recipes.config import parse_model_kwargs, with_config_file
from dflbench.recipes.p2pft import RANDOM_BACKBONE, P2PFTConfig, run_p2pft
from dflbench.recipes.p2pft_algorithms import parse_algorithms
from dflbench.recipes.p2pft_distributed import check_timeout, run_p2pft_distributed
from dflbench.recipes.p2pft_results import check_checkpoints, config_differences, read_results

from .errors import FIGURE_FAILED, on_interrupt, user_errors
from .options import NONE, field_option, given, param_option
from .output import guard_finished, prepare_out
from .threads import set_threads


def results_table(results: dict) -> Table:
    """Table I layout: a row per algorithm, a column per node plus the mean (accuracy in %), time, traffic."""
    cfg = results["config"]
    table = Table(title=f"{cfg['model']} on {results['data']['name']}: test accuracy (%) after "
                        f"{cfg['epochs']} epochs, split {cfg['split']}")
    table.add_column("algorithm")
    central = [r for r in results["runs"] if r["single_model"]]
    if central:
        steps = ("the same steps per epoch as the nodes" if cfg["central_steps"] == "match"
                 else "one pass over the union per epoch")
        table.caption = (f"* one model trained on the union of all nodes' data, batch nodes x {cfg['batch_size']}, "
                         f"{steps} ({central[0]['steps_per_epoch']} steps; nodes: "
                         f"{max(r['steps_per_epoch'] for r in results['runs'])})")
    n = len(results["runs"][0]["node_accuracy"]) if results["runs"] else 0
    for i in range(n):
        table.add_column(f"node {i + 1}", justify="right")
    for col in ("mean", "time (s)", "MB sent"):
        table.add_column(col, justify="right")
    for r in results["runs"]:
        table.add_row(r["algorithm"] + ("*" if r["single_model"] else ""),
                      *(f"{100 * a:.2f}" for a in r["node_accuracy"]), f"{100 * r['mean_accuracy']:.2f}",
                      f"{r['wall_time_s']:.1f}", f"{r['bytes_sent'] / 1e6:.1f}")
    return table


def print_partition(console: Console, results: dict) -> None:
    """One line per node: its sample count and the classes it holds (from the saved class histograms)."""
    for i, (size, hist) in enumerate(zip(results["partition"]["sizes"], results["partition"]["class_histograms"])):
        classes = [c for c, k in enumerate(hist) if k]
        shown = ", ".join(map(str, classes[:12])) + (" ..." if len(classes) > 12 else "")
        console.print(f"node {i + 1}: {size} training samples, {len(classes)} classes ({shown})")


F = P2PFTConfig


@user_errors
def p2pft(
    model: Optional[str] = field_option(F, "model"),
    dataset: Optional[str] = field_option(F, "dataset"),
    nodes: Optional[int] = field_option(F, "nodes", "--nodes", "-n"),
    topology: Optional[str] = field_option(F, "topology"),
    split: Optional[str] = field_option(F, "split"),
    algorithms: Optional[str] = field_option(F, "algorithms"),
    epochs: Optional[int] = field_option(F, "epochs"),
    lr: Optional[float] = field_option(F, "lr"),
    momentum: Optional[float] = field_option(F, "momentum"),
    batch_size: Optional[int] = field_option(F, "batch_size"),
    device: Optional[str] = field_option(F, "device"),
    seed: Optional[int] = field_option(F, "seed"),
    out: Path = typer.Option(Path("runs/p2pft"), "--out", help="Output folder (results.json, results.csv)."),
    checkpoint: Optional[Path] = field_option(F, "checkpoint"),
    pretrained: bool = field_option(F, "pretrained", flag=True),
    policy: Optional[str] = field_option(F, "policy"),
    model_kwargs: Optional[str] = field_option(F, "model_kwargs"),
    data_dir: Optional[Path] = field_option(F, "data_dir"),
    download: bool = field_option(F, "download", flag=True),
    image_size: Optional[int] = field_option(F, "image_size"),
    train_samples: Optional[int] = field_option(F, "train_samples"),
    no_cache: bool = field_option(F, "cache", "--no-cache", flag=True),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/*.pt; the algorithms "
                                "OUT/results.json holds stay in it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results and checkpoints OUT already "
                                   "holds (without it, a run that would lose them is refused)."),
    attention: Optional[int] = field_option(F, "attention"),
    attention_method: Optional[str] = field_option(F, "attention_method"),
    attention_node: Optional[int] = field_option(F, "attention_node"),
    central_steps: Optional[str] = field_option(F, "central_steps"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    runtime: Optional[str] = field_option(F, "runtime"),
    backend: Optional[str] = param_option(run_p2pft_distributed, "backend",
                                          help="torch.distributed backend: auto | gloo | nccl."),
    peer_timeout: Optional[float] = param_option(run_p2pft_distributed, "timeout_s", "--peer-timeout",
                                                 help="distributed: seconds without an answer before a rank is "
                                                      "declared dead."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file whose [config] sets the run (see "
                                                                 "`dflbench run`); options given here override it."),
):
    """Fine-tune the last block + head over n peer-to-peer nodes and compare algorithms (P2P-FT Table I)."""
    set_threads(threads)
    cfg = with_config_file(F, config, given(
        model=model, dataset=dataset, nodes=nodes, topology=topology, split=split,
        algorithms=None if algorithms is None else parse_algorithms(algorithms), epochs=epochs, lr=lr,
        momentum=momentum, batch_size=batch_size, device=device, seed=seed, policy=policy,
        checkpoint=None if checkpoint is None else str(checkpoint), pretrained=pretrained,
        model_kwargs=None if model_kwargs is None else parse_model_kwargs(model_kwargs),
        data_dir=None if data_dir is None else str(data_dir), download=download, image_size=image_size,
        train_samples=train_samples, cache=NONE if no_cache else None, attention=attention,
        attention_method=attention_method, attention_node=attention_node, central_steps=central_steps,
        runtime=runtime))
    if cfg.backbone == "random" and os.environ.get("RANK", "0") == "0":    # once under torchrun: rank 0's
        Console(stderr=True).print(f"[yellow]warning:[/] {RANDOM_BACKBONE}", highlight=False, soft_wrap=True)
    distributed = cfg.runtime == "distributed"
    check_timeout(peer_timeout)
    prepare_out(out, resume, overwrite)
    if not overwrite:
        _guard(cfg, out, resume)
    on_interrupt(lambda: _saved(cfg, out), "--resume")
    if distributed:
        run = run_p2pft_distributed(cfg, out, resume=resume, **given(backend=backend, timeout_s=peer_timeout))
        if run is None:  # ranks other than 0 print nothing
            return
    else:
        run = run_p2pft(cfg, out, resume=resume)
    console = Console()
    asked = {**run.results, "runs": [r for r in run.results["runs"] if r["algorithm"] in cfg.algorithms]}
    print_partition(console, asked)
    console.print(results_table(asked))
    att = run.results.get("attention", {})
    if "path" in att:
        console.print(f"wrote {att['path']} (node {att['node']}, classes it never saw, {att['method']} maps)")
    console.print(wrote(run.results, out), highlight=False, soft_wrap=True)
    if any("error" in fig for fig in (run.results["figures"]["accuracy"], att)):
        raise typer.Exit(code=FIGURE_FAILED)             # the warning line is printed; the results are complete


def _checkpoints(out: Path) -> dict[str, list[Path]]:
    """The training checkpoints an earlier run left in OUT/checkpoints, by algorithm (the distributed runtime
    writes one per rank, ALGORITHM.rankR.pt)."""
    found: dict[str, list[Path]] = {}
    for path in sorted((out / "checkpoints").glob("*.pt")):
        found.setdefault(path.stem.split(".rank")[0], []).append(path)
    return found


def _epoch(paths: list[Path]) -> int:
    """The epoch an algorithm's checkpoints hold (the least over its ranks' files)."""
    return min(checkpoint_epoch(p) for p in paths)


def _guard(cfg: P2PFTConfig, out: Path, resume: bool) -> None:
    """Refuse a run that would lose what OUT holds (`guard_finished`): finished algorithms in results.json, or,
    without it, the checkpoints of an interrupted run (kept by --resume only)."""
    previous = read_results(out)
    if previous is not None:
        guard_finished(out / "results.json", [r["algorithm"] for r in previous["runs"]], cfg.algorithms,
                       config_differences(cfg, previous), resume, unit="algorithms")
    elif _checkpoints(out) and not resume:
        raise UserError(f"{out / 'checkpoints'} holds unfinished runs of {', '.join(_checkpoints(out))}; continue "
                        "them with --resume, give another --out, or replace them with --overwrite")
    if resume:
        held = {name: paths for name, paths in _checkpoints(out).items() if name in cfg.algorithms}
        check_checkpoints([p for paths in held.values() for p in paths])
        kept = [f"{name} (epoch {_epoch(paths)})" for name, paths in held.items()]
        if kept and os.environ.get("RANK", "0") == "0":     # one line per run, not per torchrun rank
            Console().print(f"resuming from {out / 'checkpoints'}: {', '.join(kept)} of {cfg.epochs} epochs",
                            highlight=False, soft_wrap=True)


def _saved(cfg: P2PFTConfig, out: Path) -> str:
    """What an interrupted `dflbench p2pft` leaves: the epochs each algorithm's checkpoint holds."""
    done = []
    for name, paths in _checkpoints(out).items():
        try:
            done.append(f"{name} at epoch {_epoch(paths)} of {cfg.epochs}")
        except Exception:  # noqa: BLE001 - a file being replaced or damaged: say what is sure
            done.append(f"{name} (epoch unknown)")
    return f"{out / 'checkpoints'} holds {', '.join(done)}" if done else "no epoch had finished, nothing was saved"


def wrote(results: dict, out: Path) -> str:
    """'wrote OUT/results.json, OUT/results.csv, OUT/accuracy.png and OUT/checkpoints/ (...)': every file of a
    P2P-FT run but the attention grid (its own line)."""
    paths = [out / "results.json", out / "results.csv"]
    figure = results.get("figures", {}).get("accuracy", {})
    if "path" in figure:
        paths.append(Path(figure["path"]))
    names = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    if names:
        return f"wrote {', '.join(map(str, paths))} and {out / 'checkpoints'}/ ({', '.join(names)}: training state)"
    return f"wrote {', '.join(map(str, paths[:-1]))} and {paths[-1]}"
