"""A run killed after a checkpoint and resumed from it ends exactly where the uninterrupted run ends (every method)."""

import pytest
import torch

from dflbench.engines.async_checkpoint import Checkpoint
from dflbench.engines.coordinator import FaultConfig
from dflbench.errors import UserError
from dflbench.methods.registry import list_methods, make_method


class Killed(Exception):
    pass


class KillAfter(Checkpoint):
    """Saves at the `at`-th event boundary, then raises `Killed` (the process dies right after its checkpoint)."""

    def __init__(self, path, at):
        super().__init__(path, {"run": 1})
        self.at, self.seen = at, 0

    def due(self):
        self.seen += 1
        return self.seen == self.at

    def save(self, sim):
        super().save(sim)
        raise Killed


def history(res):
    return [{k: v for k, v in h.items() if k != "wall"} for h in res.history]


class Counting(Checkpoint):
    """Never saves; counts the event boundaries of a run."""

    def __init__(self, path):
        super().__init__(path, {"run": 1})
        self.seen = 0

    def due(self):
        self.seen += 1
        return False


FAULTS = {"none": None, "faults": FaultConfig(schedule=((1, 0.02, 0.2),), prob=0.2, downtime=0.1, corrupt=(2,)),
          "labels": FaultConfig(corrupt=(0,), corrupt_mode="labels")}
CASES = [(name, "none") for name in list_methods()] + [(name, kind) for name in ("aedfl", "fedbuff", "ad-psgd")
                                                        for kind in ("faults", "labels")]


@pytest.mark.parametrize(("name", "faults"), CASES)
def test_resumed_run_equals_uninterrupted(aedfl_sim, small_options, tmp_path, name, faults):
    """Killed at a third of its events, resumed, killed again (at two thirds of the first run's count, from the
    resumed process's own count), resumed again: the same history, models, counters, events and MFP as one run;
    with failures, rejoins and harmful devices too."""
    cfg = {"max_updates": 6, "faults": FAULTS[faults]}
    path = tmp_path / "ck.pt"
    ref = aedfl_sim(make_method(name, small_options(name)), **cfg)
    counting = Counting(path)
    want = ref.run(checkpoint=counting)
    assert counting.seen > 6 and not path.exists()
    if faults == "faults":
        assert {"fail", "rejoin"} <= {e.what for e in want.events}
    for at in (counting.seen // 3, counting.seen // 3):
        sim = aedfl_sim(make_method(name, small_options(name)), **cfg)
        with pytest.raises(Killed):
            sim.run(checkpoint=KillAfter(path, at))
    again = aedfl_sim(make_method(name, small_options(name)), **cfg)
    got = again.run(checkpoint=Checkpoint(path, {"run": 1}))
    assert history(got) == history(want)
    assert torch.equal(again.x, ref.x) and torch.equal(again.t, ref.t)
    assert (got.bytes_sent, got.device_steps, got.stop_reason, got.device_accuracy) == \
        (want.bytes_sent, want.device_steps, want.stop_reason, want.device_accuracy)
    assert got.events == want.events
    assert again.method.mflops(again) == ref.method.mflops(ref)


def test_a_checkpoint_runs_no_foreign_code(aedfl_sim, small_options, tmp_path, monkeypatch):
    """A state pickle naming anything but dflbench's classes (here os.system) is refused before it is called."""
    import dflbench.engines.async_checkpoint as ck

    class Evil:
        def __reduce__(self):
            import os
            return os.system, ("echo owned > " + str(tmp_path / "owned"),)

    path = tmp_path / "ck.pt"
    real = ck._Pickler.dump
    monkeypatch.setattr(ck._Pickler, "dump", lambda self, obj: real(self, {**obj, "evil": Evil()}))
    sim = aedfl_sim(make_method("fedavg", small_options("fedavg")))
    with pytest.raises(Killed):
        sim.run(checkpoint=KillAfter(path, 3))
    monkeypatch.undo()
    again = aedfl_sim(make_method("fedavg", small_options("fedavg")))
    with pytest.raises(UserError, match="posix.system is not a state object of a dflbench simulator.*delete"):
        again.run(checkpoint=Checkpoint(path, {"run": 1}))
    assert not (tmp_path / "owned").exists()


def test_a_checkpoint_that_cannot_be_written_warns_and_the_run_goes_on(aedfl_sim, small_options, tmp_path,
                                                                     monkeypatch, capsys):
    import dflbench.engines.async_checkpoint as ck

    def full(path, obj):
        raise OSError(28, "No space left on device")

    want = aedfl_sim(make_method("fedbuff", small_options("fedbuff"))).run()
    monkeypatch.setattr(ck, "atomic_torch_save", full)
    every = Checkpoint(tmp_path / "ck.pt", {"run": 1}, every=1e-9)
    got = aedfl_sim(make_method("fedbuff", small_options("fedbuff"))).run(checkpoint=every)
    assert history(got) == history(want)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"warning: the checkpoint {tmp_path / 'ck.pt'} could not be written (OSError: [Errno 28] No "
                     "space left on device); the run goes on, and a crash would continue from the checkpoint before, "
                     "if any"]
