"""Heterogeneous device profiles for the asynchronous simulator: compute time per sample, link bandwidth, latency.

Profiles come from a seeded distribution (`sample_profiles`: log-normal compute speed and bandwidth around a base
value, the usual model of device heterogeneity) or from a CSV/TOML file (`load_profiles`). Times are virtual seconds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomllib
import torch

from dflbench.errors import UserError

COLUMNS = ("time_per_sample", "bandwidth", "latency")


@dataclass(frozen=True)
class DeviceProfiles:
    """Per-device `time_per_sample` (s), `bandwidth` (bytes/s) and `latency` (s), each a float64 tensor [D]."""

    time_per_sample: torch.Tensor
    bandwidth: torch.Tensor
    latency: torch.Tensor

    def __post_init__(self):
        n = self.time_per_sample.shape
        for name in COLUMNS:
            v = getattr(self, name)
            if v.dim() != 1 or v.shape != n:
                raise UserError(f"device profiles: {name} must be a 1-D tensor of length {n[0]}, got {tuple(v.shape)}")
        if (self.time_per_sample <= 0).any() or (self.bandwidth <= 0).any() or (self.latency < 0).any():
            raise UserError("device profiles: time_per_sample and bandwidth must be > 0 and latency >= 0")

    @property
    def n(self) -> int:
        return int(self.time_per_sample.shape[0])

    def comm_time(self, src: torch.Tensor, dst: torch.Tensor, nbytes: torch.Tensor) -> torch.Tensor:
        """Transfer time latency_src + latency_dst + bytes / min(bandwidth_src, bandwidth_dst); dst = -1 is the
        server (infinite bandwidth, no latency)."""
        src, dst = torch.as_tensor(src), torch.as_tensor(dst)
        server = dst < 0
        d = dst.clamp(min=0)
        bw = torch.where(server, self.bandwidth[src], torch.minimum(self.bandwidth[src], self.bandwidth[d]))
        lat = self.latency[src] + torch.where(server, torch.zeros_like(self.latency[d]), self.latency[d])
        return lat + torch.as_tensor(nbytes, dtype=torch.float64) / bw

    @classmethod
    def homogeneous(cls, n: int, time_per_sample: float = 1e-3, bandwidth: float = 1e7,
                    latency: float = 0.01) -> "DeviceProfiles":
        return cls(torch.full((n,), float(time_per_sample), dtype=torch.float64),
                   torch.full((n,), float(bandwidth), dtype=torch.float64),
                   torch.full((n,), float(latency), dtype=torch.float64))


def sample_profiles(n: int, seed: int, time_per_sample: float = 1e-3, bandwidth: float = 1e7, latency: float = 0.01,
                    sigma: float = 0.5) -> DeviceProfiles:
    """Log-normal heterogeneity: time_per_sample_i = base * exp(sigma z_i), bandwidth_i = base * exp(sigma z'_i),
    latency_i = base * exp(sigma z''_i / 2), z ~ N(0, 1) from `numpy.random.default_rng(seed)`."""
    if n < 1 or sigma < 0:
        raise UserError(f"sample_profiles: need n >= 1 and sigma >= 0, got n={n}, sigma={sigma}")
    z = np.random.default_rng(seed).standard_normal((3, n))
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return DeviceProfiles(t(time_per_sample * np.exp(sigma * z[0])), t(bandwidth * np.exp(sigma * z[1])),
                          t(latency * np.exp(0.5 * sigma * z[2])))


def load_profiles(path: str | Path, n: int | None = None) -> DeviceProfiles:
    """Read profiles from CSV (header with the columns time_per_sample, bandwidth, latency; one row per device in
    index order) or TOML (`[[device]]` tables with those keys). `n`, when given, must match the row count."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"device profile file {path} does not exist")
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    elif path.suffix == ".toml":
        try:
            rows = tomllib.loads(path.read_text()).get("device", [])
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"device profile file {path} is not valid TOML ({e})") from None
    else:
        raise UserError(f"device profile file {path}: use a .csv or .toml file")
    if not rows:
        raise UserError(f"device profile file {path} has no devices")
    missing = [c for c in COLUMNS if c not in rows[0]]
    if missing:
        raise UserError(f"device profile file {path}: missing columns {missing}; need {', '.join(COLUMNS)}")
    if n is not None and len(rows) != n:
        raise UserError(f"device profile file {path} describes {len(rows)} devices, the run has {n}")
    try:
        cols = {c: torch.tensor([float(r[c]) for r in rows], dtype=torch.float64) for c in COLUMNS}
    except (TypeError, ValueError) as e:
        raise UserError(f"device profile file {path}: non-numeric value ({e})") from None
    return DeviceProfiles(**cols)
