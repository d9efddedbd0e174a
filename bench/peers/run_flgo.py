"""FLGo 0.4.4 FedAvg (`flgo.algorithm.fedavg`) in its default single-process simulator: a benchmark generated from a
config file (`flgo.gen_benchmark_from_file`: the workload's training set and evaluation set as TensorDatasets,
dflbench's LeNet-5), a task from the workload's own partition (a `BasicPartitioner` returning `parts`, so FLGo's
partitioners are not used), then `flgo.init(...).run()` with num_rounds R, proportion C / N, sample "uniform" (C
clients without replacement), aggregate "other" (sum of p_k / sum p_k times model_k, p_k the data size: FedAvg),
num_steps 5, batch 32, lr 0.05, no lr decay, train_holdout 0 (clients train on all their data), CPU, evaluation at
round 0 as FLGo does and not again before the end. FLGo's picture of the partition is not drawn (`skip_plot`).
Benchmark and task are written to a fresh temporary folder inside the timed run (FLGo's set-up cost). FLGo 0.4.4
predates the check in torch (2.14.1 here) that a `Subset` subclass overriding `__getitem__` also overrides
`__getitems__`; `torch_compat` gives FLGo's `TaskDataset` the one-line `__getitems__` torch's message asks for (per-
item `__getitem__`, what the DataLoader did before). Round ends come from a `Server.iterate` override. Prints one
JSON line (common.Report)."""

import os
import sys
import tempfile
from pathlib import Path

from common import Report, Workload, accuracy, single_thread

HERE = Path(__file__).resolve().parent
CONFIG = f"""import os, sys
sys.path.insert(0, {str(HERE)!r})
import torch
from common import Workload, as_input, lenet5
_w = Workload.load(os.environ["PEERS_WORKLOAD"])
train_data = torch.utils.data.TensorDataset(as_input(_w.x), torch.as_tensor(_w.y))
test_data = torch.utils.data.TensorDataset(as_input(_w.x_eval), torch.as_tensor(_w.y_eval))

def get_model():
    return lenet5()
"""


def main(path: str) -> None:
    single_thread()
    os.environ["PEERS_WORKLOAD"] = str(Path(path).resolve())
    from importlib.metadata import version

    import flgo
    import flgo.algorithm.fedavg as fedavg
    from flgo.benchmark.partition import BasicPartitioner

    torch_compat()
    w = Workload.load(path)
    report = Report("FLGo", version("flgo"))

    class Given(BasicPartitioner):
        num_clients = w.clients

        def __call__(self, data):
            return [p.tolist() for p in w.parts]

    class TimedServer(fedavg.Server):
        def iterate(self):
            updated = super().iterate()
            report.round_done()
            return updated

    class Algorithm:
        Server, Client = TimedServer, fedavg.Client

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        sys.path.insert(0, tmp)
        (Path(tmp) / "config.py").write_text(CONFIG)
        bmk = flgo.gen_benchmark_from_file("peers_bmk", "config.py", target_path=".", data_type="cv",
                                           task_type="classification")
        import importlib

        benchmark = importlib.import_module(bmk)
        benchmark.visualize = skip_plot
        flgo.gen_task_by_(benchmark, Given(), task_path="peers_task", seed=w.seed)
        runner = flgo.init("peers_task", Algorithm, option={
            "num_rounds": w.rounds, "proportion": w.clients_per_round / w.clients, "sample": "uniform",
            "aggregate": "other", "num_steps": w.local_steps, "batch_size": w.batch, "learning_rate": w.lr,
            "learning_rate_decay": 1.0, "train_holdout": 0.0, "gpu": [], "num_parallels": 1, "num_workers": 0,
            "eval_interval": w.rounds + 1, "seed": w.seed, "no_log_console": True, "log_file": False})
        runner.run()
        report.emit(accuracy(runner.model, w))


def skip_plot(*args, **kwargs) -> None:
    """In place of the generated benchmark's `visualize`: FLGo draws the partition, one matplotlib bar per training
    sample (minutes at 60,000 images), when it writes a task; that picture is no part of training."""


def torch_compat() -> None:
    """`__getitems__` for FLGo's cv-classification `TaskDataset` (see the module docstring)."""
    from flgo.benchmark.toolkits.cv.classification import FromDatasetPipe

    def getitems(self, indices):
        return [self[i] for i in indices]

    FromDatasetPipe.TaskDataset.__getitems__ = getitems


if __name__ == "__main__":
    main(sys.argv[1])
