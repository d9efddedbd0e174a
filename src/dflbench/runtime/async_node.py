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
updates (or `time_budget_s`); each device reports its metrics to rank 0, which waits for every device that is not
failed and returns the gathered results with the failed devices listed (the AEDFL recipe's distributed driver
turns them into the experiment's results).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.distributed.rpc as rpc
from torch import nn

from dflbench.aggregation import in_neighbor_slots
from dflbench.engines.async_rng import STREAM_NEIGHBOR, counter_randint
from dflbench.engines.async_stacked import DeviceData, StackedModel
from dflbench.engines.coordinator import Coordinator
from dflbench.errors import UserError
from dflbench.methods.aedfl.method import AEDFL
from dflbench.methods.aedfl.step import AEDFLConfig, AEDFLStep, ModelMessage
from dflbench.runtime.backend import resolve_device

COORDINATOR = 0


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
    """Index table, heartbeats (rank 0's monotonic clock) and the final reports of `n` devices."""

    def __init__(self, n: int, timeout_s: float):
        self.n, self.timeout = n, timeout_s
        self.table = Coordinator(n, heartbeat_interval=timeout_s / 2, timeout=timeout_s)
        self.start = time.monotonic()
        self.last_beat = [self.start] * n
        self.reports: dict[int, dict] = {}
        self.failed: dict[int, float] = {}
        self.acked: set[int] = set()
        self.lock = threading.Lock()

    def register(self, uid: str) -> int:
        with self.lock:
            return self.table.register(uid)

    def beat(self, i: int) -> list[bool]:
        """Record a heartbeat of device i; return the alive view (True = not deemed failed). A device deemed
        failed that beats again (it was only slow) is alive again."""
        with self.lock:
            self.last_beat[i] = time.monotonic()
            self.failed.pop(i, None)
            return self._alive()

    def _alive(self) -> list[bool]:
        now = time.monotonic()
        for i in range(self.n):
            if i not in self.reports and i not in self.failed and now - self.last_beat[i] > self.timeout:
                self.failed[i] = now - self.start
                self.table.device_failed(i, now - self.start)
        return [i not in self.failed for i in range(self.n)]

    def report(self, i: int, metrics: dict) -> None:
        with self.lock:
            self.reports[i] = metrics

    def settled(self, i: int) -> bool:
        """Every device has reported or is deemed failed."""
        with self.lock:
            self._alive()
            return all(j in self.reports or j in self.failed for j in range(self.n))

    def acknowledge(self, i: int) -> None:
        """Device i has RECEIVED the answer that the run is settled (a separate call: recording it while answering
        let the coordinator leave before the answer was on the wire, and the asking device saw its connection
        close, 'eof', under load)."""
        with self.lock:
            self.acked.add(i)

    def all_acked(self) -> bool:
        """Every reporting device has seen the run settled, so the coordinator may leave."""
        with self.lock:
            return set(self.reports) <= self.acked


_SERVICE: CoordinatorService | None = None
_NODE: "AsyncNode | None" = None


def _register(uid: str) -> int:
    return _SERVICE.register(uid)


def _beat(i: int) -> list[bool]:
    return _SERVICE.beat(i)


def _report(i: int, metrics: dict) -> None:
    _SERVICE.report(i, metrics)


def _settled(i: int) -> bool:
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
        """Train, push, report; returns this device's metrics (rank 0: also the gathered results)."""
        global _NODE, _SERVICE
        _NODE = self
        self._t0 = time.monotonic()
        if self.rank == COORDINATOR:
            _SERVICE = CoordinatorService(self.n, self.cfg.heartbeat_timeout_s)
        opts = rpc.TensorPipeRpcBackendOptions(rpc_timeout=self.cfg.rpc_timeout_s, init_method="env://")
        with warnings.catch_warnings():     # torch's own rendezvous passes a gloo Backend as a group: its notice
            warnings.filterwarnings("ignore", message="You are using a Backend .* as a ProcessGroup")
            rpc.init_rpc(f"node{self.rank}", rank=self.rank, world_size=self.n, rpc_backend_options=opts)
        try:
            index = rpc.rpc_sync(f"node{COORDINATOR}", _register, args=(f"{socket.gethostname()}:{os.getpid()}",))
            beats = threading.Thread(target=self._heartbeats, daemon=True)
            beats.start()
            metrics = self._train(callback)
            metrics["index"] = index
            rpc.rpc_sync(f"node{COORDINATOR}", _report, args=(self.rank, metrics))
            deadline = time.monotonic() + self.cfg.finish_timeout_s
            while not rpc.rpc_sync(f"node{COORDINATOR}", _settled, args=(self.rank,)):
                self._wait_until(deadline, "the other devices did not finish")
            if self.rank == COORDINATOR:
                _SERVICE.acknowledge(self.rank)
            else:
                try:
                    rpc.rpc_sync(f"node{COORDINATOR}", _acknowledge, args=(self.rank,))
                except RuntimeError:
                    pass        # the run is settled and reported: the coordinator took the ack and left first
            while self.rank == COORDINATOR and not _SERVICE.all_acked():
                self._wait_until(deadline, "the other devices did not see the end of the run")
            result = self._gathered() if self.rank == COORDINATOR else metrics
            self._stop.set()
            beats.join()
            return result
        finally:
            self._stop.set()
            rpc.shutdown(graceful=False)

    def _wait_until(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"device {self.rank}: {what} within {self.cfg.finish_timeout_s} s")
        time.sleep(self.cfg.heartbeat_interval_s / 2)

    def _heartbeats(self) -> None:
        while not self._stop.is_set():
            try:
                self.alive = rpc.rpc_sync(f"node{COORDINATOR}", _beat, args=(self.rank,))
            except RuntimeError:
                if self._stop.is_set():
                    return
                raise
            self._stop.wait(self.cfg.heartbeat_interval_s)

    def _train(self, callback) -> dict:
        cfg = self.cfg
        start = time.monotonic()
        pending: list = []
        sent = failed_sends = nbytes = 0
        history = []
        t = 0
        while t < cfg.max_updates and (cfg.time_budget_s is None or time.monotonic() - start < cfg.time_budget_s):
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
        for f in pending:
            failed_sends += _failed(f, wait=True)
        acc, test_loss = self.evaluate()
        return {"node": self.rank, "updates": t, "accuracy": acc, "test_loss": test_loss,
                "mflops": self.step.mflops(self),
                "train_loss": history[-1]["train_loss"] if history else None,
                "bytes_sent": nbytes, "messages": sent, "failed_sends": failed_sends, "received": self.received,
                "rejected": self.rejected, "out_of_order": self.out_of_order,
                "wall_time_s": time.monotonic() - start, "history": history}

    def _gathered(self) -> dict:
        svc = _SERVICE
        with svc.lock:
            reports, failed = dict(svc.reports), dict(svc.failed)
        nodes = [reports[i] for i in sorted(reports)]
        accs = [r["accuracy"] for r in nodes]
        return {"method": self.method.name, "runtime": "distributed",
                "config": {**asdict(self.cfg), "aedfl": asdict(self.method.cfg), "devices": self.n},
                "accuracy": sum(accs) / len(accs) if accs else 0.0,
                "bytes_sent": sum(r["bytes_sent"] for r in nodes),
                "device_steps": sum(r["updates"] * self.cfg.local_steps for r in nodes),
                "wall_time": max((r["wall_time_s"] for r in nodes), default=0.0),
                "stop_reason": "time budget" if self.cfg.time_budget_s is not None else "max updates",
                "failed_nodes": sorted(failed), "failed_at_s": {str(i): failed[i] for i in sorted(failed)},
                "nodes": nodes}


def _failed(fut, wait: bool = False) -> int:
    """1 if the RPC future ended in an error (e.g. the receiver died), else 0."""
    try:
        if wait:
            fut.wait()
        else:
            fut.value()
        return 0
    except RuntimeError:
        return 1

