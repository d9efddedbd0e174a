"""AEDFL's coordinator (Sec. 3, Fig. 1): it hands out device indices and watches heartbeats, nothing more.

Like Cassandra's gossip membership it takes no part in training or aggregation. Devices beat every
`heartbeat_interval` virtual seconds while alive; the coordinator deems a device failed once no beat came for
`timeout` seconds. Senders pick among the neighbors the coordinator deems alive, so a message can still go to a
device that failed less than `timeout` ago, and is then lost. Beats are implicit (no events): an alive device's
last beat is the latest multiple of the interval, a failed one's the last multiple before it failed.

Faults: `FaultConfig(schedule=((device, fail_at, rejoin_at), ...), prob=p, downtime=d)`; with probability `p` a
device fails right after a local update and rejoins `d` seconds later with its model and its data.
`corrupt=(j, ...)`: harmful neighbours. `corrupt_mode="noise"`: devices j push noise instead of their model
(Gaussian entries with `corrupt_scale` times the standard deviation of the real model, keyed by device and update),
announcing the loss that noise has on their own minibatch; every method sends its models through
`AsyncSimulator.outgoing`, which does this, and a corrupt device's own model stays its honest training.
`corrupt_mode="labels"`: devices j train on flipped labels y -> C - 1 - y (data poisoning; every method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dflbench.errors import UserError

CORRUPT_MODES = ("noise", "labels")


@dataclass(frozen=True)
class FaultConfig:
    schedule: tuple[tuple[int, float, float], ...] = ()
    prob: float = 0.0
    downtime: float = 1.0
    corrupt: tuple[int, ...] = ()
    corrupt_mode: str = "noise"
    corrupt_scale: float = 1.0

    def __post_init__(self):
        if self.corrupt_mode not in CORRUPT_MODES:
            raise UserError(f"corrupt_mode must be one of {CORRUPT_MODES}, got {self.corrupt_mode!r}")
        if self.corrupt_scale <= 0 or len(set(self.corrupt)) != len(self.corrupt):
            raise UserError(f"corrupt devices must be distinct and corrupt_scale > 0, got {self.corrupt}, "
                            f"{self.corrupt_scale}")
        if not 0.0 <= self.prob < 1.0:
            raise UserError(f"fault probability must be in [0, 1), got {self.prob}")
        if self.downtime <= 0:
            raise UserError(f"fault downtime must be positive, got {self.downtime}")
        for dev, fail_at, rejoin_at in self.schedule:
            if not 0 <= fail_at < rejoin_at:
                raise UserError(f"fault schedule entry ({dev}, {fail_at}, {rejoin_at}): need 0 <= fail_at < rejoin_at")


class Coordinator:
    """Index assignment and heartbeat-based failure detection for `n` devices."""

    def __init__(self, n: int, heartbeat_interval: float = 1.0, timeout: float = 3.0):
        if heartbeat_interval <= 0 or timeout < heartbeat_interval:
            raise UserError(f"coordinator: need heartbeat_interval > 0 and timeout >= interval, got "
                            f"{heartbeat_interval}, {timeout}")
        self.n, self.interval, self.timeout = n, heartbeat_interval, timeout
        self.index: dict[str, int] = {}
        self.failed_at = torch.full((n,), math.inf, dtype=torch.float64)
        self.joins = 0

    def register(self, uid: str) -> int:
        """The index of device `uid`: a new device gets the next free one, a rejoining device its old one."""
        if uid not in self.index:
            if len(self.index) == self.n:
                raise ValueError(f"coordinator: all {self.n} indices are taken; cannot register {uid!r}")
            self.index[uid] = len(self.index)
        self.joins += 1
        i = self.index[uid]
        self.failed_at[i] = math.inf
        return i

    def device_failed(self, i: int, now: float) -> None:
        self.failed_at[i] = now

    def last_heartbeat(self, now: float) -> torch.Tensor:
        """[n] time of each device's last beat (multiples of the interval, up to now or its failure)."""
        upto = torch.clamp(self.failed_at, max=now)
        return torch.floor(upto / self.interval) * self.interval

    def alive_view(self, now: float) -> torch.Tensor:
        """[n] bool: the devices the coordinator deems alive (a beat within the last `timeout` seconds)."""
        return (now - self.last_heartbeat(now)) <= self.timeout
