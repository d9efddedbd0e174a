"""The compute a pruning rate leaves: structural MFP / dense MFP of a model pruned by each scoring rule at a grid of
rates, the measurement behind the calibrated pruning defaults (AEDFL's rate bounds, `AdaptivePruningConfig`; the pruning
baselines' rates, `methods/pruning_baselines.py`; a ResNet recipe's method options).

The paper reports each method's MFP, not its rate, and the MFP a rate gives depends on which units the scores pick
(a LeNet-5 conv1 channel holds far more MACs than a linear neuron), so the rates are calibrated by measurement: the
model is trained `--steps` SGD steps (batch 32, lr 0.05) on the data set, then each rule prunes it on `--batches`
different local minibatches of 32 (as a device would), and the table gives MFP / dense for each batch.

    OMP_NUM_THREADS=1 python bench/pruning_budget.py --model lenet5 --dataset fashion-mnist
    OMP_NUM_THREADS=1 python bench/pruning_budget.py --model resnet8 --dataset npz:../shared/data/cifar10-subset.npz

Rules: `aedfl` (eq. 5.14-5.15 with the diagonal Hessian, as `methods/aedfl/pruning.py` scores), `hrank` (per
layer), `fedap` (per-layer rates from the spectra), `hap` (whole model, a layer losing at most 95%). A run's MFP
also moves with training, so a calibration is checked by a recorded run (docs/results/aedfl-mfp-sweep-*).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from dflbench.data.datasets import load_dataset
from dflbench.models.registry import make_model
from dflbench.pruning import PruningConfig, prune_model, structured_mfp

CONFIGS = {"aedfl": dict(approximation="diagonal", num_probes=1),
           "hrank": dict(layerwise=True),
           "fedap": dict(approximation="diagonal", slq_steps=8, slq_runs=1),
           "hap": dict(approximation="diagonal", num_probes=4, max_group_rate=0.95)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--rules", default="aedfl,hrank,fedap,hap")
    ap.add_argument("--rates", default="0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--samples", type=int, default=20000, help="training images used (the first N)")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_dataset(args.dataset, image_size=32)
    x = data.x_train[:args.samples].float() / 255
    x = (x - x.mean()) / x.std()
    y = data.y_train[:args.samples]
    model = make_model(args.model, len(data.classes), x.shape[1], x.shape[-1])
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    grad_max = 0.0
    for _ in range(args.steps):
        i = torch.randint(0, len(y), (32,))
        opt.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        grad_max = max(grad_max, float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))
        opt.step()
    model.eval()
    example = x[:1]
    ones = torch.ones(1, sum(p.numel() for p in model.parameters()), dtype=torch.bool)
    dense = float(structured_mfp(model, example, ones)[0])
    print(f"{args.model} on {args.dataset}: dense MFP {dense:.4f} after {args.steps} SGD steps")
    print("| rule | rate | MFP / dense per batch | mean |\n|---|---|---|---|")
    for rule in args.rules.split(","):
        cfg = PruningConfig(rule=rule, **CONFIGS[rule])
        for rate in (float(r) for r in args.rates.split(",")):
            out = []
            for b in range(args.batches):
                i = torch.randint(0, len(y), (32,), generator=torch.Generator().manual_seed(b))
                res = prune_model(model, F.cross_entropy, (x[i], y[i]), rate, config=cfg, initial_params=init,
                                  max_grad_norm=grad_max, seed=b)
                out.append(float(structured_mfp(model, example, res.flat_mask(model).bool()[None])[0]) / dense)
            print(f"| {rule} | {rate} | {' '.join(f'{v:.3f}' for v in out)} | {sum(out) / len(out):.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
