"""AEDFL's adaptive sparse training (Sec. 5) on a host's stacked devices, and the MFLOPs of masked models.

The host (`AsyncSimulator`, or the runtime's `AsyncNode` for its one device) provides what `AEDFLStep` documents:
`net`, `data`, `cfg` (batch_size, seed), the update counters `t` and `model_mflops`. A thin composition of
`dflbench.pruning`'s device-batched functions (`dflbench/pruning/batched.py`; the math and
its equations are documented there). At scheduled local updates a device re-selects its mask from the FULL model
(pruned entries may come back, Sec. 5):

* curvature (`device_curvature`): minibatch loss, gradient g, Hutchinson diagonal h of the Hessian (Rademacher
  probes from the engine's counter-based stream, so batching does not change them) and the secant Lipschitz
  estimate L between the current model m and the initial model m^o, vmapped over devices;
* lossless rate (`eigengap_rates`): p* = p / d from the first gap > 4 L of the ascending nonzero curvatures h,
  floored at `min_rate` and capped at `max_rate`;
* eq. 5.16 (`neighbor_weighted_rates`): p_i = sum_j w_ij p_j + w_ii p*_i over the neighbors' last announced rates
  (they arrive with the models and sit in the neighbour cache; slots not aggregated this update have weight 0),
  capped at `max_rate`;
* eq. 5.14-5.15 per entry (`entry_scores`): H ~ diag(h), (H^{r,r})^{-1} ~ 1 / (|h| + damping mean|h|),
  lambda_g = ||g|| / (C ||g||_max);
* the floor(p_i P) lowest-scoring entries are pruned (`prune_lowest`); cost = MFP / dense MFP (`masked_mfp`).

Deviation (stated): the gap rule rarely fires while training is far from a quadratic regime (L is then larger than
every curvature gap), so `min_rate` (default 0.4, the MFLOP reduction AEDFL reports for LeNet in Table 1) floors
p*. Simplifications (stated): the Hessian is its Hutchinson diagonal (the paper uses PyHessian's spectrum), so the
eigenvalues of the rate rule are the sorted diagonal curvatures; pruning is unstructured.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from dflbench.aggregation.flat import unflatten
from dflbench.engines.async_rng import STREAM_MASK, counter_uniform
from dflbench.engines.cost import gradient_macs, hvp_macs
from dflbench.errors import UserError
from dflbench.pruning import (
    device_curvature,
    eigengap_rates,
    entry_scores,
    neighbor_weighted_rates,
    prune_lowest,
)
from dflbench.registry import option


@dataclass(frozen=True)
class PruningSchedule:
    """When a device prunes (`ScheduledPruner.due`): the options every pruning method of the AEDFL loop shares."""

    every: int = option(10, "prune at every `every`-th local update of a device")
    until: int = option(10_000, "no pruning after this many local updates")

    def __post_init__(self):
        if self.every < 1 or self.until < 0:
            raise UserError(f"pruning schedule: every >= 1 and until >= 0, got every={self.every}, until={self.until}")


@dataclass(frozen=True)
class PruningConfig(PruningSchedule):
    """AEDFL's adaptive-pruning options (the `aedfl` and `aedfl-p` method options)."""

    min_rate: float = option(0.4, "floor of the lossless rate p* (module docstring: the stated deviation)")
    max_rate: float = option(0.6, "cap of p* and of the neighbour-weighted rate p_i, eq. 5.16")
    C: float = option(2.0, "C >= 1 of lambda_g = ||g|| / (C ||g||_max), eq. 5.15")
    hutchinson: int = option(1, "Rademacher probes of the Hutchinson Hessian diagonal")
    damping: float = option(1e-3, "(H^{r,r})^{-1} ~ 1 / (|h| + damping mean|h|), relative to mean|h|")

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.min_rate <= self.max_rate < 1 or self.C < 1 or self.hutchinson < 1 or self.damping <= 0:
            raise UserError("PruningConfig: every >= 1, 0 <= min_rate <= max_rate < 1, C >= 1, hutchinson >= 1, "
                            "damping > 0")


class ScheduledPruner:
    """What every pruner of the AEDFL loop shares: the schedule (`cfg.every`, `cfg.until`), per-device rates `[R]`
    for the R devices of `host` and the MFLOPs of masked models."""

    def __init__(self, host, cfg):
        self.cfg = cfg
        self.rate = torch.zeros(len(host.t), dtype=torch.float64)
        self.dense = host.model_mflops()

    def due(self, t: torch.Tensor) -> torch.Tensor:
        return (t % self.cfg.every == 0) & (t <= self.cfg.until)

    def mflops(self, host, masks: torch.Tensor) -> torch.Tensor:
        return host.model_mflops(masks)


class AdaptivePruner(ScheduledPruner):
    """Per-device pruning rates, masks and the scheduled re-pruning of AEDFL Sec. 5 (module docstring)."""

    def __init__(self, host, cfg: PruningConfig):
        super().__init__(host, cfg)
        self.gmax = torch.zeros(len(host.t), dtype=torch.float64)
        self.ids = host.data.ids.cpu()
        self.net = net = host.net

        def loss(flat, batch):
            return F.cross_entropy(functional_call(net.module, unflatten(flat, net.spec), (batch[0],)), batch[1])

        self._loss = loss

    def work_macs(self, host) -> float:
        """MACs of one pruning call (`engines.cost`): the gradients at m and m^o, the Hutchinson probes' HVPs and
        the secant's HVP along Delta m, on one minibatch."""
        mfp, b = float(self.dense), host.cfg.batch_size
        return 2 * gradient_macs(mfp, b) + (self.cfg.hutchinson + 1) * hvp_macs(mfp, b)

    def probes(self, host, devs, P: int) -> torch.Tensor:
        """Rademacher probes `[B, hutchinson, P]` from the engine's counter stream (device, update, probe, entry)."""
        u = counter_uniform(host.cfg.seed, STREAM_MASK, self.ids[devs].view(-1, 1, 1), host.t[devs].view(-1, 1, 1),
                            torch.arange(self.cfg.hutchinson).view(1, -1, 1), torch.arange(P).view(1, 1, -1))
        return torch.where(u < 0.5, -1.0, 1.0)

    def prune(self, host, devs, x, masks, w, active, neighbor_rates):
        """New masks `[B, P]` and compute-cost fractions `[B]` for rows `devs` at their models `x`, given the
        aggregation weights `w [B, K+1]`, active slots and the neighbours' announced rates `[B, K]`."""
        dev = x.device
        xb, yb = host.data.batch(devs.to(dev), host.t[devs].to(dev), -1, host.cfg.batch_size, host.cfg.seed)
        self.net.module.train()
        curv = device_curvature(self._loss, x, self.net.init, (xb, yb),
                                self.probes(host, devs, x.shape[1]).to(device=dev, dtype=x.dtype))
        gnorm = curv.gradient.norm(dim=1).double().cpu()
        self.gmax[devs] = torch.maximum(self.gmax[devs], gnorm)
        p_star = eigengap_rates(curv.diagonal, curv.lipschitz).cpu().clamp(self.cfg.min_rate, self.cfg.max_rate)
        wn = w[:, 1:].double() * active[:, 1:].double()
        rate = neighbor_weighted_rates(p_star, w[:, 0].double(), neighbor_rates[:, :wn.shape[1]], wn,
                                       tol=1e-5).clamp(max=self.cfg.max_rate)
        self.rate[devs] = rate
        score = entry_scores(x, curv, self.gmax[devs], self.cfg.C, self.cfg.damping)
        new = prune_lowest(score, rate)
        return new, self.mflops(host, new) / self.dense
