"""What AEDFL's modules did during a run, as time series (`results.json` -> runs[i]["diagnostics"]).

At every evaluation of the simulator the method records, per device j (the device as a SENDER, i.e. as the
neighbour whose model others select and weigh):

* `selection_probability[j]`: the mean, over the updates since the previous evaluation and over the devices caching
  j's model, of the probability that j's cached model was selected (the policy's P(c_m = 1 | c_{m-1..1}) with `rl`;
  the 0/1 selection of AEDFL-0's rule otherwise), over valid slots only; None when nobody held j's model;
* `lambda[j]`: the mean control parameter lambda_{i,j} (eq. 4.6-4.8) over j's receivers i (with `dwu`);
* `pruning_rate[j]`: device j's current pruning rate p_j (eq. 5.16, with pruning);
* `mflops[j]`: the MFLOPs per sample of device j's current structure (its mask's `structured_mfp`, with pruning):
  the same rate prunes different units over a run, so this is what the rate costs (Table 1's MFP is its mean at
  the end);

plus `selection_by_bucket`: the mean selection probability per slot kind since the previous evaluation: `fresh`
(not aggregated yet, staleness <= 2: the pretraining heuristic's "select"), `stale` (not aggregated, staleness > 2)
and `aggregated`. Each series is a list over evaluations (`time`).
"""

from __future__ import annotations

import math

import torch

BUCKETS = ("fresh", "stale", "aggregated")
FRESH_STALENESS = 2.0


class SelectionStats:
    """Running sums of selection probabilities per cache slot `[R, K]` and per bucket since the last `take`."""

    def __init__(self, rows: int, slots: int):
        self.slot_sum = torch.zeros(rows, slots, dtype=torch.float64)
        self.slot_n = torch.zeros(rows, slots, dtype=torch.float64)
        self.bucket_sum = torch.zeros(len(BUCKETS), dtype=torch.float64)
        self.bucket_n = torch.zeros(len(BUCKETS), dtype=torch.float64)

    def record(self, rows: torch.Tensor, valid: torch.Tensor, aggregated: torch.Tensor, stale: torch.Tensor,
               probability: torch.Tensor) -> None:
        v = valid.cpu()
        p = probability.detach().double().cpu() * v
        self.slot_sum[rows] += p
        self.slot_n[rows] += v.double()
        bucket = torch.where(aggregated.cpu(), 2, torch.where(stale.cpu() <= FRESH_STALENESS, 0, 1))
        self.bucket_sum.index_add_(0, bucket[v], p[v])
        self.bucket_n.index_add_(0, bucket[v], torch.ones(int(v.sum()), dtype=torch.float64))

    def take(self, neighbors: torch.Tensor, num_devices: int) -> tuple[list, dict]:
        """(per-sender mean probability `[n]`, per-bucket means) since the last call; `neighbors [R, K]`: the
        device cached in each slot (-1: padding). Resets the sums."""
        held = neighbors >= 0
        src = neighbors[held]
        total = torch.zeros(num_devices, dtype=torch.float64).index_add_(0, src, self.slot_sum[held])
        count = torch.zeros(num_devices, dtype=torch.float64).index_add_(0, src, self.slot_n[held])
        per_sender = _mean_list(total, count)
        buckets = dict(zip(BUCKETS, _mean_list(self.bucket_sum, self.bucket_n)))
        for t in (self.slot_sum, self.slot_n, self.bucket_sum, self.bucket_n):
            t.zero_()
        return per_sender, buckets


def per_sender_lambda(lam: torch.Tensor, neighbors: torch.Tensor, num_devices: int) -> list:
    """Mean lambda_{i,j} over the receivers i of each device j; `lam [R, K+1]` (slot 0: the local scale)."""
    held = neighbors >= 0
    src = neighbors[held]
    total = torch.zeros(num_devices, dtype=torch.float64).index_add_(0, src, lam[:, 1:].double().cpu()[held])
    count = torch.zeros(num_devices, dtype=torch.float64).index_add_(0, src, torch.ones(int(held.sum()),
                                                                                          dtype=torch.float64))
    return _mean_list(total, count)


def _mean_list(total: torch.Tensor, count: torch.Tensor) -> list:
    return [None if n == 0 else float(s / n) for s, n in zip(total.tolist(), count.tolist())]


def summary(series: list[list]) -> dict[str, list]:
    """mean / min / max over devices of each evaluation's per-device list (None entries skipped)."""
    out: dict[str, list] = {"mean": [], "min": [], "max": []}
    for values in series:
        vals = [v for v in values if v is not None and not math.isnan(v)]
        out["mean"].append(sum(vals) / len(vals) if vals else None)
        out["min"].append(min(vals) if vals else None)
        out["max"].append(max(vals) if vals else None)
    return out
