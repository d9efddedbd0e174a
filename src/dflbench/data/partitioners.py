"""Partitioners: split training sample indices over n nodes, disjointly and reproducibly from a seed.

`classes`   class-disjoint contiguous ranges: the P2P-FT paper's Table II for 4 nodes on oxford-pets, flowers102,
            cifar10 and cifar100 (CIFAR-10 "7-10" read as 7-9), else an even contiguous split of the classes.
            `classes:ROW` forces Table II row ROW (e.g. `classes:cifar10` for a CIFAR-10 subset loaded by npz:).
`dirichlet:ALPHA` per class c, node shares p_c ~ Dir(alpha 1_n) (resampled until no node is empty).
`iid`       a seeded permutation cut into n near-equal parts.
`shards:K`  samples sorted by label, cut into n*K shards, each node gets K random shards (McMahan et al.).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from dflbench.errors import UserError
from dflbench.registry import Registry, option, option_doc

# Table II: inclusive class ranges per node, n = 4.
TABLE_II: dict[str, tuple[tuple[int, int], ...]] = {
    "oxford-pets": ((0, 4), (5, 19), (20, 29), (30, 36)),
    "flowers102": ((0, 19), (20, 39), (40, 79), (80, 101)),
    "cifar10": ((0, 1), (2, 3), (4, 6), (7, 9)),
    "cifar100": ((0, 9), (10, 19), (20, 74), (75, 99)),
}
DIRICHLET_MAX_TRIES = 100


@dataclass(frozen=True)
class Partition:
    """Disjoint per-node index arrays into the training set, with the spec that made them."""

    spec: str
    indices: tuple[np.ndarray, ...]

    @property
    def n(self) -> int:
        return len(self.indices)

    def sizes(self) -> list[int]:
        return [len(ix) for ix in self.indices]

    def histograms(self, labels, num_classes: int) -> np.ndarray:
        """[n, num_classes] counts of each class at each node."""
        labels = np.asarray(labels)
        return np.stack([np.bincount(labels[ix], minlength=num_classes) for ix in self.indices])


PARTITIONERS = Registry("split")


def register_partitioner(name: str, options: type | None = None):
    """Register `fn(options, labels, n, num_classes, rng, dataset) -> list of index arrays` under `name`.

    `options`: a frozen dataclass with one field, the `ARG` of the spec `name:ARG` (required unless it has a
    default); None for a partitioner that takes no argument, `fn(labels, n, num_classes, rng, dataset)`."""
    if options is not None and len(dataclasses.fields(options)) != 1:
        raise UserError(f"partitioner {name!r}: a split spec carries one argument, {options.__name__} has "
                        f"{len(dataclasses.fields(options))} fields")
    return PARTITIONERS.register(name, options=options)


def _spec_form(name: str) -> str:
    """'dirichlet:ALPHA', 'classes:[ROW]' (optional argument) or 'iid' (none)."""
    fields = PARTITIONERS.get(name).fields()
    if not fields:
        return name
    arg = fields[0].name.upper()
    return f"{name}:{arg}" if PARTITIONERS.get(name).defaults() == {} else f"{name}:[{arg}]"


def list_partitioners() -> list[str]:
    return sorted(_spec_form(k) for k in PARTITIONERS.list())


def parse_split(spec: str) -> tuple[str, Any]:
    """(partitioner name, its options instance) of split `spec` ("dirichlet:0.5"), checked without any data: a
    config checks its split with it before loading the dataset. UserError on a bad spec."""
    name, _, arg = spec.partition(":")
    if name not in PARTITIONERS:                                # listed as specs, with their arguments
        raise UserError(f"unknown split {spec!r}; valid: {', '.join(list_partitioners())}")
    fields = PARTITIONERS.get(name).fields()
    if not fields and arg:
        raise UserError(f"split {name!r} takes no argument, got {spec!r}")
    if fields and not arg and PARTITIONERS.get(name).defaults() == {}:
        raise UserError(f"split {name!r} needs an argument: {_spec_form(name)} ({option_doc(fields[0])})")
    try:
        return name, PARTITIONERS.options(name, {fields[0].name: arg} if arg else {})
    except ValueError as exc:
        raise UserError(f"{exc}; {_spec_form(name)} takes {option_doc(fields[0])}") from None


def partition(labels, n: int, spec: str = "classes", seed: int = 0, dataset: str | None = None,
              num_classes: int | None = None) -> Partition:
    """Split indices of `labels` over `n` nodes by `spec` (see module doc). Raises ValueError on a bad spec."""
    labels = np.asarray(labels)
    if n < 1:
        raise UserError(f"need at least 1 node, got {n}")
    name, options = parse_split(spec)
    c = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    parts = PARTITIONERS.make(name, options, labels, n, c, np.random.default_rng(seed), dataset)
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise UserError(f"split {spec!r} leaves nodes {empty} without samples; use fewer nodes or another split")
    return Partition(spec, tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts))


def class_ranges(n: int, num_classes: int, dataset: str | None = None) -> tuple[tuple[int, int], ...]:
    """Inclusive class ranges per node: Table II when it applies, else np.array_split of the classes."""
    if n == 4 and dataset in TABLE_II and TABLE_II[dataset][-1][1] == num_classes - 1:
        return TABLE_II[dataset]
    if n > num_classes:
        raise UserError(f"split 'classes' needs nodes <= classes, got {n} nodes for {num_classes} classes; "
                        "use dirichlet:ALPHA, iid or shards:K")
    return tuple((int(p[0]), int(p[-1])) for p in np.array_split(np.arange(num_classes), n))


@dataclass(frozen=True)
class ClassesOptions:
    row: str | None = option(None, "a Table II row to force (e.g. cifar10 for a CIFAR-10 subset loaded by npz:)")


@register_partitioner("classes", ClassesOptions)
def _classes(options, labels, n, c, rng, dataset):
    dataset = options.row or dataset
    if options.row:
        if options.row not in TABLE_II:
            raise UserError(f"classes:{options.row}: no such Table II row; valid: {', '.join(sorted(TABLE_II))}")
        rows = TABLE_II[options.row]
        if n != len(rows) or rows[-1][1] != c - 1:
            raise UserError(f"classes:{options.row} is Table II's split of {rows[-1][1] + 1} classes over "
                            f"{len(rows)} nodes; this run has {c} classes and {n} nodes")
    return [np.flatnonzero((labels >= lo) & (labels <= hi)) for lo, hi in class_ranges(n, c, dataset)]


@dataclass(frozen=True)
class DirichletOptions:
    alpha: float = option(doc="a positive float, the Dirichlet concentration, e.g. dirichlet:0.5")

    def __post_init__(self):
        if not self.alpha > 0:
            raise UserError(f"alpha must be positive, got {self.alpha}")


@register_partitioner("dirichlet", DirichletOptions)
def _dirichlet(options, labels, n, c, rng, dataset):
    for _ in range(DIRICHLET_MAX_TRIES):
        parts = [[] for _ in range(n)]
        for k in range(c):
            idx = rng.permutation(np.flatnonzero(labels == k))
            p = rng.dirichlet(np.full(n, options.alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        parts = [np.concatenate(p) for p in parts]
        if min(len(p) for p in parts) > 0:
            return parts
    raise UserError(f"dirichlet:{options.alpha} left a node empty in {DIRICHLET_MAX_TRIES} draws; use a larger "
                    "alpha or fewer nodes")


@register_partitioner("iid")
def _iid(labels, n, c, rng, dataset):
    return np.array_split(rng.permutation(len(labels)), n)


@dataclass(frozen=True)
class ShardsOptions:
    k: int = option(doc="a positive int, the shards per node, e.g. shards:2")

    def __post_init__(self):
        if not self.k > 0:
            raise UserError(f"K must be positive, got {self.k}")


@register_partitioner("shards", ShardsOptions)
def _shards(options, labels, n, c, rng, dataset):
    k = options.k
    if n * k > len(labels):
        raise UserError(f"shards:{k} with {n} nodes needs at least {n * k} samples, have {len(labels)}")
    shards = np.array_split(np.argsort(labels, kind="stable"), n * k)
    order = rng.permutation(n * k)
    return [np.concatenate([shards[s] for s in order[i * k:(i + 1) * k]]) for i in range(n)]
