"""The virtual-clock cost model: every computation a method does costs virtual time, by one rule for all methods.

A device's speed is derived from its profile: training one sample (forward + backward, about three forward
passes) takes `time_per_sample` seconds, so the device does

    speed_d = TRAIN_PASSES * MFP * 1e6 / time_per_sample_d      multiply-accumulates (MACs) per second,

MFP the dense model's million MACs per forward pass of one sample (AEDFL Table 1's MFP). Any work W (MACs) then
costs W / speed_d seconds on device d. The work of each kind of computation, in MACs:

    forward of b samples            b * MFP * 1e6
    gradient on b samples           TRAIN_PASSES * b * MFP * 1e6          (forward + backward)
    Hessian-vector product, b       HVP_PASSES * b * MFP * 1e6            (forward-over-reverse: about two gradients)
    weighted sum of k models        k * P                                 (P parameters; masked, eq. 4.11: 2 k P)
    LSTM over m slots, hidden h     m * (4 h (i + h) + h^2 + h)           (i inputs; backward: twice that again)

Local training is charged by the structure the model actually has: `cost_fraction` = structural MFP / dense MFP of a
structurally pruned model (channels/neurons removed). Unstructured sparsity is charged as dense: dense hardware does
not skip zeros. A server's work (aggregating k models) is charged at the median device speed.
"""

from __future__ import annotations

import torch

TRAIN_PASSES = 3.0
HVP_PASSES = 2.0 * TRAIN_PASSES


def device_speed(time_per_sample: torch.Tensor, dense_mfp: float) -> torch.Tensor:
    """speed_d in MACs per virtual second, `[D]` float64 (module docstring)."""
    return TRAIN_PASSES * float(dense_mfp) * 1e6 / time_per_sample.double()


def forward_macs(mfp: float, samples: float) -> float:
    return float(mfp) * 1e6 * samples


def gradient_macs(mfp: float, samples: float) -> float:
    return TRAIN_PASSES * forward_macs(mfp, samples)


def hvp_macs(mfp: float, samples: float) -> float:
    return HVP_PASSES * forward_macs(mfp, samples)


def average_macs(models, numel: int, masked: bool = False):
    """A weighted sum of `models` (a count or a tensor of counts) models of `numel` parameters."""
    return models * numel * (2 if masked else 1)


def lstm_macs(steps, hidden: int, inputs: int, backward: bool = False):
    """One LSTM layer plus the two-layer head of the selection policy over `steps` slots; x3 with backward."""
    per_step = 4 * hidden * (inputs + hidden) + hidden * hidden + hidden
    return steps * per_step * (TRAIN_PASSES if backward else 1.0)
