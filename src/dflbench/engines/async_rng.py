"""Counter-based random numbers for the asynchronous simulator.

`counter_uniform(seed, *keys)` hashes (seed, key_1, ..., key_k) with splitmix64 (Steele et al. 2014) into a uniform
float64 in [0, 1), elementwise over broadcast integer tensors. A device's draw at its t-th local update is a
function of (seed, stream, device, t, ...) only, so it does not depend on which other devices share its batch or in
which order events are processed: the exact and the batched simulator modes see the same random numbers.
"""

from __future__ import annotations

import torch

_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB

# named streams, so that different uses of the same (device, t) draw independent numbers
STREAM_BATCH, STREAM_NEIGHBOR, STREAM_FAULT, STREAM_POLICY, STREAM_SAMPLE, STREAM_MASK, STREAM_CORRUPT = range(1, 8)


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _srl(z, 30)) * _signed(_MUL1)
    z = (z ^ _srl(z, 27)) * _signed(_MUL2)
    return z ^ _srl(z, 31)


def counter_hash(seed: int, *keys, device=None) -> torch.Tensor:
    """splitmix64 chain: h_0 = mix(seed + golden), h_k = mix(h_{k-1} ^ key_k + golden); int64 bit patterns."""
    h = _mix(torch.tensor(seed, dtype=torch.int64, device=device) + _signed(_GOLDEN))
    for k in keys:
        k = torch.as_tensor(k, dtype=torch.int64, device=device)
        h = _mix((h ^ k) + _signed(_GOLDEN))
    return h


def counter_uniform(seed: int, *keys, device=None) -> torch.Tensor:
    """Uniform float64 in [0, 1) from the top 53 bits of `counter_hash(seed, *keys)` (keys broadcast)."""
    return _srl(counter_hash(seed, *keys, device=device), 11).to(torch.float64) / float(1 << 53)


def counter_randint(high: torch.Tensor, seed: int, *keys, device=None) -> torch.Tensor:
    """Integers uniform in [0, high) (elementwise `high` >= 1), as floor(u * high)."""
    high = torch.as_tensor(high, device=device)
    u = counter_uniform(seed, *keys, device=device)
    return torch.minimum((u * high).long(), high.long() - 1)
