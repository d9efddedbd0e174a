"""Staleness and the model-selection features of AEDFL Sec. 4.1.

Staleness of the cached model of neighbor j on device i: delta_t[i, j] = t_i - t_j, where t_i is device i's local
update count and t_j the cached model's stamp, device i's update count when the model arrived (the receiver's
counter, as AEDFL Sec. 4.1 defines t_j; `dflbench.aggregation.cache` says why). Slot 0 is the local model (stamp
t_i, staleness 0). The selection policy sees, per cached model: whether it was already aggregated, its
staleness and its loss (Sec. 4.1, "The input of the model includes ...").
"""

from __future__ import annotations

import torch

NUM_FEATURES = 3
FEATURE_NAMES = ("aggregated", "staleness", "loss")


def staleness(t_local, stamps) -> torch.Tensor:
    """delta_t = t_i - t_j: `t_local` is `[...]`, `stamps` is `[..., K]`; returns `[..., K]` (float)."""
    t_local = torch.as_tensor(t_local)
    stamps = torch.as_tensor(stamps, device=t_local.device)
    if tuple(stamps.shape[:-1]) != tuple(t_local.shape):
        raise ValueError(f"staleness: stamps shape {tuple(stamps.shape)} must be t_local shape "
                         f"{tuple(t_local.shape)} plus one slot dimension")
    return (t_local.unsqueeze(-1) - stamps).to(torch.get_default_dtype())


def selection_features(aggregated, delta_t, loss) -> torch.Tensor:
    """Stack the per-slot features `[..., K]` x 3 into `[..., K, 3]` in FEATURE_NAMES order (float)."""
    aggregated, delta_t, loss = (torch.as_tensor(x) for x in (aggregated, delta_t, loss))
    if not (aggregated.shape == delta_t.shape == loss.shape):
        raise ValueError(f"selection_features: shapes differ: aggregated {tuple(aggregated.shape)}, "
                         f"delta_t {tuple(delta_t.shape)}, loss {tuple(loss.shape)}")
    dtype = torch.get_default_dtype()
    return torch.stack([aggregated.to(dtype), delta_t.to(dtype), loss.to(dtype)], dim=-1)
