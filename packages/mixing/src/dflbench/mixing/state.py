"""The state every algorithm carries between steps: tensors only, plus the step counter.

Invariant after `init` and after every `step`: `grads` = grad_fn(params) + weight_decay * params, the
(possibly stochastic) local gradients at the current parameters, and `aux` is what grad_fn returned beside
them at that call (e.g. per-node losses), or None. `bytes_sent[i]` counts the bytes node i has sent so far;
`grad_calls` the grad_fn calls since `init` (None in states saved before it was recorded).
`to_dict` / `from_dict` give a plain dict for `torch.save` / `torch.load` checkpoints that resume bit-exactly.
`concat_states` / `MixingState.split` stack independent systems along the rows and back (batched seeds, run with a
`BlockCommunicator`): every per-node field is concatenated / sliced; step and grad_calls must agree.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from .tree import Tree, tree_map


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

    def split(self, blocks: int) -> list["MixingState"]:
        """The `blocks` equal row blocks of this state, each the state of one stacked system (inverse of
        `concat_states`); `aux` is split too when it is a tensor with a row per node."""
        n = self.bytes_sent.shape[0] // blocks
        if n * blocks != self.bytes_sent.shape[0]:
            raise ValueError(f"{self.bytes_sent.shape[0]} node rows do not split into {blocks} equal blocks")

        def part(value, b: int):
            if value is None or isinstance(value, int):
                return value
            if isinstance(value, torch.Tensor) and value.ndim == 0:
                raise ValueError("cannot split a scalar aux between stacked systems")
            return tree_map(lambda leaf: leaf[b * n:(b + 1) * n], value)

        return [MixingState(**{f.name: part(getattr(self, f.name), b) for f in fields(self)}) for b in range(blocks)]


def concat_states(states: list[MixingState]) -> MixingState:
    """Independent systems' states as one state, rows in order (step and grad_calls must agree)."""
    first = states[0]
    for s in states[1:]:
        if (s.step, s.grad_calls) != (first.step, first.grad_calls):
            raise ValueError(f"cannot stack states at steps {[(t.step, t.grad_calls) for t in states]}: they "
                             "must have taken the same steps")

    def cat(name: str):
        values = [getattr(s, name) for s in states]
        if name in ("step", "grad_calls"):
            return values[0]
        if any(v is None for v in values):
            if not all(v is None for v in values):
                raise ValueError(f"cannot stack states: {name} is set in some and not in others")
            return None
        return tree_map(lambda *leaves: torch.cat(leaves), *values)

    return MixingState(**{f.name: cat(f.name) for f in fields(MixingState)})


__all__ = ["MixingState", "concat_states"]
