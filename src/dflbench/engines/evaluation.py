"""The evaluation protocol every asynchronous method is scored by (docs/EVALUATION.md), applied by the engine.

At each evaluation `AsyncSimulator` takes the method's evaluated models `x [n, P]` (`eval_models`: the D device models
of a decentralized method, the one global model of a server method) and, where the method prunes, their masks
`[n, P]` (`eval_masks`), and records:

- `accuracy`: the mean over the n models of each model's test accuracy (the device-mean column);
- `consensus_accuracy`: the accuracy of the consensus model `consensus_model(x, masks)`, the average of the device
  models, per entry over the devices that keep the entry when masks differ (eq. 4.11 with uniform weights and no
  re-masking: an entry no device keeps is 0). For a server method both columns are its global model;
- `consensus`: `consensus_distance(x, masks)`, the mean L2 distance between any two devices' models (Sec. 3: "the
  average discrepancy of local models between any two nodes"), each pair compared over the entries BOTH keep, so
  that two pruned models that agree wherever both have weights are at distance 0 whatever their masks;
- `mask_disagreement`: `mask_disagreement(masks)`, the mean over pairs of the fraction of entries exactly one of the
  two keeps (0 without pruning), the part of the discrepancy that the masks make.

The paper (Table 1, "Acc: the convergence accuracy") states no protocol; docs/EVALUATION.md says which column is
compared with its numbers and why.
"""

from __future__ import annotations

import torch

from dflbench.aggregation import masked_average
from dflbench.mixing import pairwise_consensus_distance


def _pruned(masks: torch.Tensor | None) -> bool:
    return masks is not None and not bool(masks.all())


def consensus_model(x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
    """The average `[P]` of the models `x [n, P]`; with `masks [n, P]` (bool) the per-entry average over the models
    that keep the entry, 0 where none does."""
    n = x.shape[0]
    if not _pruned(masks):
        return x.mean(0)
    w = torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device)
    kept = masks.any(0)
    return masked_average(x, w, masks, remask=False) * kept


def consensus_distance(x: torch.Tensor, masks: torch.Tensor | None = None) -> float:
    """Mean over pairs of ||x_i - x_j|| over the entries both keep (`dflbench.mixing.pairwise_consensus_distance`)."""
    return float(pairwise_consensus_distance(x.float(), masks=masks if _pruned(masks) else None))


def mask_disagreement(masks: torch.Tensor | None) -> float:
    """Mean over ordered pairs i != j of the fraction of entries exactly one of masks i and j keeps (0 for None)."""
    if masks is None or masks.shape[0] < 2:
        return 0.0
    n, p = masks.shape
    m = masks.double()
    both = m @ m.T
    kept = m.sum(1)
    differ = kept[:, None] + kept[None, :] - 2 * both
    return float(differ.fill_diagonal_(0).sum() / (n * (n - 1) * p))


CONVERGENCE_WINDOW = 0.2        # the last 20% of a run's evaluations ...
CONVERGENCE_GAIN = 0.01         # ... gain less than 1 point: converged (issue 26's rule)
CONVERGENCE_MIN_EVALS = 10      # fewer evaluations: no verdict (a 2-evaluation window says nothing about a plateau)


def convergence(history: list[dict], key: str = "accuracy") -> dict:
    """The convergence rule on one run's `history` for the column `key`: the window is the last
    `CONVERGENCE_WINDOW` of its evaluations (at least 2); `gain` = the mean of the window's second half minus the mean
    of its first half (halves smooth single-evaluation noise); `converged` = gain < `CONVERGENCE_GAIN`;
    `accuracy` = the mean over the window (the plateau: Table 1's "convergence accuracy"). None values when the run
    has fewer than `CONVERGENCE_MIN_EVALS` evaluations (a short run: give it a longer budget or evaluate more
    often)."""
    ys = [h[key] for h in history]
    k = max(2, round(CONVERGENCE_WINDOW * len(ys)))
    if len(ys) < CONVERGENCE_MIN_EVALS:
        return {"converged": None, "gain": None, "accuracy": None, "window": len(ys)}
    w = ys[-k:]
    half = len(w) // 2
    gain = sum(w[half:]) / len(w[half:]) - sum(w[:half]) / half
    return {"converged": gain < CONVERGENCE_GAIN, "gain": gain, "accuracy": sum(w) / len(w), "window": k}
