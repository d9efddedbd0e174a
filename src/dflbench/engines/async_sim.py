"""AsyncSimulator: a discrete-event engine with a virtual clock for AEDFL (Sec. 3) and the FL baselines.

Events (`Event`: virtual time, `Kind`, sequence number, a typed payload), ordered by (time, kind, sequence):
  COMPLETE(device)  a device finished a local update: the method trains, aggregates, prunes, sends (batched)
  ROUND             a server/synchronous round boundary, handled by the method
  ARRIVE(message)   a model reaches its receiver (a device's cache slot, or the server)
  FAIL / REJOIN     fault injection: a failed device stops; it comes back with its model and its data
  EVAL              accuracy on the global test set, consensus distance, bytes sent (the history)
At equal times completions come first, so a message sent at time t is seen by a device completing after t only.

Exact mode (`slot_width=None`) processes one event at a time. Batched mode gathers every completion whose time
lies within `slot_width` of the earliest one and hands them to the method as ONE device batch (one training call);
messages and other events inside the slot are applied after the batch. All randomness is counter-based
(`async_rng`), keyed by device and local-update count, so with `slot_width=0` both modes produce the same event
sequence and, up to float rounding of batched kernels, the same models.

A local update costs `local_steps * batch_size * time_per_sample * cost_fraction` virtual seconds
(`cost_fraction` = the structural FLOP fraction of a pruned model); any extra work a method does (curvature, policy,
weight updates, aggregation) costs `work_time` by the one cost model of `engines.cost`; a message costs
`DeviceProfiles.comm_time`. Sending
overlaps the next local update. Stop: `max_updates` (T local updates per device: a device that has done T starts
no further update, so its next COMPLETE is never scheduled and it sends nothing after its T-th update's send; the
run ends once no device owes updates, i.e. every device that is alive, or failed with a rejoin scheduled at a finite
time, has done T; a device failed for good does not hold the stop, a rejoining one continues up to T),
`time_budget` (virtual seconds), `consensus_threshold` (at an EVAL), or the method's `finish` call (a server
baseline's last round). The T test runs before every event, so
slot-batched mode stops where exact mode does. `run(on_progress=...)` reports `fraction_done()` as it goes;
`run(checkpoint=...)` writes the state between two events every so many wall seconds and, given a checkpoint file,
continues from it to the uninterrupted run's result (`engines.async_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, NamedTuple, Protocol

import torch

from dflbench.errors import UserError

from .async_checkpoint import Checkpoint
from .async_rng import STREAM_CORRUPT, STREAM_FAULT, STREAM_NEIGHBOR, counter_randint, counter_uniform
from .async_stacked import DeviceData, StackedModel, local_sgd
from .coordinator import Coordinator, FaultConfig
from .cost import device_speed
from .devices import DeviceProfiles
from .evaluation import consensus_distance, consensus_model, mask_disagreement

SERVER = -1


class Kind(IntEnum):
    """What an event is; at equal times the smaller kind is handled first (completions before messages)."""

    COMPLETE = 0    # payload: Completion
    ROUND = 1       # payload: the method's own record (or None)
    ARRIVE = 2      # payload: Message
    FAIL = 3        # payload: the device (int)
    REJOIN = 4      # payload: the device (int)
    EVAL = 5        # payload: None


class Completion(NamedTuple):
    """A COMPLETE event's payload: device `dev` finished the local update it started in failure epoch `epoch` (an
    update started before a failure is dropped)."""

    dev: int
    epoch: int


class Event(NamedTuple):
    """One queued event; the heap orders by (at, kind, seq), seq being unique, so payloads are never compared."""

    at: float
    kind: Kind
    seq: int
    payload: Any = None


class Trace(NamedTuple):
    """One recorded event (`record_events=True`): `what` ("complete", "arrive", "fail", "rejoin") at virtual time `at`
    of device `dev` (an arrival's sender) and, for an arrival, its receiver `dst`."""

    what: str
    at: float
    dev: int
    dst: int | None = None


@dataclass(frozen=True)
class AsyncConfig:
    """Simulation settings. `slot_width=None` is the exact one-event-at-a-time mode; `evaluate=False` skips all
    evaluation (no history, accuracy NaN: throughput measurements). An experiment builds it from its run config
    (`dflbench.recipes.aedfl.AEDFLRunConfig.async_config`); `local_steps`, `slot_width` and `time_budget` have no
    default here (keyword-only, required): the run config holds theirs, and the defaults both share are equal (a
    test compares them)."""

    batch_size: int = 32
    local_steps: int = field(kw_only=True)
    lr: float = 0.05
    slot_width: float | None = field(kw_only=True)
    max_updates: int | None = None
    time_budget: float | None = field(kw_only=True)
    consensus_threshold: float | None = None
    eval_interval: float = 1.0
    eval_samples: int | None = 1000
    evaluate: bool = True
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 3.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.batch_size < 1 or self.local_steps < 1 or self.lr <= 0:
            raise UserError("AsyncConfig: batch_size and local_steps must be >= 1 and lr > 0")
        if self.slot_width is not None and self.slot_width < 0:
            raise UserError(f"AsyncConfig: slot_width must be >= 0 or None (exact mode), got {self.slot_width}")
        if self.max_updates is None and self.time_budget is None and self.consensus_threshold is None:
            raise UserError("AsyncConfig: set a stop criterion: max_updates, time_budget or consensus_threshold")
        if (self.max_updates is not None and self.max_updates < 1) or (self.time_budget is not None
                                                                       and self.time_budget <= 0):
            raise UserError(f"AsyncConfig: max_updates must be >= 1 and time_budget > 0, got {self.max_updates}, "
                            f"{self.time_budget}")
        if self.eval_interval <= 0:
            raise UserError(f"AsyncConfig: eval_interval must be positive, got {self.eval_interval}")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise UserError(f"AsyncConfig: eval_samples must be >= 1 (None: the whole test set), got "
                            f"{self.eval_samples}")


@dataclass
class Message:
    """A message on the wire: `payload` is the sending method's typed record (AEDFL's `ModelMessage`, a server
    method's `Upload` / `GlobalModel`, AD-PSGD's `Exchange`); `nbytes` its size, `sent_at` when it left."""

    src: int
    dst: int
    payload: Any
    nbytes: int
    sent_at: float


class AsyncMethod(Protocol):
    """What a method implements; `sim` gives it the state, the clock and the primitives."""

    name: str

    def setup(self, sim: "AsyncSimulator") -> None: ...
    def on_complete(self, sim: "AsyncSimulator", devs: torch.Tensor, times: torch.Tensor) -> None: ...
    def on_arrive(self, sim: "AsyncSimulator", msg: Message) -> None: ...
    def on_round(self, sim: "AsyncSimulator", payload: Any) -> None: ...
    def on_rejoin(self, sim: "AsyncSimulator", dev: int) -> None: ...
    def eval_models(self, sim: "AsyncSimulator") -> torch.Tensor: ...
    # optional: on_evaluate(sim, record) is called after each evaluation (the record is in the history);
    # eval_masks(sim) -> [n, P] bool or None: the evaluated models' masks (pruning methods; engines.evaluation)
    def mflops(self, sim: "AsyncSimulator") -> float: ...


@dataclass
class RunResult:
    method: str
    history: list[dict] = field(default_factory=list)
    events: list[Trace] = field(default_factory=list)
    accuracy: float = 0.0
    bytes_sent: int = 0
    device_steps: int = 0
    virtual_time: float = 0.0
    wall_time: float = 0.0
    stop_reason: str = ""
    device_accuracy: list[float] = field(default_factory=list)   # each evaluated model's, at the last evaluation

    def time_to(self, target: float, key: str = "accuracy") -> float | None:
        """First virtual time at which the history's `key` (the device mean `accuracy`, or `consensus_accuracy`)
        reached `target` (None if never)."""
        return next((h["time"] for h in self.history if h[key] >= target), None)


class AsyncSimulator:
    """Discrete-event simulation of D devices on `topology` running `method` (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, data: DeviceData, topology, profiles: DeviceProfiles,
                 method: AsyncMethod, config: AsyncConfig, faults: FaultConfig | None = None,
                 record_events: bool = False):
        self.D = topology.n
        if data.n != self.D or profiles.n != self.D:
            raise UserError(f"AsyncSimulator: topology has {self.D} devices, data {data.n}, profiles {profiles.n}")
        self.cfg, self.topology, self.profiles, self.method = config, topology, profiles, method
        self.faults = faults or FaultConfig()
        for dev in [d for d, _, _ in self.faults.schedule] + list(self.faults.corrupt):
            if not 0 <= dev < self.D:
                raise UserError(f"the fault settings name device {dev}, valid: 0..{self.D - 1}")
        self.dev = torch.device(config.device)
        self.data = self._poisoned(data) if self.faults.corrupt and self.faults.corrupt_mode == "labels" else data
        self.clean_y = data.y          # the labels before any poisoning: what a server's own (public) data holds
        self.net = StackedModel(model)
        self.P = self.net.numel
        self.x = self.net.init.to(self.dev).unsqueeze(0).repeat(self.D, 1)     # [D, P] device models
        self.t = torch.zeros(self.D, dtype=torch.long)                         # local updates done
        self.loss = torch.zeros(self.D, dtype=torch.float64)                   # last local training loss
        self.cost_fraction = torch.ones(self.D, dtype=torch.float64)
        self._x_eval, self._y_eval = self._eval_set(data, config)
        self.dense_mfp = float(self.net.mfp(self._x_eval[:1]))
        self.speed = device_speed(profiles.time_per_sample, self.dense_mfp)     # MACs per virtual second
        self.alive = torch.ones(self.D, dtype=torch.bool)
        self.epoch = torch.zeros(self.D, dtype=torch.long)                     # bumps on failure: drops stale events
        self._rejoins = torch.zeros(self.D, dtype=torch.long)                  # queued REJOINs at finite times
        adj = topology.adjacency.clone()
        adj.fill_diagonal_(False)
        self.out_adj = adj.T.contiguous()                                      # out_adj[j, i]: j sends to i
        self.coordinator = Coordinator(self.D, config.heartbeat_interval, config.heartbeat_timeout)
        for i in range(self.D):
            self.coordinator.register(f"device-{i}")
        self.now = 0.0
        self.bytes_sent = 0
        self.messages = 0
        self.dropped = 0
        self.device_steps = 0
        self._finished: str | None = None                                      # set by `finish`
        self._queue: list = []
        self._seq = 0
        self.record_events = record_events
        self.result = RunResult(method=method.name)
        self._wall0 = time.perf_counter()

    @staticmethod
    def _eval_set(data: DeviceData, config: AsyncConfig) -> tuple[torch.Tensor, torch.Tensor]:
        n = data.x_test.shape[0] if config.eval_samples is None else min(config.eval_samples, data.x_test.shape[0])
        return data.prepare(data.x_test[:n]), data.y_test[:n]

    # ---- scheduling -------------------------------------------------------------------------------------
    def schedule(self, at: float, kind: Kind, payload: Any = None) -> None:
        """Queue an event of `kind` with its payload (see `Kind`) at virtual time `at`."""
        if kind == Kind.REJOIN and math.isfinite(at):
            self._rejoins[payload] += 1
        heapq.heappush(self._queue, Event(float(at), kind, self._seq, payload))
        self._seq += 1

    def schedule_completions(self, devs: torch.Tensor, start: torch.Tensor) -> None:
        """Devices `devs` start a local update at times `start`: a COMPLETE event after their compute time.
        Devices that have done their T = `max_updates` local updates start none."""
        keep = self.below_limit()[devs]
        devs, start = devs[keep], start[keep]
        done = start + self.compute_time(devs)
        for d, at in zip(devs.tolist(), done.tolist()):
            self.schedule(at, Kind.COMPLETE, Completion(d, int(self.epoch[d])))

    def compute_time(self, devs: torch.Tensor) -> torch.Tensor:
        """Virtual seconds of one local update's training (`engines.cost`: charged by the model's structure)."""
        c = self.cfg
        return c.local_steps * c.batch_size * self.profiles.time_per_sample[devs] * self.cost_fraction[devs]

    def work_time(self, devs: torch.Tensor, macs) -> torch.Tensor:
        """Virtual seconds `[B]` that devices `devs` take for `macs` multiply-accumulates of extra work (curvature,
        policy, weight updates, aggregation: `engines.cost`); `devs` = SERVER: a server at the median speed."""
        macs = torch.as_tensor(macs, dtype=torch.float64)
        devs = torch.as_tensor(devs)
        speed = torch.where(devs == SERVER, self.speed.median(), self.speed[devs.clamp(min=0)])
        return macs / speed

    def below_limit(self) -> torch.Tensor:
        """[D] bool: devices with fewer than T = `max_updates` local updates (all of them without T)."""
        if self.cfg.max_updates is None:
            return torch.ones(self.D, dtype=torch.bool)
        return self.t < self.cfg.max_updates

    def fraction_done(self) -> float:
        """How much of the run is done, in [0, 1]: the largest of the devices' share of their T local updates
        (sum_i min(t_i, T) / (D T)), the virtual time's share of `time_budget` and the method's own count
        (`method.fraction_done(sim)` where it defines one, e.g. FedAvg's rounds of R)."""
        c, parts = self.cfg, [0.0]
        if c.max_updates is not None:
            parts.append(float(self.t.clamp(max=c.max_updates).sum()) / (self.D * c.max_updates))
        if c.time_budget is not None:
            parts.append(self.now / c.time_budget)
        if hasattr(self.method, "fraction_done"):
            parts.append(self.method.fraction_done(self))
        return min(1.0, max(parts))

    BUDGET_RTOL = 1e-9                  # relative slack of the budget test: sums of event times carry rounding

    def over_budget(self, at: float) -> bool:
        """True if virtual time `at` lies beyond `time_budget` (never without one). The test allows a relative
        `BUDGET_RTOL`, so that k events of duration d end within a budget of k * d although their summed times
        round above it."""
        budget = self.cfg.time_budget
        return budget is not None and at > budget * (1 + self.BUDGET_RTOL)

    def finish(self, reason: str) -> None:
        """The method ends the run (e.g. after its last round): no further event is handled."""
        self._finished = reason

    def updates_done(self) -> bool:
        """True once T is set and no device owes updates: every device alive or with a finite REJOIN queued has T."""
        if self.cfg.max_updates is None:
            return False
        owing = self.below_limit() & (self.alive | (self._rejoins > 0))
        return not bool(owing.any())

    # ---- primitives for methods -------------------------------------------------------------------------
    def local_sgd(self, devs: torch.Tensor, x0: torch.Tensor, steps: int | torch.Tensor | None = None,
                  masks: torch.Tensor | None = None, grad_fn=None, lr: float | torch.Tensor | None = None):
        """`async_stacked.local_sgd` for devices `devs` from `x0 [B, P]`, keyed by `self.t[devs]`, with this run's
        settings (`steps`, `lr` default to the config's); counts the device steps."""
        steps = self.cfg.local_steps if steps is None else steps
        self.account(steps=int(torch.as_tensor(steps).expand(devs.shape[0]).sum()))
        return local_sgd(self.net, self.data, devs, self.t[devs], x0, steps=steps,
                         lr=self.cfg.lr if lr is None else lr, batch_size=self.cfg.batch_size, seed=self.cfg.seed,
                         masks=masks, grad_fn=grad_fn)

    def account(self, devs: torch.Tensor | int | None = None, *, loss: torch.Tensor | float | None = None,
                updates: int = 0, messages: int = 0, nbytes: int = 0, steps: int = 0) -> None:
        """The one bookkeeping call of every method: devices `devs` record `loss` (their last training loss) and
        count `updates` more local updates (`t`: the clock of T and of the counter RNG); `messages` sent outside the
        event queue (`send` counts its own) add `messages * nbytes` bytes; `steps` SGD steps done outside
        `local_sgd` add to the device steps."""
        if loss is not None:
            self.loss[devs] = loss
        if updates:
            self.t[devs] += updates
        self.messages += messages
        self.bytes_sent += messages * int(nbytes)
        self.device_steps += steps

    def random_out_neighbor(self, devs: torch.Tensor) -> torch.Tensor:
        """One out-neighbor per device, uniform among those the coordinator deems alive; -1 when none is."""
        alive = self.coordinator.alive_view(self.now)
        cand = self.out_adj[devs] & alive.unsqueeze(0)                         # [B, D]
        count = cand.sum(1)
        k = counter_randint(count.clamp(min=1), self.cfg.seed, STREAM_NEIGHBOR, devs, self.t[devs])
        ranks = cand.long().cumsum(1) - 1
        pick = ((ranks == k.unsqueeze(1)) & cand).long().argmax(1)
        return torch.where(count > 0, pick, torch.full_like(pick, -1))

    def send(self, src: int, dst: int, payload: dict, nbytes: int, at: float | None = None) -> None:
        """Send `payload` (a model and its metadata) from `src` to `dst` (SERVER = -1), starting at `at`."""
        at = self.now if at is None else at
        if src != SERVER:
            arrive = at + float(self.profiles.comm_time(torch.tensor(src), torch.tensor(dst), torch.tensor(nbytes)))
        else:
            arrive = at + float(self.profiles.comm_time(torch.tensor(dst), torch.tensor(SERVER), torch.tensor(nbytes)))
        self.account(messages=1, nbytes=int(nbytes))
        self.schedule(arrive, Kind.ARRIVE, Message(src, dst, payload, int(nbytes), at))

    def model_mflops(self, masks: torch.Tensor | None = None) -> float | torch.Tensor:
        """MFP per sample of the device models (`StackedModel.mfp` on a test input): dense (a float) or under
        `masks [D, P]` (a tensor [D])."""
        return self.net.mfp(self._x_eval[:1], masks)

    def model_bytes(self, mask: torch.Tensor | None = None) -> int:
        """Bytes of a model on the wire: 4 per float, or 4 per kept entry plus a P-bit mask when sparse."""
        if mask is None:
            return 4 * self.P
        return 4 * int(mask.count_nonzero()) + math.ceil(self.P / 8)

    # ---- main loop -------------------------------------------------------------------------------------
    PROGRESS_EVERY = 0.5                # wall seconds between two on_progress calls

    def run(self, on_progress: Callable[[float], None] | None = None,
            checkpoint: Checkpoint | None = None) -> RunResult:
        """Run to a stop criterion (module docstring); `on_progress(fraction_done())` is called about every
        `PROGRESS_EVERY` wall seconds and once at the end with 1.0. `checkpoint`: resume from its file when there is
        one (instead of setting the method up), and write it every `checkpoint.every` wall seconds
        (`engines.async_checkpoint`); the caller clears it once the result is stored."""
        self._wall0 = time.perf_counter()
        if checkpoint is None or not checkpoint.restore(self):
            self.method.setup(self)
            for dev, fail_at, rejoin_at in self.faults.schedule:
                self.schedule(fail_at, Kind.FAIL, dev)
                self.schedule(rejoin_at, Kind.REJOIN, dev)
            if self.cfg.evaluate:
                self._evaluate()
                self.schedule(self.cfg.eval_interval, Kind.EVAL)
        shown = time.perf_counter()
        c = self.cfg
        reason = None
        while self._queue and reason is None:
            if checkpoint is not None and checkpoint.due():
                checkpoint.save(self)
            at = self._queue[0].at
            if self.over_budget(at):
                self.now, reason = c.time_budget, "time budget"
                break
            if self.updates_done() or self._finished:
                reason = self._finished or "max updates"
                break
            if on_progress is not None and time.perf_counter() - shown >= self.PROGRESS_EVERY:
                on_progress(self.fraction_done())
                shown = time.perf_counter()
            popped: list[Event] = [heapq.heappop(self._queue)]
            if popped[0].kind == Kind.COMPLETE and c.slot_width is not None:
                horizon = at + c.slot_width
                while self._queue and self._queue[0].at <= horizon:
                    popped.append(heapq.heappop(self._queue))
            done = [e for e in popped if e.kind == Kind.COMPLETE and self.alive[e.payload.dev]
                    and int(self.epoch[e.payload.dev]) == e.payload.epoch]
            if done:
                devs = torch.tensor([e.payload.dev for e in done])
                times = torch.tensor([e.at for e in done], dtype=torch.float64)
                self.now = max(self.now, float(times.max()))
                if self.record_events:
                    self.result.events.extend(Trace("complete", e.at, e.payload.dev) for e in done)
                self.method.on_complete(self, devs, times)
                self._inject_faults(devs)
            for e in popped:
                if e.kind == Kind.COMPLETE:
                    continue
                if self.updates_done() or self._finished:  # as exact mode's test before its next event
                    reason = self._finished or "max updates"
                    break
                if self._handle(e):
                    reason = "consensus threshold"
                    break
        reason = reason or self._finished or "no more events"
        r = self.result
        if self.cfg.evaluate:
            self._evaluate()
            r.accuracy = r.history[-1]["accuracy"]
        else:
            r.accuracy = math.nan
        r.bytes_sent, r.device_steps, r.virtual_time = self.bytes_sent, self.device_steps, self.now
        r.wall_time, r.stop_reason = time.perf_counter() - self._wall0, reason
        if on_progress is not None:
            on_progress(1.0)
        return r

    def _handle(self, e: Event) -> bool:
        """Apply one event other than COMPLETE; True when it ends the run (the consensus threshold)."""
        at, payload = e.at, e.payload
        self.now = max(self.now, at)
        if e.kind == Kind.ARRIVE:
            msg: Message = payload
            if msg.dst != SERVER and not self.alive[msg.dst]:
                self.dropped += 1
                return False
            if self.record_events:
                self.result.events.append(Trace("arrive", at, msg.src, msg.dst))
            self.method.on_arrive(self, msg)
        elif e.kind == Kind.ROUND:
            self.method.on_round(self, payload)
        elif e.kind == Kind.FAIL:
            self._fail(payload)
        elif e.kind == Kind.REJOIN:
            if math.isfinite(at):
                self._rejoins[payload] -= 1
            if not self.alive[payload]:
                self.alive[payload] = True
                self.epoch[payload] += 1
                self.coordinator.register(f"device-{payload}")
                if self.record_events:
                    self.result.events.append(Trace("rejoin", at, payload))
                self.method.on_rejoin(self, payload)
        elif e.kind == Kind.EVAL:
            h = self._evaluate()
            self.schedule(at + self.cfg.eval_interval, Kind.EVAL)
            thr = self.cfg.consensus_threshold
            return thr is not None and self.t.min() > 0 and h["consensus"] < thr
        return False

    def _fail(self, dev: int) -> None:
        if self.alive[dev]:
            self.alive[dev] = False
            self.epoch[dev] += 1
            self.coordinator.device_failed(dev, self.now)
            if self.record_events:
                self.result.events.append(Trace("fail", self.now, dev))

    def _inject_faults(self, devs: torch.Tensor) -> None:
        p = self.faults.prob
        if p <= 0:
            return
        u = counter_uniform(self.cfg.seed, STREAM_FAULT, devs, self.t[devs])
        for d in devs[u < p].tolist():
            self.schedule(self.now, Kind.FAIL, d)
            self.schedule(self.now + self.faults.downtime, Kind.REJOIN, d)

    def _poisoned(self, data: DeviceData) -> DeviceData:
        """`data` with the labels of the `faults.corrupt` devices' samples flipped, y -> C - 1 - y (a copy)."""
        classes = int(max(data.y.max(), data.y_test.max())) + 1
        y = data.y.clone()
        for d in self.faults.corrupt:
            idx = data.parts[d, :int(data.sizes[d])]
            y[idx] = classes - 1 - data.y[idx]
        return dataclasses.replace(data, y=y)

    def noise_senders(self, devs: torch.Tensor) -> torch.Tensor:
        """`[B]` bool: which of the devices `devs` push noise models (`faults.corrupt` in noise mode)."""
        f = self.faults
        if f.corrupt_mode != "noise" or not f.corrupt:
            return torch.zeros(devs.shape[0], dtype=torch.bool)
        return torch.isin(devs.cpu(), torch.tensor(f.corrupt))

    def outgoing(self, devs: torch.Tensor, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """The models `[B, P]` that devices `devs` put on the wire when theirs are `x [B, P]`: `x` itself (no copy)
        unless one of them pushes noise (`noise_senders`); then a copy whose rows of those devices are noise models,
        N(0, (corrupt_scale * std(x_b))^2) entries (Box-Muller from the counter stream keyed by (device, update,
        entry)), times the device's mask where `masks [B, P]` are given (a sparse model keeps its mask on the wire).
        Every method calls it where a model leaves a device; a corrupted device's own model stays its honest
        training, only what it sends is noise."""
        rows = self.noise_senders(devs).nonzero().squeeze(1)
        if len(rows) == 0:
            return x
        d, xr = devs[rows].cpu(), x[rows.to(x.device)]
        keys = (self.cfg.seed, STREAM_CORRUPT, d.view(-1, 1), self.t[d].view(-1, 1), torch.arange(self.P).view(1, -1))
        u1, u2 = counter_uniform(*keys, 0), counter_uniform(*keys, 1)
        z = torch.sqrt(-2 * torch.log1p(-u1)) * torch.cos(2 * math.pi * u2)
        noise = (z.to(xr) * self.faults.corrupt_scale * xr.std(dim=1, keepdim=True)).to(x.dtype)
        if masks is not None:
            noise = noise * masks[rows.to(masks.device)]
        out = x.clone()
        out[rows.to(x.device)] = noise
        return out

    def own_losses(self, devs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Losses `[B]` (float64, CPU) of the models `x [B, P]` on the devices' own minibatches at this update (the
        loss a device announces with the model it sends)."""
        xb, yb = self.data.batch(devs.to(self.dev), self.t[devs].to(self.dev), 0, self.cfg.batch_size, self.cfg.seed)
        return self.net.losses(x, xb, yb).double().cpu()

    def _evaluate(self) -> dict:
        """One evaluation by the protocol of `engines.evaluation` (docs/EVALUATION.md): every evaluated model's
        accuracy and loss on the test samples (their mean is `accuracy`), the consensus model's (`consensus_accuracy`),
        the consensus distance over shared entries and the mask disagreement. Models all equal (every device at time
        0, a server's global model) are evaluated once, and then the consensus model is that model."""
        models = self.method.eval_models(self)
        hook = getattr(self.method, "eval_masks", None)
        masks = hook(self) if hook is not None else None
        same = models.shape[0] == 1 or bool((models == models[:1]).all())
        acc, loss = self.net.accuracy_and_loss(models[:1] if same else models, self._x_eval, self._y_eval)
        if same:
            c_acc, c_loss = acc[0], loss[0]
        else:
            c_acc, c_loss = (v[0] for v in self.net.accuracy_and_loss(consensus_model(models, masks)[None],
                                                                     self._x_eval, self._y_eval))
        self.result.device_accuracy = (acc.expand(models.shape[0]) if same else acc).tolist()
        h = {"time": self.now, "wall": time.perf_counter() - self._wall0, "accuracy": float(acc.mean()),
             "test_loss": float(loss.mean()), "consensus_accuracy": float(c_acc), "consensus_test_loss": float(c_loss),
             "consensus": consensus_distance(models, masks), "mask_disagreement": mask_disagreement(masks),
             "bytes_sent": self.bytes_sent, "updates": int(self.t.sum()), "alive": int(self.alive.sum())}
        self.result.history.append(h)
        hook = getattr(self.method, "on_evaluate", None)
        if hook is not None:
            hook(self, h)
        return h
