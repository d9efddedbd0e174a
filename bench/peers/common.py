"""What every runner of the peers harness shares: the workload file, LeNet-5, the input scaling, the evaluation
and the JSON report. Runners run as their own processes (`python bench/peers/run_X.py WORKLOAD.npz`), so this
module imports nothing heavy at module level beyond numpy and torch."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]                            # dflbench (LeNet-5, input scaling) from source
for _src in [ROOT / "src", *sorted((ROOT / "packages").glob("*/src"))]:
    if str(_src) not in sys.path:
        sys.path.insert(1, str(_src))


@dataclass
class Workload:
    """The arrays and settings `prepare.py` wrote: training images (uint8 [n, 28, 28]), the client partition
    (`parts[k]`: indices of client k), the evaluation set (dflbench's shuffled test set, its first `eval_samples`)."""

    x: np.ndarray
    y: np.ndarray
    parts: list[np.ndarray]
    x_eval: np.ndarray
    y_eval: np.ndarray
    clients: int
    clients_per_round: int
    rounds: int
    batch: int
    local_steps: int
    lr: float
    seed: int
    alpha: float

    @classmethod
    def load(cls, path: str | Path) -> "Workload":
        with np.load(path, allow_pickle=False) as z:
            offsets = z["part_offsets"]
            flat = z["part_indices"]
            parts = [flat[offsets[k]:offsets[k + 1]] for k in range(len(offsets) - 1)]
            s = json.loads(str(z["settings"]))
            return cls(z["x_train"], z["y_train"].astype(np.int64), parts, z["x_eval"], z["y_eval"].astype(np.int64),
                       **s)


def lenet5() -> torch.nn.Module:
    """dflbench's LeNet-5 (`dflbench.models.lenet`), 10 classes, 1 x 28 x 28 inputs, in every framework."""
    from dflbench.models.lenet import LeNet5

    return LeNet5(10, 1, 28)


def as_input(x_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [n, 28, 28] -> float [n, 1, 28, 28] in [-1, 1], dflbench's scaling (`async_stacked.normalize_uint8`)."""
    from dflbench.engines.async_stacked import normalize_uint8

    return normalize_uint8(torch.as_tensor(x_uint8).unsqueeze(1))


@torch.no_grad()
def accuracy(model: torch.nn.Module, w: Workload, batch: int = 1000) -> float:
    """Top-1 accuracy of `model` on the workload's evaluation set."""
    model.eval()
    correct = 0
    for i in range(0, len(w.y_eval), batch):
        out = model(as_input(w.x_eval[i:i + batch]))
        correct += int((out.argmax(1) == torch.as_tensor(w.y_eval[i:i + batch])).sum())
    model.train()
    return correct / len(w.y_eval)


class Report:
    """Collects the wall-clock time (`time.time()`, comparable with the harness's spawn time) at which each round's
    aggregate exists, and prints the runner's one JSON line."""

    def __init__(self, framework: str, version: str):
        self.framework, self.version, self.round_ends = framework, version, []

    def round_done(self) -> None:
        self.round_ends.append(time.time())

    def emit(self, accuracy: float, **extra) -> None:
        print(json.dumps({"framework": self.framework, "version": self.version, "round_ends": self.round_ends,
                          "accuracy": accuracy, **extra}), flush=True)


_LOADED: dict = {}


def loaded(path: str) -> tuple:
    """(workload, float inputs, labels, per-client index tensors) of `path`, loaded once per process: a framework
    that runs clients in worker processes (Flower's Ray actors) pays the load once per worker, not per client call
    (a function defined in a runner script travels to the workers by value, its module-level cache with it; this
    module is imported there by reference)."""
    if path not in _LOADED:
        w = Workload.load(path)
        _LOADED[path] = (w, as_input(w.x), torch.as_tensor(w.y), [torch.as_tensor(p) for p in w.parts])
    return _LOADED[path]


def single_thread() -> None:
    torch.set_num_threads(1)
