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
    y = img.y_train.numpy()
    parts = partition(y, a.clients, f"dirichlet:{a.alpha}", seed=a.seed, num_classes=len(img.classes))
    perm = torch.randperm(len(img.y_test), generator=torch.Generator().manual_seed(a.seed + 1))[:a.eval_samples]
    settings = {"clients": a.clients, "clients_per_round": a.clients_per_round, "rounds": a.rounds, "batch": 32,
                "local_steps": 5, "lr": 0.05, "seed": a.seed, "alpha": a.alpha}
    np.savez(a.out, x_train=img.x_train[:, 0].numpy(), y_train=y, x_test=img.x_test[:, 0].numpy(),
             y_test=img.y_test.numpy(), x_eval=img.x_test[perm, 0].numpy(), y_eval=img.y_test[perm].numpy(),
             part_indices=np.concatenate(parts.indices), part_offsets=np.cumsum([0, *parts.sizes()]),
             settings=json.dumps(settings))


if __name__ == "__main__":
    main()
