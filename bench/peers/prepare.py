"""Write the peers workload once: Fashion-MNIST, dflbench's Dirichlet partition over N clients, the evaluation set,
and the run's settings, in one npz every runner reads (python bench/peers/prepare.py OUT.npz --clients N ...).

The training and test arrays are stored whole, so `dflbench` can load the file as `npz:OUT.npz` and re-derive the
same partition (`dflbench.data.partition(y, N, "dirichlet:ALPHA", seed)`) and evaluation set (the test set shuffled
with seed + 1, its first `eval_samples`, as `dflbench.recipes.aedfl.load_device_data` does); `part_indices` /
`part_offsets` and `x_eval` / `y_eval` hold the same for the other frameworks."""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from dflbench.data import load_dataset, partition


def write_workload(out, x_train, y_train, x_test, y_test, clients: int, clients_per_round: int, rounds: int,
                   alpha: float = 0.5, eval_samples: int = 1000, seed: int = 0, num_classes: int = 10) -> None:
    """Write the workload npz from uint8 images `[n, 28, 28]` (numpy or torch) and integer labels."""
    x_train, x_test = np.asarray(x_train), np.asarray(x_test)
    y_train, y_test = np.asarray(y_train, dtype=np.int64), np.asarray(y_test, dtype=np.int64)
    parts = partition(y_train, clients, f"dirichlet:{alpha}", seed=seed, num_classes=num_classes)
    perm = torch.randperm(len(y_test), generator=torch.Generator().manual_seed(seed + 1))[:eval_samples].numpy()
    settings = {"clients": clients, "clients_per_round": clients_per_round, "rounds": rounds, "batch": 32,
                "local_steps": 5, "lr": 0.05, "seed": seed, "alpha": alpha}
    np.savez(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, x_eval=x_test[perm],
             y_eval=y_test[perm], part_indices=np.concatenate(parts.indices),
             part_offsets=np.cumsum([0, *parts.sizes()]), settings=json.dumps(settings))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--clients-per-round", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--eval-samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    img = load_dataset("fashion-mnist")
    write_workload(a.out, img.x_train[:, 0], img.y_train, img.x_test[:, 0], img.y_test, a.clients,
                   a.clients_per_round, a.rounds, a.alpha, a.eval_samples, a.seed, len(img.classes))


if __name__ == "__main__":
    main()
