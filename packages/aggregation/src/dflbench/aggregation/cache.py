"""Neighbour caches of AEDFL (Sec. 3, Fig. 2): the latest model each device received from each in-neighbour.

One structure serves every host: R rows (the devices hosted here: all D in a simulator, one on a torch.distributed
rank) by K slots, stacked into tensors

    models [R, K, P], pruned [R, K, ceil(P / 8)] uint8, stamp [R, K] long, loss [R, K], samples [R, K],
    rate [R, K] (float64), valid [R, K] bool, aggregated [R, K] bool.

`pruned` holds each slot's mask packed eight entries to a byte, inverted (bit set: the sender pruned the entry), so
the masks take P / 8 bytes a slot and an empty slot's bytes stay zero: the models and masks of slots that never
received a model are never written, and the operating system does not back them with memory (1,000 LeNet-5 devices
with 10 slots each: 1.78 GB of models, 56 MB of masks instead of 444 MB as bools). `read` unpacks the rows it returns.

Slot k of row r holds the k-th in-neighbour of its device (ascending device index, `in_neighbor_slots`); K is the
largest in-degree of the whole graph, so a device with fewer in-neighbours has trailing padding slots that are never
valid, and every host of the same graph lays caches out alike. An empty slot holds the zero model, an all-True mask,
stamp 0, loss 1 and 0 samples (its weight is 0 wherever it is used).

Staleness (AEDFL Sec. 4.1-4.2): a model of device j cached on device i carries the stamp t_j = the number of local
updates device i had executed when the model arrived ("t_j ... representing the number of local updates executed on
Device i when receiving m_j^{t_j}", Sec. 4.1), and its staleness at device i's t_i-th update is

    delta_t_{i,j} = t_i - t_j                                                     (eq. 4.6, `staleness`)

This is the RECEIVER's counter, as the paper defines it; it needs no agreement between devices' clocks or counters
(it is read where the model is used), and it is >= 0. The sender's own update count travels with a message as its
version but is not the staleness.

`put` replaces one slot atomically: the model is validated first (shape, dtype, finite values, 0/1 mask, finite
non-negative loss, integer sample count >= 1; a rejected model raises ValueError and leaves the slot untouched), then
every field of the slot is written under the cache's lock, so `read`, which takes the same lock, sees either the
whole old entry or the whole new one. Where a receiver thread writes while the training loop reads (the runtime,
`concurrent=True`), `read` always copies under the lock; a single-threaded host (the simulator) reading every row at
once gets views of the cache, no copy.
"""

from __future__ import annotations

import math
import mmap
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .flat import FlatSpec, flatten_state


@dataclass(frozen=True)
class NeighborSlots:
    """In-neighbour slot table of the devices `rows` [R] on a graph of n devices: `neighbors[r, k]` is the device
    cached in slot k of row r (-1: padding), `slot_of[r, j]` the slot of device j in row r (-1: j does not send to
    row r's device)."""

    rows: torch.Tensor               # [R] long
    neighbors: torch.Tensor          # [R, K] long
    slot_of: torch.Tensor            # [R, n] long

    @property
    def K(self) -> int:
        return int(self.neighbors.shape[1])


def in_neighbor_slots(adjacency: torch.Tensor, rows: Sequence[int] | torch.Tensor | None = None) -> NeighborSlots:
    """The slot table of devices `rows` (default: all) for `adjacency [n, n]` (adjacency[i, j] iff j sends to i;
    self-loops ignored). Slot k of device i holds its k-th in-neighbour in ascending order; K = the largest
    in-degree over all n devices."""
    adj = torch.as_tensor(adjacency)
    if adj.dim() != 2 or adj.shape[0] != adj.shape[1] or adj.dtype != torch.bool:
        raise ValueError(f"in_neighbor_slots: adjacency must be a square bool matrix, got {tuple(adj.shape)} "
                         f"{adj.dtype}; pass topology.adjacency")
    n = adj.shape[0]
    adj = adj.cpu().clone()
    adj.fill_diagonal_(False)
    rows = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.long).reshape(-1)
    if rows.numel() and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"in_neighbor_slots: rows must be devices 0..{n - 1}, got {rows.tolist()}")
    K = int(adj.sum(1).max())
    sub = adj[rows]                                                   # [R, n]
    rank = sub.long().cumsum(1) - 1
    slot_of = torch.where(sub, rank, torch.full_like(rank, -1))
    neighbors = torch.full((len(rows), K), -1, dtype=torch.long)
    r, j = sub.nonzero(as_tuple=True)
    neighbors[r, slot_of[r, j]] = j
    return NeighborSlots(rows, neighbors, slot_of)


@dataclass(frozen=True)
class CacheView:
    """A consistent read of some rows (`NeighborCache.read`): per-slot tensors `[B, K]`, models `[B, K, P]`,
    masks `[B, K, P]` (None unless asked for), and the slots' write counts `seq` for `mark_aggregated`."""

    models: torch.Tensor
    masks: torch.Tensor | None
    stamp: torch.Tensor
    loss: torch.Tensor
    samples: torch.Tensor
    rate: torch.Tensor
    valid: torch.Tensor
    aggregated: torch.Tensor
    seq: torch.Tensor


class NeighborCache:
    """The stacked caches of the devices in `slots` for flat models laid out by `spec` (module docstring)."""

    def __init__(self, slots: NeighborSlots, spec: FlatSpec, device=None, dtype: torch.dtype = torch.float32,
                 concurrent: bool = False):
        self.slots, self.spec, self.dtype, self.concurrent = slots, spec, dtype, concurrent
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        R, K, P = len(slots.rows), slots.K, spec.numel
        self.models = _untouched_zeros((R, K, P), dtype, self.device)
        self.pruned = _untouched_zeros((R, K, (P + 7) // 8), torch.uint8, self.device)
        self.stamp = torch.zeros(R, K, dtype=torch.long)
        self.loss = torch.ones(R, K, dtype=torch.float64)
        self.samples = torch.zeros(R, K, dtype=torch.float64)
        self.rate = torch.zeros(R, K, dtype=torch.float64)
        self.valid = torch.zeros(R, K, dtype=torch.bool)
        self.aggregated = torch.zeros(R, K, dtype=torch.bool)
        self.seq = torch.zeros(R, K, dtype=torch.long)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        """The cache without its lock (a pickled copy, e.g. a simulator checkpoint, gets a fresh one)."""
        return {k: v for k, v in vars(self).items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()

    @property
    def K(self) -> int:
        return self.slots.K

    @property
    def nbytes(self) -> int:
        """Memory of the cached models and masks: R * K * (P * element size + ceil(P / 8) bytes of packed mask)."""
        return self.models.shape[0] * self.K * (self.spec.nbytes(self.dtype) + self.pruned.shape[-1])

    @property
    def masks(self) -> torch.Tensor:
        """Every slot's mask `[R, K, P]` bool (unpacked: a copy)."""
        return unpack_mask(self.pruned, self.spec.numel)

    def put(self, row: int, src: int, model, *, stamp: int, loss: float, samples: int, mask=None,
            rate: float | None = None) -> None:
        """Validate the model device `src` sent to row `row`'s device and replace its slot atomically. `stamp` is
        the receiver's update count now (module docstring), `rate` the sender's pruning rate (None: 0). `model`
        and `mask` are flat `[P]` tensors or state dicts of `spec`. Raises ValueError (slot unchanged) for a bad
        model or a sender that is not an in-neighbour."""
        k = int(self.slots.slot_of[row, src]) if 0 <= src < self.slots.slot_of.shape[1] else -1
        if k < 0:
            raise ValueError(f"device {src} is not an in-neighbour of device {int(self.slots.rows[row])} (its "
                             f"in-neighbours: {[j for j in self.slots.neighbors[row].tolist() if j >= 0]})")
        flat = self._validated_model(src, model)
        flat_mask = self._validated_mask(src, mask)
        stamp = _int(stamp, "stamp")
        loss = _finite(loss, "loss", nonneg=True)
        samples = _int(samples, "samples", low=1)
        rate = 0.0 if rate is None else _finite(rate, "rate", nonneg=True)
        if rate > 1:
            raise ValueError(f"rejected model from device {src}: rate must be in [0, 1], got {rate}")
        with self._lock:
            self.models[row, k] = flat
            self.pruned[row, k] = 0 if flat_mask is True else pack_pruned(flat_mask)
            self.stamp[row, k] = stamp
            self.loss[row, k] = loss
            self.samples[row, k] = samples
            self.rate[row, k] = rate
            self.valid[row, k] = True
            self.aggregated[row, k] = False
            self.seq[row, k] += 1

    def read(self, rows: torch.Tensor, masks: bool = True) -> CacheView:
        """The slots of `rows` [B] (distinct row indices) as one consistent view (module docstring)."""
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        everyone = len(rows) == self.models.shape[0] and bool((rows == torch.arange(len(rows))).all())
        with self._lock:
            if everyone and not self.concurrent:                       # no gather when all rows
                models, packed = self.models, self.pruned
            else:                                                      # indexing copies
                dev_rows = rows.to(self.device)
                models, packed = self.models[dev_rows], self.pruned[dev_rows]
            mask = unpack_mask(packed, self.spec.numel) if masks else None
            return CacheView(models, mask, self.stamp[rows], self.loss[rows], self.samples[rows], self.rate[rows],
                             self.valid[rows], self.aggregated[rows], self.seq[rows])

    def mark_aggregated(self, rows: torch.Tensor, chosen: torch.Tensor, seq: torch.Tensor) -> None:
        """Flag the slots `chosen [B, K]` of `rows` as aggregated, unless a new model replaced them after the read
        that returned `seq` (a later `put` clears the flag)."""
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        with self._lock:
            self.aggregated[rows] |= chosen & (self.seq[rows] == seq)

    def _validated_model(self, src: int, model) -> torch.Tensor:
        who = f"model from device {src}"
        if isinstance(model, Mapping):
            try:
                self.spec.check_state(model)
            except ValueError as err:
                raise ValueError(f"rejected {who}: {err}") from None
            flat = flatten_state(model, self.spec, dtype=self.dtype)
        elif torch.is_tensor(model):
            if tuple(model.shape) != (self.spec.numel,) or model.dtype != self.dtype:
                raise ValueError(f"rejected {who}: flat model must be [{self.spec.numel}] {self.dtype}, got "
                                 f"{list(model.shape)} {model.dtype}")
            flat = model
        else:
            raise ValueError(f"rejected {who}: expected a state dict or a flat tensor, got {type(model).__name__}")
        if not (torch.isfinite(flat.sum()) or torch.isfinite(flat).all()):    # a finite sum: every entry finite
            raise ValueError(f"rejected {who}: it contains NaN or infinite values")
        return flat.detach()

    def _validated_mask(self, src: int, mask) -> torch.Tensor | bool:
        who = f"mask from device {src}"
        if mask is None:
            return True
        if isinstance(mask, Mapping):
            float_spec = FlatSpec(self.spec.names, self.spec.shapes, tuple(torch.float32 for _ in self.spec.names))
            try:
                mask = flatten_state({k: torch.as_tensor(v).to(torch.float32) for k, v in mask.items()}, float_spec)
            except ValueError as err:
                raise ValueError(f"rejected {who}: {err}") from None
        if not torch.is_tensor(mask) or tuple(mask.shape) != (self.spec.numel,):
            raise ValueError(f"rejected {who}: expected [{self.spec.numel}] values or a state dict of masks")
        if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"rejected {who}: mask values must be 0 or 1")
        return mask.detach().to(torch.bool)


_BITS = 1 << torch.arange(8, dtype=torch.uint8)


def _untouched_zeros(shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeros whose pages are not written: on CPU a private anonymous memory map, which the kernel backs with a zeroed
    4 kB page on first write (reads see the shared zero page), so memory grows with the slots actually filled
    (torch.zeros writes every page; numpy's calloc advises huge pages, and one 177 kB slot write then costs 2 MB; a
    shared map, Python's default, commits a page on every read of an empty slot)."""
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if device.type != "cpu" or nbytes == 0:
        return torch.zeros(shape, dtype=dtype, device=device)
    private = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return torch.frombuffer(private, dtype=dtype).view(shape)


def pack_pruned(mask: torch.Tensor) -> torch.Tensor:
    """A keep-mask `[..., P]` bool as its pruned entries packed into `[..., ceil(P / 8)]` uint8 (bit b of byte j:
    entry 8 j + b was pruned)."""
    pad = -mask.shape[-1] % 8
    pruned = torch.nn.functional.pad((~mask).to(torch.uint8), (0, pad)).view(*mask.shape[:-1], -1, 8)
    return (pruned * _BITS.to(mask.device)).sum(-1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """The keep-masks `[..., numel]` bool of `pack_pruned`'s bytes `[..., ceil(numel / 8)]`."""
    pruned = torch.bitwise_and(packed.unsqueeze(-1), _BITS.to(packed.device)) != 0
    return ~pruned.view(*packed.shape[:-1], -1)[..., :numel]


def _int(x, what: str, low: int = 0) -> int:
    if isinstance(x, bool) or not float(x).is_integer() or int(x) < low:
        raise ValueError(f"rejected model: {what} must be an integer >= {low}, got {x!r}")
    return int(x)


def _finite(x, what: str, nonneg: bool = False) -> float:
    x = float(x)
    if not math.isfinite(x) or (nonneg and x < 0):
        raise ValueError(f"rejected model: {what} must be finite{' and >= 0' if nonneg else ''}, got {x}")
    return x
