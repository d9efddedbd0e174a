"""The typed run records (`recipes.records`): every AEDFL run recorded in docs/results reads back unchanged, a key
no field names is refused, an optional field left None is left out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dflbench.recipes.records import AlgorithmRun, MethodRun

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def _recorded_runs():
    for path in sorted(RESULTS.glob("aedfl-*/**/results.json")):
        doc = json.loads(path.read_text())
        for seed in [doc] if "runs" in doc else doc.get("per_seed", []):
            for run in seed["runs"]:
                yield path, run


def test_every_recorded_aedfl_run_reads_back():
    runs = list(_recorded_runs())
    assert len(runs) > 20
    full = 0
    for path, run in runs:
        back = MethodRun.from_dict(run).to_dict()
        assert {k: v for k, v in back.items() if k in run} == run, path     # nothing read is changed
        assert all(back[k] is None for k in back.keys() - run.keys()), path  # a key added later reads as None
        full += back == run
    assert full > 0                                                           # today's records: the same dict


def test_a_key_no_field_names_is_refused():
    run = next(r for _, r in _recorded_runs())
    with pytest.raises(ValueError, match="no field 'acuracy'"):
        MethodRun.from_dict({**run, "acuracy": 0.5})
    with pytest.raises(ValueError, match="no field 'method'"):
        AlgorithmRun.from_dict(run)


def test_an_optional_field_left_none_is_left_out():
    run = next(r for _, r in _recorded_runs() if "diagnostics" not in r and "runtime" not in r)
    record = MethodRun.from_dict(run)
    assert "diagnostics" not in record.to_dict() and "per_node" not in record.to_dict()
    record.runtime, record.partial = "distributed", True
    assert list(record.to_dict())[-2:] == ["runtime", "partial"]
