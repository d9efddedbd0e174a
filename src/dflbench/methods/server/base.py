"""What the server baselines share: a simulated server (no compute time, infinite bandwidth on its side) holding
the global model, evaluated as THE model of the run, and the asynchronous protocol of the buffered rules.

Asynchronous (`AsyncServer`): a device trains from the last global model it received (`client_lr` may scale its
step, `grad_fn` change its gradients), uploads (`AsyncSimulator.outgoing`: a harmful device uploads noise), and
waits for the server's reply (the current global model; none once it has done T = `max_updates` updates) before its
next update. An update counts towards T when its upload reaches the server, so the run (which stops once every
device has T) ends after the last upload is applied, not while it is in flight.
Staleness tau = server version now - the version the device started from; `apply(d, x_k, tau)` is the rule's
server step for one arrival. `BufferedServer` collects K = `buffer` arrivals and hands them to `aggregate` at once
(one server version per buffer); arrivals still buffered when the run stops are not applied.
The synchronous protocol (rounds) is FedAvg's (`fedavg.py`); FedProx and FedNova change its local step and its
average.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from dflbench.engines.async_sim import SERVER, AsyncSimulator, Message
from dflbench.engines.cost import average_macs
from dflbench.errors import UserError
from dflbench.registry import option


@dataclass(frozen=True)
class Upload:
    """A device's upload to the server: its model `x` (as sent: `AsyncSimulator.outgoing`) and the global version it
    trained from."""

    x: torch.Tensor
    version: int


@dataclass(frozen=True)
class GlobalModel:
    """The server's reply to device: the global model `x`, its `version`, and the device's failure epoch when it was
    sent (a reply to a device that failed since is stale)."""

    x: torch.Tensor
    version: int
    epoch: int


class ServerMethod(ABC):
    """The global model `xg` and its version, the devices' sample counts, evaluation of the global model, dense
    MFLOPs (server methods do not prune)."""

    name: str

    def __init__(self, options):
        self.options = options

    def _init_global(self, sim: AsyncSimulator) -> None:
        self.xg = sim.net.init.to(sim.dev).clone()
        self.version = 0
        self.sizes = sim.data.sizes.double().cpu()
        self.dense_mflops = sim.model_mflops()

    def eval_models(self, sim: AsyncSimulator) -> torch.Tensor:
        return self.xg.unsqueeze(0)

    def mflops(self, sim: AsyncSimulator) -> float:
        return self.dense_mflops


class AsyncServer(ServerMethod):
    """The asynchronous server protocol (module docstring); subclasses give `apply` and may change `client_lr`."""

    def setup(self, sim: AsyncSimulator) -> None:
        self._init_global(sim)
        D = sim.D
        self.start = sim.x.clone()                                   # model each device started from
        self.start_version = torch.zeros(D, dtype=torch.long)
        self.participation = torch.zeros(D)
        self.staleness_sum = torch.zeros(D, dtype=torch.float64)
        sim.schedule_completions(torch.arange(D), torch.zeros(D, dtype=torch.float64))

    def client_lr(self, sim: AsyncSimulator, devs: torch.Tensor) -> float | torch.Tensor:
        """The learning rate of the devices `devs` for their next local update: the run's, by default."""
        return sim.cfg.lr

    def grad_fn(self, sim: AsyncSimulator, devs: torch.Tensor):
        """`g(x, g) -> g` changing the minibatch gradients `[B, P]` of the devices `devs`; None: plain SGD."""
        return None

    @abstractmethod
    def apply(self, sim: AsyncSimulator, d: int, xk: torch.Tensor, tau: int) -> None:
        """The server step for device `d`'s upload `xk` of staleness `tau`."""

    def on_complete(self, sim: AsyncSimulator, devs: torch.Tensor, times: torch.Tensor) -> None:
        x, loss, _ = sim.local_sgd(devs, sim.x[devs], lr=self.client_lr(sim, devs), grad_fn=self.grad_fn(sim, devs))
        sim.account(devs, loss=loss)
        sim.x[devs] = x
        upload = sim.outgoing(devs, x)                               # noise from a harmful device (FaultConfig)
        nbytes = sim.model_bytes()
        for b, d in enumerate(devs.tolist()):
            sim.send(d, SERVER, Upload(upload[b].clone(), int(self.start_version[d])), nbytes, at=float(times[b]))

    def on_arrive(self, sim: AsyncSimulator, msg: Message) -> None:
        if msg.dst != SERVER:                                        # a device receives the global model
            d = msg.dst
            reply: GlobalModel = msg.payload
            if reply.epoch != int(sim.epoch[d]):                     # sent before the device failed: stale
                return
            sim.x[d] = reply.x
            self.start[d] = reply.x
            self.start_version[d] = reply.version
            sim.schedule_completions(torch.tensor([d]), torch.tensor([sim.now], dtype=torch.float64))
            return
        d, upload = msg.src, msg.payload
        xk, tau = upload.x, self.version - upload.version
        sim.account(d, updates=1)                                    # the update counts once the server has it
        self.participation[d] += 1
        self.staleness_sum[d] += tau
        self.apply(sim, d, xk, tau)
        if sim.below_limit()[d]:                                      # else the device has done its T updates
            self.answer(sim, d)

    def answer(self, sim: AsyncSimulator, d: int) -> None:
        """After device `d`'s upload is applied: send it the global model (SAFA defers this to its round's end)."""
        self._reply(sim, d)

    def upload_macs(self, sim: AsyncSimulator) -> float:
        """The server's work (MACs, `engines.cost`) for one applied upload: merging it into the global model, a
        weighted sum of two models."""
        return float(average_macs(2, sim.P))

    def _reply(self, sim: AsyncSimulator, d: int) -> None:
        """Send device `d` the global model once the server has done its work on the upload (`upload_macs`,
        charged at the server's speed)."""
        merge = float(sim.work_time(torch.tensor(SERVER), self.upload_macs(sim)))
        sim.send(SERVER, d, GlobalModel(self.xg.clone(), self.version, int(sim.epoch[d])), sim.model_bytes(),
                 at=sim.now + merge)

    def on_round(self, sim, payload) -> None:
        raise RuntimeError(f"{self.name} schedules no rounds")

    def on_rejoin(self, sim: AsyncSimulator, dev: int) -> None:
        """A rejoined device below T updates asks the server for the current global model."""
        if sim.below_limit()[dev]:
            self._reply(sim, dev)


@dataclass(frozen=True)
class BufferOptions:
    buffer: int = option(10, "K: arrivals aggregated per server step")

    def __post_init__(self):
        if self.buffer < 1:
            raise UserError(f"buffer must be >= 1, got {self.buffer}")


class BufferedServer(AsyncServer):
    """Every K arrivals (`self.K`: `buffer_size`; FedSA adapts it), `aggregate` them into the new global model
    (one version)."""

    def setup(self, sim: AsyncSimulator) -> None:
        self.buf: list[tuple[int, torch.Tensor, int]] = []
        self.K = self.buffer_size(sim)
        super().setup(sim)

    def buffer_size(self, sim: AsyncSimulator) -> int:
        """The initial K: `options.buffer`."""
        return self.options.buffer

    def apply(self, sim: AsyncSimulator, d: int, xk: torch.Tensor, tau: int) -> None:
        self.buf.append((d, xk, tau))
        if len(self.buf) >= self.K:
            self.flush(sim)

    def flush(self, sim: AsyncSimulator) -> None:
        """Aggregate the buffered arrivals into a new global model version and empty the buffer."""
        devs = torch.tensor([b[0] for b in self.buf])
        models = torch.stack([b[1] for b in self.buf])
        taus = torch.tensor([float(b[2]) for b in self.buf], dtype=torch.float64)
        self.xg = self.aggregate(sim, devs, models, taus)
        self.version += 1
        self.buf = []

    @abstractmethod
    def aggregate(self, sim: AsyncSimulator, devs: torch.Tensor, models: torch.Tensor,
                  taus: torch.Tensor) -> torch.Tensor:
        """The new global model from the buffered uploads `models [K, P]` of devices `devs` with staleness
        `taus [K]` (float64)."""
