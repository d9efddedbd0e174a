"""Asynchronous AEDFL across processes (AEDFL Sec. 3, Algorithm 1): one device per rank, no lock-step.

Mechanism: `torch.distributed.rpc` (TensorPipe). A device pushes its model with `rpc_async` to ONE random
out-neighbour and never waits for it; the call lands in the receiver's RPC thread pool, which is the receiver
thread: it validates the model and swaps it into the `NeighborCache` slot of the sender under the cache's lock
(atomic: the training loop sees the whole old or the whole new entry). Rank 0 additionally hosts the
coordinator, a plain object reached by RPC: it hands out device indices (`dflbench.engines.Coordinator`'s index
table), receives heartbeats and answers each with the alive view, deems a device failed when no beat came for
`heartbeat_timeout_s` (measured on rank 0's clock, so host clocks need not agree), and collects the final
per-device metrics. Why RPC rather than gloo point-to-point with receive-from-any-source: an RPC is one-sided
(no matching pre-posted receive of a known size, so any sender may deliver at any time, and the model travels as
a tensor, metadata pickled beside it), and a dead peer fails only the futures addressed to it, whereas a gloo
pair broken by a dead rank poisons the process group and blocks any later collective; the TCPStore would route
every model through one server. Only the flat model tensor [P] and small metadata (sender, version = its local
update count, loss, sample count) cross processes; training data never does.

Per local update t of device i: local SGD (eq. 4.5) on its own mini-batch; aggregation of the local model with
the cached neighbour models (eq. 4.9, or 4.11 with masks) under dynamic staleness/loss-aware weights
(eq. 4.6-4.8, `DynamicWeights`) or uniform weights over the filled slots (AEDFL-0); then the push. Sending
overlaps the next update. Neighbours the coordinator deems failed are not chosen; a send that fails is counted.
The run ends after `max_updates` local updates (or `time_budget_s`); each device reports its metrics to rank 0,
which waits for every device that is not failed and writes results.json with the failed devices listed.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed.rpc as rpc
from torch import nn

from dflbench.errors import UserError
from dflbench.aggregation import DynamicWeights, DynamicWeightsConfig, FlatSpec, NeighborCache, masked_average
from dflbench.engines.async_rng import STREAM_BATCH, STREAM_NEIGHBOR, counter_randint
from dflbench.engines.async_stacked import StackedModel
from dflbench.engines.coordinator import Coordinator
from dflbench.io import atomic_write_json

from dflbench.runtime.backend import resolve_device

COORDINATOR = 0


@dataclass(frozen=True)
class AsyncRuntimeConfig:
    """max_updates: local updates per device (T); time_budget_s: optional wall-clock stop; dwu: dynamic weights
    (eq. 4.6-4.8) or uniform (AEDFL-0); heartbeat interval/timeout in seconds; finish_timeout_s bounds the final
    wait for reports; rpc_timeout_s bounds every RPC; eval_every: test accuracy every k local updates (0: only at
    the end); eval_samples: how many test samples each evaluation uses (None: all)."""

    max_updates: int = 100
    time_budget_s: float | None = None
    batch_size: int = 32
    local_steps: int = 1
    lr: float = 0.05
    dwu: bool = True
    weights: DynamicWeightsConfig = DynamicWeightsConfig()
    heartbeat_interval_s: float = 0.2
    heartbeat_timeout_s: float = 3.0
    finish_timeout_s: float = 120.0
    rpc_timeout_s: float = 30.0
    eval_every: int = 0
    eval_samples: int | None = None
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
        """Every device has reported or is deemed failed (device i asking is recorded once it is)."""
        with self.lock:
            self._alive()
            done = all(j in self.reports or j in self.failed for j in range(self.n))
            if done:
                self.acked.add(i)
            return done

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


def _deliver(src: int, model: torch.Tensor, version: int, loss: float, samples: int) -> bool:
    """Runs on the receiver's RPC thread: atomic replacement of the sender's cache slot."""
    return _NODE.receive(src, model, version, loss, samples)


# ---- every rank: one device ------------------------------------------------------------------------------

class AsyncNode:
    """Device `rank` of `topology` (w_ij > 0 iff j sends to i) training `model` on its own data
    (`x_train`, `y_train`: this device's samples only) and evaluated on (`x_test`, `y_test`)."""

    def __init__(self, model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor, topology, config: AsyncRuntimeConfig, rank: int, world_size: int):
        if topology.n != world_size:
            raise UserError(f"the async runtime hosts one device per rank: the topology has {topology.n} devices "
                            f"but {world_size} processes run; use --nodes {world_size} or --nproc-per-node "
                            f"{topology.n}")
        if len(y_train) == 0:
            raise UserError(f"device {rank} has no training samples")
        self.cfg, self.rank, self.n = config, rank, world_size
        self.device = resolve_device(config.device, rank)
        self.net = StackedModel(model)
        self.spec: FlatSpec = self.net.spec
        self.x = self.net.init.to(self.device)
        self.x_train, self.y_train = x_train.to(self.device), y_train.to(self.device)
        keep = len(y_test) if config.eval_samples is None else config.eval_samples
        self.x_test, self.y_test = x_test[:keep].to(self.device), y_test[:keep].to(self.device)
        w = topology.weights
        self.in_nbrs = [j for j in range(self.n) if j != rank and w[rank, j] > 0]
        self.out_nbrs = torch.tensor([i for i in range(self.n) if i != rank and w[i, rank] > 0])
        self.cache = NeighborCache(self.in_nbrs, self.spec, self.device, self.x.dtype)
        self.dwu = DynamicWeights(1, len(self.in_nbrs) + 1, config.weights, dtype=torch.float64) if config.dwu \
            else None
        self.alive = [True] * self.n
        self.received = 0
        self.rejected = 0
        self._recv_lock = threading.Lock()
        self._stop = threading.Event()

    # -- receiver thread -------------------------------------------------------------------------------
    def receive(self, src: int, model: torch.Tensor, version: int, loss: float, samples: int) -> bool:
        try:
            stored = self.cache.put(src, model.to(self.device), version=version,
                                    arrival_time=time.monotonic() - self._t0, loss=loss, samples=samples)
        except ValueError:
            with self._recv_lock:
                self.rejected += 1
            raise
        with self._recv_lock:
            self.received += 1
        return stored

    # -- one local update ------------------------------------------------------------------------------
    def local_sgd(self, t: int) -> tuple[torch.Tensor, float, torch.Tensor]:
        """`local_steps` SGD steps (eq. 4.5) on batches keyed by (seed, device, t, step): as the simulator draws."""
        x, losses, g = self.x, [], None
        j = torch.arange(self.cfg.batch_size, device=self.device)
        for s in range(self.cfg.local_steps):
            pos = counter_randint(len(self.y_train), self.cfg.seed, STREAM_BATCH, self.rank, t, s, j,
                                  device=self.device)
            loss, g = self.net.loss_and_grad(x[None], self.x_train[pos][None], self.y_train[pos][None])
            x = x - self.cfg.lr * g[0]
            losses.append(float(loss[0]))
        return x, sum(losses) / len(losses), g[0]

    def aggregate(self, t: int, x_half: torch.Tensor, loss: float, grad: torch.Tensor) -> torch.Tensor:
        """Eq. 4.9/4.11 over slot 0 (local) and the filled cache slots, weights eq. 4.6-4.8 or uniform."""
        st = self.cache.stack(t, x_half, loss, len(self.y_train))
        if self.dwu is not None:
            w = self.dwu.step(st.models[None].double(), grad[None].double(), st.samples[None], st.staleness[None],
                              st.loss[None], masks=st.masks[None], active=st.valid[None],
                              devices=torch.tensor([0]))[0]
        else:
            w = st.valid.double() / st.valid.sum()
        self.cache.mark_aggregated([j for j, v in zip(st.neighbors, st.valid[1:].tolist()) if v])
        return masked_average(st.models, w.to(st.models.dtype), st.masks)

    def pick_neighbor(self, t: int) -> int:
        """One out-neighbour uniformly among those the coordinator deems alive (-1 when none is)."""
        cand = [int(i) for i in self.out_nbrs if self.alive[int(i)]]
        if not cand:
            return -1
        return cand[int(counter_randint(len(cand), self.cfg.seed, STREAM_NEIGHBOR, self.rank, t))]

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        acc, loss = self.net.accuracy_and_loss(self.x[None], self.x_test, self.y_test)
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
        sent = failed_sends = 0
        history = []
        t = 0
        while t < cfg.max_updates and (cfg.time_budget_s is None or time.monotonic() - start < cfg.time_budget_s):
            t += 1
            x_half, loss, g = self.local_sgd(t)
            self.x = self.aggregate(t, x_half, loss, g)
            dst = self.pick_neighbor(t)
            if dst >= 0:
                pending.append(rpc.rpc_async(f"node{dst}", _deliver,
                                             args=(self.rank, self.x.cpu(), t, loss, len(self.y_train))))
                sent += 1
            done = [f for f in pending if f.done()]
            failed_sends += sum(1 for f in done if _failed(f))
            pending = [f for f in pending if not f.done()]
            record = {"update": t, "train_loss": loss, "wall": time.monotonic() - start}
            if cfg.eval_every and t % cfg.eval_every == 0:
                record["accuracy"], record["test_loss"] = self.evaluate()
            history.append(record)
            if callback is not None:
                callback(t)
        for f in pending:
            failed_sends += _failed(f, wait=True)
        acc, test_loss = self.evaluate()
        return {"node": self.rank, "updates": t, "accuracy": acc, "test_loss": test_loss,
                "train_loss": history[-1]["train_loss"] if history else None,
                "bytes_sent": sent * self.x.numel() * self.x.element_size(), "messages": sent,
                "failed_sends": failed_sends, "received": self.received, "rejected": self.rejected,
                "wall_time_s": time.monotonic() - start, "history": history}

    def _gathered(self) -> dict:
        svc = _SERVICE
        with svc.lock:
            reports, failed = dict(svc.reports), dict(svc.failed)
        nodes = [reports[i] for i in sorted(reports)]
        accs = [r["accuracy"] for r in nodes]
        return {"method": "aedfl" if self.cfg.dwu else "aedfl-0", "runtime": "distributed",
                "config": {**asdict(self.cfg), "weights": asdict(self.cfg.weights), "devices": self.n},
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


def write_async_results(out_dir: str | Path, results: dict) -> Path:
    """results.json of an async run (rank 0)."""
    path = Path(out_dir) / "results.json"
    atomic_write_json(path, results)
    return path
