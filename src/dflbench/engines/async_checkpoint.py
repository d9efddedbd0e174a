"""Checkpoints of an `AsyncSimulator` run: the state between two events, written every `every` wall seconds, so a
run that is killed (a crash, a machine that goes away, the end of a working session) resumes from its last
checkpoint and ends where the uninterrupted run ends, with the same history (bit for bit, up to the wall-clock
columns).

What is saved: the simulator's mutable state (`MUTABLE`: the device models, counters, clock, event queue, the history
so far, ...) and the method's whole state (its attributes, set by its constructor, `setup` and the events since), in
one pickle, so that objects they share stay shared. What is not saved is what the run's configuration rebuilds: the
simulator and its other attributes (data, model structure, topology, profiles, evaluation set, ...), and their
attributes one level down, are written as references (pickle's `persistent_id`) and resolved against the resuming
simulator, which is built from the same configuration (the `meta` fingerprint a checkpoint carries is compared
before anything is restored). Tensors are stored by `torch.save` in one list, so a view stays a view of its base.
All randomness is counter-based (`async_rng`, keyed by device and update count): there is no generator state.
"""

from __future__ import annotations

import io
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dflbench.errors import UserError
from dflbench.io import as_json, atomic_torch_save, differing_fields, read_tensors

FORMAT = 1
MUTABLE = ("x", "t", "loss", "cost_fraction", "alive", "epoch", "_rejoins", "coordinator", "now", "bytes_sent",
           "messages", "dropped", "device_steps", "_finished", "_queue", "_seq", "result")
_VALUES = (int, float, bool, str, bytes, type(None), tuple, frozenset)   # immutable: pickled, never referenced


def _references(sim) -> dict[int, tuple[str, ...]]:
    """id -> attribute path of the objects a resuming simulator rebuilds: the simulator, its method (whose attributes
    are restored into it), its attributes outside `MUTABLE`, and theirs one level down."""
    refs: dict[int, tuple[str, ...]] = {id(sim): (), id(sim.method): ("method",)}
    for name, value in vars(sim).items():
        if name in MUTABLE or name == "method" or isinstance(value, _VALUES):
            continue
        refs.setdefault(id(value), (name,))
        for sub, inner in getattr(value, "__dict__", {}).items():
            if not isinstance(inner, _VALUES):
                refs.setdefault(id(inner), (name, sub))
    return refs


class _Pickler(pickle.Pickler):
    def __init__(self, file, refs: dict[int, tuple[str, ...]]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.refs, self.tensors, self.index = refs, [], {}

    def persistent_id(self, obj):
        ref = self.refs.get(id(obj))
        if ref is not None:
            return ("ref", ref)
        if isinstance(obj, torch.Tensor):
            if id(obj) not in self.index:
                self.index[id(obj)] = len(self.tensors)
                self.tensors.append(obj)
            return ("tensor", self.index[id(obj)])
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, sim, tensors: list[torch.Tensor]):
        super().__init__(file)
        self.sim, self.tensors = sim, tensors

    def find_class(self, module, name):
        """Only dflbench's own classes, torch.Size / device and dtypes: the state objects a checkpoint holds (no
        function is ever called while loading one)."""
        if module == "dflbench" or module.startswith("dflbench.") or module == "torch":
            obj = super().find_class(module, name)
            if isinstance(obj, torch.dtype) or (isinstance(obj, type) and (
                    module != "torch" or obj in (torch.Size, torch.device))):
                return obj
        raise pickle.UnpicklingError(f"{module}.{name} is not a state object of a dflbench simulator")

    def persistent_load(self, pid):
        kind, key = pid
        if kind == "tensor":
            return self.tensors[key]
        obj = self.sim
        for name in key:
            obj = getattr(obj, name)
        return obj


class Checkpoint:
    """Where and how often a run checkpoints: `path` (one file, replaced atomically), every `every` wall seconds (at
    the first event boundary after), identified by `meta` (a JSON-like dict: the run's configuration, method, options
    and code). A checkpoint whose `meta` differs is refused with the fields that differ, never resumed from."""

    def __init__(self, path: str | Path, meta: dict, every: float = 600.0):
        if not every > 0:
            raise UserError(f"checkpoint interval must be positive (wall seconds), got {every}")
        self.path, self.meta, self.every = Path(path), as_json(meta), float(every)
        self._last = time.perf_counter()
        self._failing = False

    def due(self) -> bool:
        return time.perf_counter() - self._last >= self.every

    def save(self, sim) -> Path | None:
        """Write `sim`'s state now (module docstring) and restart the interval. A file that cannot be written (a
        full disk) is one warning line on stderr (not repeated until a write succeeds), and the run goes on: the
        checkpoint before it, if any, stays."""
        buf = io.BytesIO()
        pickler = _Pickler(buf, _references(sim))
        pickler.dump({"sim": {k: getattr(sim, k) for k in MUTABLE}, "method": vars(sim.method)})
        state = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        self._last = time.perf_counter()
        try:
            path = atomic_torch_save(self.path, {"format": FORMAT, "meta": self.meta, "state": state,
                                                 "tensors": pickler.tensors,
                                                 "devices": [str(t.device) for t in pickler.tensors],
                                                 "wall": time.perf_counter() - sim._wall0})
        except OSError as exc:
            if not self._failing:                   # one line until a write succeeds again
                print(f"warning: the checkpoint {self.path} could not be written ({type(exc).__name__}: {exc}); "
                      "the run goes on, and a crash would continue from the checkpoint before, if any",
                      file=sys.stderr)
            self._failing = True
            return None
        self._failing = False
        return path

    def restore(self, sim) -> bool:
        """Load the checkpoint at `path` into `sim` (built from the same configuration, its method not set up) and
        return True; False when there is none. The simulator's wall clock continues from the checkpoint's."""
        if not self.path.exists():
            return False
        fix = f"delete {self.path} to run this method from the start"
        blob = read_tensors(self.path, "checkpoint", fix)
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise UserError(f"{self.path} is not a simulator checkpoint of this version of dflbench: {fix}")
        differ = [f"{key}.{field}" if isinstance(self.meta.get(key), dict) else key
                  for key in differing_fields(self.meta, blob["meta"])
                  for field in (differing_fields(self.meta[key], blob["meta"].get(key) or {})
                                if isinstance(self.meta.get(key), dict) else [None])]
        if differ:
            raise UserError(f"{self.path} is the checkpoint of another run (differs in {', '.join(differ)}): {fix}")
        tensors = [t.to(device) for t, device in zip(blob["tensors"], blob["devices"])]
        try:
            state = _Unpickler(io.BytesIO(blob["state"].numpy().tobytes()), sim, tensors).load()
        except (pickle.UnpicklingError, AttributeError, ImportError, EOFError) as exc:
            raise UserError(f"{self.path} cannot be resumed from ({type(exc).__name__}: {exc}): {fix}") from None
        vars(sim).update(state["sim"])
        vars(sim.method).update(state["method"])
        sim._wall0 = time.perf_counter() - blob["wall"]
        self._last = time.perf_counter()
        return True

    def clear(self) -> None:
        """Remove the checkpoint (the run's result is written)."""
        self.path.unlink(missing_ok=True)


def meta_of(config: dict, method: str, options: dict, code: dict) -> dict[str, Any]:
    """The fingerprint of a checkpoint: the run configuration `config`, the method and its resolved options, and the
    code's version and commit (a checkpoint of other code is not resumed)."""
    return as_json({"config": config, "method": method, "options": options,
                    "code": {k: code.get(k) for k in ("version", "commit")}})
