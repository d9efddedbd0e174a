"""dflbench's FedAvg through its Python API, as `dflbench aedfl --methods fedavg` runs it
(`dflbench.recipes.aedfl.run_aedfl`): the workload file loaded as dataset `npz:PATH`, which the recipe partitions
with the same `dirichlet:ALPHA` and seed as prepare.py and evaluates on the same shuffled test samples; FedAvg
options rounds = R and fraction = C / N (max_updates = R, a bound the rounds never reach first); evaluation at round
0 and at the end only (eval_interval far beyond the run). Round ends are read by wrapping `FedAvg.on_round` (the
round's local SGD runs inside it)."""

import sys
import time

from common import Report, Workload, single_thread


def main(path: str) -> None:
    single_thread()
    from dflbench.methods.server.fedavg import FedAvg
    from dflbench.recipes.aedfl import AEDFLRunConfig, run_aedfl

    w = Workload.load(path)
    report = Report("dflbench (FedAvg, async simulator)", _version())
    on_round = FedAvg.on_round

    def timed(self, sim, payload):
        before = self.round
        on_round(self, sim, payload)
        if self.round > before:
            report.round_done()

    FedAvg.on_round = timed
    cfg = AEDFLRunConfig(dataset=f"npz:{path}", devices=w.clients, methods=("fedavg",), alpha=w.alpha,
                         max_updates=w.rounds, batch_size=w.batch, local_steps=w.local_steps, lr=w.lr,
                         eval_interval=1e12, eval_samples=len(w.y_eval), seed=w.seed,
                         method_options={"fedavg": {"rounds": w.rounds, "fraction": w.clients_per_round / w.clients}})
    t = time.time()
    run = run_aedfl(cfg)["runs"][0]
    report.emit(run["accuracy"], run_s=time.time() - t)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dflbench")
    except PackageNotFoundError:
        return "source"


if __name__ == "__main__":
    main(sys.argv[1])
