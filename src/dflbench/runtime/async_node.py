"""Asynchronous AEDFL across processes (AEDFL Sec. 3, Algorithm 1): one device per rank, no lock-step.

Every local update is THE AEDFL step the simulator runs (`dflbench.methods.aedfl.step.AEDFLStep`, B = 1: this
rank's device), with whichever modules the method object enables: RL model selection (Sec. 4.1), dynamic weights
(eq. 4.6-4.8), pruning (Sec. 5); minibatches, policy samples and pruning probes are keyed by (device, update count)
as in the simulator, so the rank computes what the simulator computes for that device from the same cache.

Mechanism: `torch.distributed.rpc` (TensorPipe). A device pushes its model with `rpc_async` to ONE random
out-neighbour and never waits for it; the call lands in the receiver's RPC thread pool, which is the receiver
thread: it validates the model and replaces the sender's slot of the step's `NeighborCache` under the cache's lock
(atomic: the training loop sees the whole old or the whole new entry), stamped with the receiver's update count (the
staleness of `dflbench.aggregation.cache`). Deliveries of one sender are applied in its send order: the RPC thread
pool may run two of them out of order, and one older (by the sender's version) than the last applied is dropped.
Rank 0 additionally hosts the coordinator, a plain object reached by RPC: it hands out device indices
(`dflbench.engines.Coordinator`'s index table), receives heartbeats and answers each with the alive view, deems a
device failed when no beat came for `heartbeat_timeout_s` (measured on rank 0's clock, so host clocks need not
agree), and collects the final per-device metrics. Why RPC rather than gloo point-to-point with
receive-from-any-source: an RPC is one-sided (no matching pre-posted receive of a known size, so any sender may
deliver at any time, and the model travels as a tensor, metadata pickled beside it), and a dead peer fails only the
futures addressed to it, whereas a gloo pair broken by a dead rank poisons the process group and blocks any later
collective; the TCPStore would route every model through one server. Only the flat model tensor [P] and small
metadata (sender, version = its local update count, loss, sample count; with pruning the bool mask [P] and the
pruning rate) cross processes; training data never does. Sending overlaps the next update. Neighbours the
coordinator deems failed are not chosen; a send that fails is counted. The run ends after `max_updates` local
updates (or `time_budget_s`); each device reports its metrics to rank 0, which returns the gathered results.

A failure stops the run early, on every rank: the coordinator deems a device failed when no beat came for
`heartbeat_timeout_s` (it was killed, crashed or stopped), and a rank that receives SIGTERM or SIGINT (torchrun
sends SIGTERM to every rank as soon as one process dies; Ctrl-C sends SIGINT) tells the coordinator with its next
beat. Every beat's answer carries the stop, so each surviving device ends its current update, reports and waits
until every device has reported or is deemed failed (after a signal, silent for at most `SIGNAL_GRACE_S`, within
torchrun's 30 s); rank 0 then returns the gathered results marked `partial`,
listing the failed devices and saying why the run stopped. The run is not continued without the lost device: under
torchrun a dead process makes the launcher stop every rank (SIGTERM, SIGKILL 30 s later), and a hung one keeps it
waiting until some rank exits. A lost coordinator (rank 0) is `CoordinatorLost` on every other rank.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.distributed.rpc as rpc
from torch import nn

from dflbench.aggregation import in_neighbor_slots
from dflbench.engines.async_rng import STREAM_NEIGHBOR, counter_randint
from dflbench.engines.async_stacked import DeviceData, StackedModel
from dflbench.engines.coordinator import Coordinator
from dflbench.errors import RunAborted, UserError
from dflbench.methods.aedfl.method import AEDFL
from dflbench.methods.aedfl.step import AEDFLConfig, AEDFLStep, ModelMessage
from dflbench.runtime.backend import quiet_transport, resolve_device
from dflbench.runtime.comm import transport_error

COORDINATOR = 0
SIGNAL_GRACE_S = 20.0   # after a rank's SIGTERM / SIGINT, the longest wait for a silent device (torchrun kills at 30)


@dataclass(frozen=True)
class AsyncRuntimeConfig:
    """max_updates: local updates per device (T); time_budget_s: optional wall-clock stop; batch_size, local_steps,
    lr, seed: as the simulator's AsyncConfig (the AEDFL step reads them); heartbeat interval/timeout in seconds;
    finish_timeout_s bounds the final wait for reports; rpc_timeout_s bounds every RPC; eval_every: test accuracy
    every k local updates (0: only at the end); eval_samples: how many test samples each evaluation uses (None:
    all). The method (AEDFL or an ablation) is the AsyncNode's `method` argument. The experiment builds it from its
    run config (`dflbench.recipes.aedfl_distributed.runtime_config`); `max_updates`, `time_budget_s`, `local_steps`
    and `eval_samples` have no default here (keyword-only, required): the run config holds theirs."""

    max_updates: int = field(kw_only=True)
    time_budget_s: float | None = field(kw_only=True)
    batch_size: int = 32
    local_steps: int = field(kw_only=True)
    lr: float = 0.05
    heartbeat_interval_s: float = 0.2
    heartbeat_timeout_s: float = 10.0
    finish_timeout_s: float = 120.0
    rpc_timeout_s: float = 30.0
    eval_every: int = 10
    eval_samples: int | None = field(kw_only=True)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.max_updates < 1 or self.batch_size < 1 or self.local_steps < 1 or not self.lr > 0:
            raise UserError("AsyncRuntimeConfig: max_updates, batch_size and local_steps must be >= 1 and lr > 0")
        if not 0 < self.heartbeat_interval_s < self.heartbeat_timeout_s:
            raise UserError(f"AsyncRuntimeConfig: need 0 < heartbeat_interval_s < heartbeat_timeout_s, got "
                            f"{self.heartbeat_interval_s}, {self.heartbeat_timeout_s}")
        if self.eval_every < 0 or (self.eval_samples is not None and self.eval_samples < 1):
            raise UserError("AsyncRuntimeConfig: eval_every must be >= 0 and eval_samples >= 1 (or None)")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise UserError(f"AsyncRuntimeConfig: time_budget_s must be > 0, got {self.time_budget_s}")


# ---- rank 0: the coordinator -----------------------------------------------------------------------------

class CoordinatorService:
    """Index table, heartbeats (rank 0's monotonic clock), the run's early stop and the final reports of `n`
    devices."""

    def __init__(self, n: int, timeout_s: float):
        self.n, self.timeout = n, timeout_s
        self.table = Coordinator(n, heartbeat_interval=timeout_s / 2, timeout=timeout_s)
        self.start = time.monotonic()
        self.last_beat = [self.start] * n
        self.reports: dict[int, dict] = {}
        self.failed: dict[int, float] = {}
        self.stopping: str | None = None      # why the run stops early (the first failure or signal), else None
        self.limit = timeout_s                # the silence after which a device is failed (shorter after a signal)
        self.acked: set[int] = set()
        self.lock = threading.Lock()

    def register(self, uid: str) -> int:
        with self.lock:
            return self.table.register(uid)

    def beat(self, i: int, halt: str | None = None) -> tuple[list[bool], str | None]:
        """Record a heartbeat of device i (with `halt`: why it stops early, e.g. it received SIGTERM); return the
        alive view (True = not deemed failed) and why the run stops early (None: it does not). A device deemed
        failed that beats again (it was only slow) is alive again."""
        with self.lock:
            self.last_beat[i] = time.monotonic()
            self.failed.pop(i, None)
            self._halt(halt)
            return self._alive(), self.stopping

    def _halt(self, reason: str | None) -> None:
        """A device stops early by itself (a signal): the run stops, and since torchrun SIGKILLs every rank 30 s
        after its SIGTERM, a silent device is failed after at most `SIGNAL_GRACE_S` from now on."""
        if reason is not None:
            self.stopping = self.stopping or reason
            self.limit = min(self.timeout, SIGNAL_GRACE_S)

    def _alive(self) -> list[bool]:
        now = time.monotonic()
        for i in range(self.n):
            if i not in self.reports and i not in self.failed and now - self.last_beat[i] > self.limit:
                self.failed[i] = now - self.start
                self.table.device_failed(i, now - self.start)
                if self.stopping is None:
                    self.stopping = f"device {i} sent no heartbeat for {self.limit:g} s"
        return [i not in self.failed for i in range(self.n)]

    def report(self, i: int, metrics: dict, halt: str | None = None) -> None:
        """Device i's final metrics (with `halt`: why it stopped early by itself, as `beat` takes it)."""
        with self.lock:
            self.reports[i] = metrics
            self._halt(halt)

    def settled(self, i: int) -> dict | None:
        """None until every device has reported or is deemed failed; then the run's outcome: `failed` (device ids,
        deemed failed and never reported), `stop_reason` (None for a run that ran to its end) and `partial`."""
        with self.lock:
            self._alive()
            if not all(j in self.reports or j in self.failed for j in range(self.n)):
                return None
            failed = sorted(i for i in self.failed if i not in self.reports)
            reason = self.stopping
            if failed:
                lost = ", ".join(map(str, failed))
                reason = (f"device{'s' * (len(failed) > 1)} {lost} failed (rank{'s' * (len(failed) > 1)} {lost}: "
                          f"no heartbeat for {self.limit:g} s, killed, crashed or stopped)")
            return {"failed": failed, "stop_reason": reason, "partial": reason is not None}

    def acknowledge(self, i: int) -> None:
        """Device i has RECEIVED the answer that the run is settled (a separate call: recording it while answering
        let the coordinator leave before the answer was on the wire, and the asking device saw its connection
        close, 'eof', under load)."""
        with self.lock:
            self.acked.add(i)

    def all_acked(self) -> bool:
        """Every reporting device has seen the run settled (or has since sent no beat for the heartbeat timeout), so
        the coordinator may leave."""
        with self.lock:
            now = time.monotonic()
            return all(i in self.acked or now - self.last_beat[i] > self.limit for i in self.reports)


_SERVICE: CoordinatorService | None = None
_NODE: "AsyncNode | None" = None


def _register(uid: str) -> int:
    return _SERVICE.register(uid)


def _beat(i: int, halt: str | None = None) -> tuple[list[bool], str | None]:
    return _SERVICE.beat(i, halt)


def _report(i: int, metrics: dict, halt: str | None = None) -> None:
    _SERVICE.report(i, metrics, halt)


def _settled(i: int) -> dict | None:
    return _SERVICE.settled(i)


def _acknowledge(i: int) -> None:
    _SERVICE.acknowledge(i)


def _deliver(src: int, model: torch.Tensor, version: int, loss: float, samples: int,
             mask: torch.Tensor | None = None, rate: float | None = None) -> bool:
    """Runs on the receiver's RPC thread: atomic replacement of the sender's cache slot."""
    return _NODE.receive(src, ModelMessage(model, mask, loss, samples, version, rate))


# ---- every rank: one device ------------------------------------------------------------------------------

DEFAULT_METHOD = AEDFL("aedfl-dwu", AEDFLConfig(rl=False, dwu=True, prune=False))


class AsyncNode:
    """Device `rank` of `topology` (w_ij > 0 iff j sends to i) running `method` (AEDFL or an ablation, as the
    simulator runs it) on `model` with its own data (`x_train`, `y_train`: this device's samples only), evaluated on
    (`x_test`, `y_test`). It is the step's host (`dflbench.methods.aedfl.step.StepHost`) for one device."""

    def __init__(self, model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor, topology, config: AsyncRuntimeConfig, rank: int, world_size: int,
                 method: AEDFL = DEFAULT_METHOD):
        if topology.n != world_size:
            raise UserError(f"the async runtime hosts one device per rank: the topology has {topology.n} devices "
                            f"but {world_size} processes run; use --nodes {world_size} or --nproc-per-node "
                            f"{topology.n}")
        if len(y_train) == 0:
            raise UserError(f"device {rank} has no training samples")
        if type(method) is not AEDFL:
            raise ValueError(f"the async runtime runs AEDFL and its ablations (an AEDFL method object), got "
                             f"{getattr(method, 'name', type(method).__name__)!r}; baselines run on the simulator")
        self.cfg, self.rank, self.n, self.method = config, rank, world_size, method
        self.dev = resolve_device(config.device, rank)
        self.net = StackedModel(model)
        keep = len(y_test) if config.eval_samples is None else config.eval_samples
        self.data = DeviceData.from_indices(x_train, y_train, [range(len(y_train))], x_test[:keep], y_test[:keep],
                                            device=self.dev, ids=[rank])
        self._x_eval = self.data.prepare(self.data.x_test)
        self.x = self.net.init.to(self.dev).unsqueeze(0)                      # [1, P]: this device's model
        self.t = torch.zeros(1, dtype=torch.long)                             # its local updates done
        self.rows = torch.zeros(1, dtype=torch.long)
        adj = topology.adjacency
        self.out_nbrs = [i for i in range(self.n) if i != rank and bool(adj[i, rank])]
        self.step = AEDFLStep(method.cfg, self, in_neighbor_slots(adj, rows=[rank]), concurrent=True)
        self.alive = [True] * self.n
        self.received = 0
        self.rejected = 0
        self.out_of_order = 0
        self._last_version: dict[int, int] = {}
        self._recv_lock = threading.Lock()
        self._stop = threading.Event()
        self.signal: str | None = None          # SIGTERM / SIGINT, when this rank received one during the run
        self._own_halt: str | None = None       # why this rank stops early by itself (a signal)
        self._halt: str | None = None           # why it stops early: its own signal or the coordinator's stop
        self._lost: BaseException | None = None  # the error of the beat that found the coordinator gone

    def model_mflops(self, masks: torch.Tensor | None = None) -> float | torch.Tensor:
        """MFP per sample (`StackedModel.mfp` on a test input), dense or under `masks [1, P]`."""
        return self.net.mfp(self._x_eval[:1], masks)

    # -- receiver thread -------------------------------------------------------------------------------
    def receive(self, src: int, message: ModelMessage) -> bool:
        """Apply `message` from device `src` to its cache slot, stamped with this device's update count now;
        False (nothing changed) when it is older than the last one applied from `src`. A bad model raises
        ValueError (the sender's future fails) and leaves the cache unchanged."""
        with self._recv_lock:
            try:
                version = message.version
                if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                    raise ValueError(f"rejected model from device {src}: version must be an integer >= 0, got "
                                     f"{version!r}")
                newer = version > self._last_version.get(src, -1)
                if newer:
                    self.step.receive(0, src, message, stamp=int(self.t[0]))
                    self._last_version[src] = version
            except ValueError:
                self.rejected += 1
                raise
            self.received += 1
            self.out_of_order += not newer
        return newer

    # -- one local update ------------------------------------------------------------------------------
    def local_update(self) -> tuple[int, ModelMessage]:
        """The AEDFL step for this device, then the out-neighbour to push its message to (-1: none alive)."""
        out = self.step.update(self, self.rows, self.x)
        self.x = out.x
        return self.pick_neighbor(int(out.t[0])), out.messages[0]

    def pick_neighbor(self, t: int) -> int:
        """One out-neighbour uniformly among those the coordinator deems alive (-1 when none is), keyed by
        (device, t) as the simulator's `random_out_neighbor`."""
        cand = [i for i in self.out_nbrs if self.alive[i]]
        if not cand:
            return -1
        return cand[int(counter_randint(len(cand), self.cfg.seed, STREAM_NEIGHBOR, self.rank, t))]

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        acc, loss = self.net.accuracy_and_loss(self.x, self._x_eval, self.data.y_test)
        return float(acc[0]), float(loss[0])

    # -- the run ---------------------------------------------------------------------------------------
    def run(self, callback: Callable[[int], None] | None = None) -> dict:
        """Train, push, report; returns this device's metrics (rank 0: the gathered results) with the run's outcome:
        `failed_nodes`, `stop_reason` and `partial` (the run stopped early: a failed device or a signal; see the
        module docstring). SIGTERM and SIGINT stop the run early while it runs (`self.signal` names the one this
        rank received); `CoordinatorLost` when rank 0 stops answering."""
        global _NODE, _SERVICE
        _NODE = self
        self._t0 = time.monotonic()
        if self.rank == COORDINATOR:
            _SERVICE = CoordinatorService(self.n, self.cfg.heartbeat_timeout_s)
        opts = rpc.TensorPipeRpcBackendOptions(rpc_timeout=self.cfg.rpc_timeout_s, init_method="env://")
        with quiet_transport(), _stop_signals(self._on_signal):
            with warnings.catch_warnings():  # torch's own rendezvous passes a gloo Backend as a group: its notice
                warnings.filterwarnings("ignore", message="You are using a Backend .* as a ProcessGroup")
                rpc.init_rpc(f"node{self.rank}", rank=self.rank, world_size=self.n, rpc_backend_options=opts)
            try:
                return self._run(callback)
            finally:
                self._stop.set()
                rpc.shutdown(graceful=False)

    def _run(self, callback) -> dict:
        index = self._ask(_register, f"{socket.gethostname()}:{os.getpid()}", timeout=self.cfg.rpc_timeout_s)
        beats = threading.Thread(target=self._heartbeats, daemon=True)
        beats.start()
        metrics = self._train(callback)
        metrics["index"] = index
        self._ask(_report, self.rank, metrics, self._own_halt, timeout=self.cfg.rpc_timeout_s)
        deadline = time.monotonic() + self.cfg.finish_timeout_s
        while (outcome := self._ask(_settled, self.rank)) is None:
            self._wait_until(deadline, "the other devices did not finish")
        self._stop.set()                    # from here on a beat may find the coordinator gone
        if self.rank == COORDINATOR:
            _SERVICE.acknowledge(self.rank)
        else:
            try:
                rpc.rpc_sync(f"node{COORDINATOR}", _acknowledge, args=(self.rank,))
            except RuntimeError:
                pass        # the run is settled and reported: the coordinator took the ack and left first
        while self.rank == COORDINATOR and not _SERVICE.all_acked():
            self._wait_until(deadline, "the other devices did not see the end of the run")
        beats.join()
        if self.rank == COORDINATOR:
            return self._gathered(outcome)
        return {**metrics, "failed_nodes": outcome["failed"], "partial": outcome["partial"],
                "stop_reason": outcome["stop_reason"] or self._end_reason()}

    def _on_signal(self, signum, frame) -> None:
        """SIGTERM / SIGINT: end the current update, report and settle (the coordinator hears it with the next beat)."""
        name = signal.Signals(signum).name
        self.signal = self.signal or name
        self._own_halt = self._own_halt or f"rank {self.rank} received {name}"
        self._halt = self._halt or self._own_halt

    def _ask(self, fn, *args, timeout: float | None = None):
        """`fn(*args)` on the coordinator (within `timeout`, default the heartbeat timeout); CoordinatorLost when it
        fails or the heartbeats found the coordinator gone."""
        if self._lost is not None:
            raise CoordinatorLost(self.rank, self._lost)
        try:
            return rpc.rpc_sync(f"node{COORDINATOR}", fn, args=args,
                                timeout=self.cfg.heartbeat_timeout_s if timeout is None else timeout)
        except RuntimeError as exc:
            raise CoordinatorLost(self.rank, exc) from exc

    def _wait_until(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise RunAborted(f"rank {self.rank}: {what} within {self.cfg.finish_timeout_s} s")
        time.sleep(self.cfg.heartbeat_interval_s / 2)

    def _heartbeats(self) -> None:
        """Beat every interval; take the alive view and the run's early stop from the answer. A beat that fails
        (rank 0 died, or gave no answer within the heartbeat timeout) stops this device: the coordinator is lost."""
        while not self._stop.is_set():
            try:
                self.alive, stop = rpc.rpc_sync(f"node{COORDINATOR}", _beat, args=(self.rank, self._own_halt),
                                                timeout=self.cfg.heartbeat_timeout_s)
            except RuntimeError as exc:
                if not self._stop.is_set():
                    self._lost = exc
                    self._halt = self._halt or "rank 0 (the coordinator) stopped answering"
                return
            self._halt = self._halt or stop
            self._stop.wait(self.cfg.heartbeat_interval_s)

    def _end_reason(self) -> str:
        return "time budget" if self.cfg.time_budget_s is not None else "max updates"

    def _train(self, callback) -> dict:
        cfg = self.cfg
        start = time.monotonic()
        pending: list = []
        sent = failed_sends = nbytes = 0
        history = []
        t = 0
        while (t < cfg.max_updates and self._halt is None
               and (cfg.time_budget_s is None or time.monotonic() - start < cfg.time_budget_s)):
            dst, msg = self.local_update()
            t = msg.version
            if dst >= 0:
                args = (self.rank, msg.model.cpu(), msg.version, msg.loss, msg.samples)
                if msg.mask is not None:
                    args += (msg.mask.cpu(), msg.rate)
                pending.append(rpc.rpc_async(f"node{dst}", _deliver, args=args))
                sent += 1
                nbytes += sum(a.numel() * a.element_size() for a in args if torch.is_tensor(a))
            done = [f for f in pending if f.done()]
            failed_sends += sum(1 for f in done if _failed(f))
            pending = [f for f in pending if not f.done()]
            record = {"update": t, "train_loss": msg.loss, "wall": time.monotonic() - start}
            if cfg.eval_every and t % cfg.eval_every == 0:
                record["accuracy"], record["test_loss"] = self.evaluate()
            history.append(record)
            if callback is not None:
                callback(t)
        deadline = time.monotonic() + cfg.heartbeat_timeout_s    # a push to a hung device is counted as failed
        while any(not f.done() for f in pending) and self._halt is None and time.monotonic() < deadline:
            time.sleep(0.01)
        failed_sends += sum(1 for f in pending if not f.done() or _failed(f))
        acc, test_loss = self.evaluate()
        return {"node": self.rank, "updates": t, "accuracy": acc, "test_loss": test_loss,
                "mflops": self.step.mflops(self),
                "train_loss": history[-1]["train_loss"] if history else None,
                "bytes_sent": nbytes, "messages": sent, "failed_sends": failed_sends, "received": self.received,
                "rejected": self.rejected, "out_of_order": self.out_of_order,
                "wall_time_s": time.monotonic() - start, "history": history}

    def _gathered(self, outcome: dict) -> dict:
        svc = _SERVICE
        with svc.lock:
            reports, failed = dict(svc.reports), {i: svc.failed[i] for i in outcome["failed"]}
        nodes = [reports[i] for i in sorted(reports)]
        accs = [r["accuracy"] for r in nodes]
        return {"method": self.method.name, "runtime": "distributed",
                "config": {**asdict(self.cfg), "aedfl": asdict(self.method.cfg), "devices": self.n},
                "accuracy": sum(accs) / len(accs) if accs else 0.0,
                "bytes_sent": sum(r["bytes_sent"] for r in nodes),
                "device_steps": sum(r["updates"] * self.cfg.local_steps for r in nodes),
                "wall_time": max((r["wall_time_s"] for r in nodes), default=0.0),
                "stop_reason": outcome["stop_reason"] or self._end_reason(), "partial": outcome["partial"],
                "failed_nodes": sorted(failed), "failed_at_s": {str(i): failed[i] for i in sorted(failed)},
                "nodes": nodes}


class CoordinatorLost(RunAborted):
    """Rank 0, the coordinator, died or stopped answering: this rank cannot report, and nothing is written."""

    def __init__(self, rank: int, cause: BaseException):
        self.rank = rank
        super().__init__(f"rank {rank}: rank 0 (the coordinator) died or stopped answering "
                         f"({transport_error(cause)}); it writes the results, so nothing was written: start the run "
                         "again")


@contextmanager
def _stop_signals(handler):
    """`handler` for SIGTERM and SIGINT inside the block (main thread only; elsewhere signals stay as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _failed(fut) -> int:
    """1 if the finished RPC future ended in an error (e.g. the receiver died), else 0."""
    try:
        fut.value()
        return 0
    except RuntimeError:
        return 1
