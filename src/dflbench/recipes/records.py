"""The typed records of results.json's `runs`: one AEDFL method's run (`MethodRun`, from the simulator,
`recipes/aedfl.py`, or the distributed runtime, `recipes/aedfl_distributed.py`) and one P2P-FT algorithm's run
(`AlgorithmRun`, `recipes/p2pft_results.run_record`).

`to_dict()` is the JSON record, fields in declaration order; an optional field left None (a key only some runs
carry) is left out. `from_dict(record)` reads a recorded run back: a field a record lacks holds None (a key added
after the run was recorded, e.g. `eval_samples`), a key no field names is a ValueError naming it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar


class _Record:
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not (f.name in self.OPTIONAL and getattr(self, f.name) is None)}

    @classmethod
    def from_dict(cls, record: dict[str, Any]):
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in record if k not in names]
        if unknown:
            raise ValueError(f"a {cls.__name__} record has no field {', '.join(map(repr, unknown))}")
        return cls(**{k: record.get(k) for k in names})


@dataclass
class MethodRun(_Record):
    """One AEDFL method's run: accuracies (of the device models' mean and of their consensus model; a server
    method's global model in both), times to `target_acc` (virtual s; wall s in the distributed runtime), plateau
    (`convergence`), cost (MFLOPs, bytes, messages), how it stopped, its options and its evaluation history."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("honest_accuracy", "diagnostics", "personalized_accuracy", "runtime",
                                           "failed_nodes", "partial", "per_node", "code")

    method: str
    accuracy: float
    consensus_accuracy: float | None
    time_to_target: float | None
    consensus_time_to_target: float | None
    convergence: dict | None
    device_accuracy: list[float] | None
    mflops: float
    bytes_sent: int
    virtual_time: float
    eval_samples: int | None
    wall_time: float
    device_steps: int
    steps_per_s: float
    messages: int
    dropped: int
    stop_reason: str
    final_consensus: float | None
    final_mask_disagreement: float | None
    options: dict
    history: list[dict]
    honest_accuracy: float | None = None           # with corrupt devices: the honest devices' mean accuracy
    diagnostics: dict | None = None                # AEDFL's module series (`dflbench.methods.aedfl.diagnostics`)
    personalized_accuracy: float | None = None     # DisPFL: each device's model on its own test split
    runtime: str | None = None                     # "distributed" for a run of the torch.distributed runtime
    failed_nodes: list[int] | None = None
    partial: bool | None = None                    # the run stopped early; resume runs it again
    per_node: list[dict] | None = None
    code: dict | None = None    # the code this run ran (`code_provenance`); a resumed results.json holds several


@dataclass
class AlgorithmRun(_Record):
    """One P2P-FT algorithm's run: per-node and mean test accuracy (a single model's repeated for every node), its
    history, cost, the mixing matrices it used and the seeds it was stacked with."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("code",)

    algorithm: str
    mixing: str
    matrices: dict[str, list]
    node_accuracy: list[float]
    mean_accuracy: float
    single_model: bool
    history: list[dict]
    wall_time_s: float
    stacked_seeds: list[int]
    bytes_sent: int
    bytes_sent_per_node: list[int]
    steps: int
    steps_per_epoch: int
    code: dict | None = None    # the code this run ran (`code_provenance`), as MethodRun's
