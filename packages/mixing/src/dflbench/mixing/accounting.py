"""Consensus measures over stacked parameters (all n rows present, e.g. `state.params`)."""

from __future__ import annotations

import torch

from .tree import Tree, flatten_rows


def consensus_distance(params: Tree) -> torch.Tensor:
    """(1/n) sum_i ||x_i - xbar||^2 with xbar = (1/n) sum_i x_i, over all leaves (a 0-dim tensor)."""
    x = flatten_rows(params)
    return (x - x.mean(dim=0, keepdim=True)).pow(2).sum(dim=1).mean()


def pairwise_consensus_distance(params: Tree, squared: bool = False, masks: torch.Tensor | None = None) -> torch.Tensor:
    """AEDFL's consensus distance, the average discrepancy between any two nodes:
    (2 / (n (n - 1))) sum_{i<j} ||x_i - x_j|| (or ||x_i - x_j||^2 with `squared`). 0 for a single node.

    `masks [n, q]` (bool, over the flattened rows): compare each pair over the entries both keep,
    ||m_i m_j (x_i - x_j)||, so that pruned models that agree wherever both have weights are at distance 0
    whatever their masks (computed as (m x^2)_i . m_j + m_i . (m x^2)_j - 2 (m x)_i . (m x)_j in float64)."""
    x = flatten_rows(params)
    n = x.shape[0]
    if n < 2:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    if masks is None:
        centered = x - x.mean(dim=0, keepdim=True)                 # shift-invariant; cdist by matmul is fast
        d2 = torch.cdist(centered, centered, compute_mode="use_mm_for_euclid_dist").pow(2)
    else:
        m = masks.to(torch.float64)
        xm = x.to(torch.float64) * m
        sq = xm * xm
        d2 = (sq @ m.T + m @ sq.T - 2 * (xm @ xm.T)).to(x.dtype)
    iu = torch.triu_indices(n, n, 1, device=x.device)
    pairs = d2[iu[0], iu[1]].clamp_min(0)
    return (pairs if squared else pairs.sqrt()).mean()


def total_bytes(bytes_sent: torch.Tensor) -> int:
    """All bytes the nodes have sent (sum of a state's `bytes_sent`)."""
    return int(bytes_sent.sum())
