"""The state every algorithm carries between steps: tensors only, plus the step counter.

Invariant after `init` and after every `step`: `grads` = grad_fn(params) + weight_decay * params, the
(possibly stochastic) local gradients at the current parameters, and `aux` is what grad_fn returned beside
them at that call (e.g. per-node losses), or None. `bytes_sent[i]` counts the bytes node i has sent so far;
`grad_calls` the grad_fn calls since `init` (None in states saved before it was recorded).
`to_dict` / `from_dict` give a plain dict for `torch.save` / `torch.load` checkpoints that resume bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from .tree import Tree


@dataclass
class MixingState:
    """params: current stacked parameters (push-sum: the de-biased z = y / w).
    grads: local gradients at `params` (see module docstring).
    step: steps taken. bytes_sent: int64 [n_local], bytes each node has sent.
    tracker: gradient tracker tau (GT-DGD, push-pull). momentum: heavy-ball buffer (momentum > 0).
    numerator, weight: push-sum y and w ([n_local]). aux: the last extra output of grad_fn.
    grad_calls: grad_fn calls since `init`, that one included.
    """

    params: Tree
    grads: Tree
    step: int
    bytes_sent: torch.Tensor
    tracker: Tree | None = None
    momentum: Tree | None = None
    numerator: Tree | None = None
    weight: torch.Tensor | None = None
    aux: Any = None
    grad_calls: int | None = None

    def to_dict(self) -> dict:
        """A plain dict of the fields (tensors, trees, the step int), ready for torch.save."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "MixingState":
        """Inverse of `to_dict`; ValueError naming missing or unknown keys."""
        names = {f.name for f in fields(cls)}
        required = {"params", "grads", "step", "bytes_sent"}
        missing, unknown = required - set(d), set(d) - names
        if missing or unknown:
            raise ValueError(f"not a MixingState dict: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
        return cls(**d)


__all__ = ["MixingState"]
