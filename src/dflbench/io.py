"""Atomic result and checkpoint writing: write to a temporary file in the same folder, then rename; and the checks
of the files and folders results go to or come from.

A crash mid-write leaves the previous file intact, never a truncated one. JSON is strict: a NaN is never written
(`atomic_write_json` raises ValueError instead) and an infinity is the string "inf". A file a user or an earlier
run left is read by `read_json` / `read_tensors`, which turn a damaged or foreign file into one UserError naming it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from dflbench.errors import UserError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """`obj` as strict JSON: an infinite float (a setting such as an unbounded threshold) is written as the string
    "inf" / "-inf"; a NaN is refused with a ValueError naming where it is (a diverged result must be caught before
    it is written, never stored as a bare NaN)."""
    return atomic_write_text(path, json.dumps(_strict(obj), indent=2, default=_jsonable, allow_nan=False) + "\n")


def _strict(obj: Any, where: str = "") -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        if math.isnan(obj):
            raise ValueError(f"NaN at {where or 'the top'} is not JSON compliant")
        return "inf" if obj > 0 else "-inf"
    if isinstance(obj, Mapping):
        return {k: _strict(v, f"{where}.{k}".lstrip(".")) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    return obj


def atomic_write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    rows = list(rows)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def writable_folder(path: str | Path, option: str = "--out") -> Path:
    """Create folder `path` (with its parents) and write and delete a probe file in it, so that an output folder
    that cannot hold results is refused before any work is done; UserError naming `option` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder; give a folder path (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot write there ({exc.strerror or exc}); give a folder you can write "
                        "to") from None
    return path


def read_json(path: str | Path, what: str, fix: str) -> Any:
    """The JSON document in `path` (strict: NaN/Infinity are refused); a file that cannot be read or parsed is a
    UserError naming it as `what` (e.g. "the results to resume from") with `fix`, the way out."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path} ({what}) is not valid JSON ({exc}); {fix}") from None


def read_results_file(out: str | Path, key: str) -> dict | None:
    """`out`/results.json if an earlier run wrote one, else None: a dict with a `config` table and `runs`, each run
    naming its `key` ("method", "algorithm"); anything else is a UserError naming the file."""
    path = Path(out) / "results.json"
    if not path.is_file():
        return None
    fix = "move it away, give another --out, or replace it with --overwrite"
    doc = read_json(path, "the results of an earlier run", fix)
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not (isinstance(doc, dict) and isinstance(doc.get("config"), dict) and isinstance(runs, list)
            and all(isinstance(r, dict) and isinstance(r.get(key), str) for r in runs)):
        raise UserError(f"{path} is not a dflbench results.json (it needs a config table and runs, each with "
                        f"its {key}); {fix}")
    return doc


def as_json(obj: Any) -> Any:
    """`obj` as `atomic_write_json` would store it, read back: dataclasses and tuples as JSON objects and lists."""
    return json.loads(json.dumps(obj, default=_jsonable))


def differing_fields(ours: Mapping, theirs: Mapping, ignore: Iterable[str] = ()) -> list[str]:
    """The keys, less `ignore`, whose values differ between two configs (`ours` as its JSON form), sorted."""
    ours = as_json(ours)
    skip = set(ignore)
    return sorted(k for k in ours.keys() | theirs.keys() if k not in skip and ours.get(k) != theirs.get(k))


def keep_earlier_runs(results: dict, previous: dict | None, key: str, names: str) -> dict:
    """`results` followed by the runs of `previous` (a results.json of the same configuration) whose `key` it does
    not hold, its `config[names]` list naming them all: what a run into a folder of finished runs writes, while it
    runs and after, so that none of them is dropped."""
    have = {r[key] for r in results["runs"]}
    earlier = [r for r in (previous or {}).get("runs", []) if r[key] not in have]
    if not earlier:
        return results
    every = list(dict.fromkeys([*results["config"][names], *(r[key] for r in earlier)]))
    return {**results, "config": {**results["config"], names: every}, "runs": [*results["runs"], *earlier]}


def _no_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def read_tensors(path: str | Path, what: str, fix: str) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU: tensors and plain containers only, so no code in the file
    runs. A truncated, foreign or unsafe file is a UserError naming it as `what` with `fix`, the way out."""
    path = Path(path)
    try:
        with warnings.catch_warnings():   # a foreign pickle's protocol notice: the error below says what is wrong
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises zip, pickle, EOF and runtime errors for such files
        reason = ("it holds objects other than tensors, refused because loading them could run code"
                  if "Weights only load failed" in str(exc) else f"{type(exc).__name__}: "
                  f"{(str(exc).splitlines() or [''])[0]}")
        raise UserError(f"{path} ({what}) cannot be read: {reason}; {fix}") from None


def non_finite(obj: Any, where: str = "") -> str | None:
    """The path (e.g. "history[3].test_loss") of the first NaN or infinite float in a record of dicts, lists and
    numbers, or None: what a strict JSON writer would refuse."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "the value")
    items = obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = non_finite(value, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found is not None:
            return found
    return None


def _jsonable(obj: Any):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "__dataclass_fields__"):
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
