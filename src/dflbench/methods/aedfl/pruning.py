"""AEDFL's adaptive sparse training (Sec. 5) on a host's stacked devices, and the MFLOPs of masked models.

The host (`AsyncSimulator`, or the runtime's `AsyncNode` for its one device) provides what `AEDFLStep` documents:
`net`, `data`, `cfg` (batch_size, seed), the update counters `t` and `model_mflops`. A thin composition of
`dflbench.pruning`'s device-batched functions (`dflbench/pruning/batched.py`). At scheduled local updates a device
re-selects its mask from the FULL aggregated model (eq. 4.11 before the local mask is applied: an entry the device
pruned carries its neighbours' aggregated value, and a unit that comes back starts from it; Sec. 5, "we consider the
whole model as the original model"). Pruning is structured, as the paper's (channels): the units are LeNet-style
conv output channels, linear neurons (not the classifier) and attention heads (`find_candidates`); the mask stays a
flat `[P]` bool over parameters.

* curvature (`device_curvature`): minibatch loss F, gradient g, the SLQ spectrum of the Hessian restricted to the
  prunable entries (`lanczos_steps` Lanczos steps from `hutchinson` Rademacher starts per device, drawn from the
  engine's counter stream so batching does not change them) and the Hutchinson diagonal h from the same runs,
  vmapped over devices;
* lossless rate p*_i (eigen-gap rule, [65]), our reading: training is the gradient flow dm/dt = -grad F(m); around
  the current model m it is dDelta/dt = -H Delta + N(Delta), N(Delta) = H Delta - (grad F(m + Delta) - grad F(m))
  (the paper's benchmark function F'), and L is the Lipschitz constant of the nonlinear part N. Inertial-manifold
  theory: a gap h_{p+1} - h_p > 4 L in the ascending spectrum h_1 <= ... <= h_d of H (d its rank) splits the
  dynamics into p slow directions and d - p fast, slaved ones. The rule takes the FIRST such gap and p* = p / d,
  as the paper writes it (`rates.eigengap_rates`); the spectrum is the SLQ density of H restricted to the prunable
  entries, so p / d is the Gauss weight of the Ritz nodes below the gap over that of the nonzero nodes (nodes within
  1e-6 of the largest |node| are the null space). L is N's secant along Delta m = m^o - m with m^o the network's
  initial model (`rates.secant_lipschitz`, whole model). No gap, or a Hessian that is numerically zero (rank 0,
  e.g. a batch at zero loss): p* = 0. p* is clamped to [`min_rate`, `max_rate`].
  What it does on real runs (measured, LeNet-5, 4 devices, issue #13): p* responds to the spectrum but takes
  three values. Early on L ~ 1-2 exceeds a quarter of the spectrum's width (~2): no gap, p* = 0. When the secant L
  falls below the spacing of the few Ritz nodes (~0.01-0.04, a long Delta m over a bounded gradient) the first gap
  is the lowest node's: p* ~ 1e-4. Both hit the floor `min_rate`. After progressive sharpening (digits at lr 0.3:
  top node 16-38 from about update 100, L ~ 1-4) the gap below the top outliers qualifies and p* is the bulk's
  weight, ~0.9997: the cap `max_rate`. Between floor and cap the rates move through eq. 5.16 (the neighbours'
  announced rates), so they differ across devices and over time.
  (The previous version read the rule on the sorted Hutchinson diagonal: p* was 0 in 79 of 79 calls.)
* eq. 5.16 (`neighbor_weighted_rates`): p_i = sum_j w_ij p_j + w_ii p*_i over the neighbours' last announced rates
  (they arrive with the models and sit in the neighbour cache; slots not aggregated this update have weight 0;
  a device without neighbours keeps p*_i), capped at `max_rate`;
* eq. 5.14-5.15 per unit (`unit_scores`): H ~ diag(h), (H^{r,r})^{-1} ~ 1 / (|h| + damping mean|h|), each unit's
  terms summed over its parameters; lambda_g = ||g|| / (C ||g||_max), ||g||_max the device's largest SGD gradient
  norm over its whole training (`observe`, every local update) and this pruning's gradient;
* the floor(p_i U) lowest-scoring of the U units are pruned (`select_device_units`, at least one unit left in every
  layer); cost = MFP of the pruned structure / dense MFP (`structured_mfp`: a removed channel also removes the next
  layer's input channel).

`rate [R]` (float64) is each device's current p_i, the fraction of its units pruned at its last pruning.
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
    CURVATURE_PATHS,
    device_curvature,
    eigengap_rates,
    find_candidates,
    neighbor_weighted_rates,
    select_device_units,
    unit_scores,
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
class AdaptivePruningConfig(PruningSchedule):
    """AEDFL's adaptive-pruning options (the `aedfl` and `aedfl-p` method options).

    The rate bounds are ours (the paper gives none) and, since the eigen-gap rule returns the floor or about 1 on
    real runs (module docstring), they set most of the rate: the defaults 0.25 / 0.40 are calibrated to Table 1's
    compute budget on LeNet-5 (AEDFL's MFP 0.172 of a dense 0.283) at Table 1's own setting, 100 devices for 300
    virtual s on the Fashion-MNIST stand-in (docs/results/aedfl-table1-fmnist-lenet5, mfp-calibration/): the cap
    0.35 ended at MFP 0.209 (seed 0), 0.45 at 0.145 +- 0.014 and 0.40 at 0.171 +- 0.013 (3 seeds; the seeds differ
    by about 10% at one cap). The structural MFP a rate gives depends on which units the scores pick (LeNet-5's 6
    conv1 channels hold most of its MACs, its 204 linear neurons few), and that changes with the setting and over a
    run (0.35 gave 0.166 at 16 devices and 30 virtual s; the `mflops` diagnostic records it per device), so it is
    calibrated by runs, not by a formula; a recipe for another model states its own bounds (ResNet-8's Table 1
    budget is 74% of dense)."""

    min_rate: float = option(0.25, "floor of the lossless rate p* (a fraction of the units): the rate while the "
                                   "eigen-gap rule finds no gap (calibrated: see AdaptivePruningConfig)")
    max_rate: float = option(0.40, "cap of p* and of the neighbour-weighted rate p_i, eq. 5.16 (calibrated: see "
                                   "AdaptivePruningConfig)")
    C: float = option(2.0, "C >= 1 of lambda_g = ||g|| / (C ||g||_max), eq. 5.15")
    hutchinson: int = option(1, "Rademacher vectors per device: the SLQ runs' starts and the diagonal's probes")
    damping: float = option(1e-3, "(H^{r,r})^{-1} ~ 1 / (|h| + damping mean|h|), relative to mean|h|")
    lanczos_steps: int = option(6, "Lanczos steps (Hessian products) of each SLQ run: the eigen-gap rule's spectrum")
    hessian: str = option("auto", "how the Hessian products run (same numbers to float rounding): loop (per device, "
                                  "reverse-over-reverse), stacked (the devices pruning in one slot through one graph), "
                                  "vmap (forward-over-reverse), auto (loop on CPU, else vmap)")

    def __post_init__(self):
        super().__post_init__()
        if (not 0 <= self.min_rate <= self.max_rate < 1 or self.C < 1 or self.hutchinson < 1 or self.damping <= 0
                or self.lanczos_steps < 2):
            raise UserError(f"AdaptivePruningConfig: need 0 <= min_rate <= max_rate < 1, C >= 1, hutchinson >= 1, "
                            f"damping > 0, lanczos_steps >= 2; got {self}")
        if self.hessian not in CURVATURE_PATHS:
            raise UserError(f"AdaptivePruningConfig: hessian must be one of {', '.join(CURVATURE_PATHS)}, "
                            f"got {self.hessian!r}")


class ScheduledPruner:
    """What every pruner of the AEDFL loop shares: the schedule (`cfg.every`, `cfg.until`), per-device rates `[R]`
    for the R devices of `host`, each device's largest SGD gradient norm `gmax [R]` over its training (`observe`)
    and the MFLOPs of masked models."""

    def __init__(self, host, cfg):
        self.cfg = cfg
        self.rate = torch.zeros(len(host.t), dtype=torch.float64)
        self.gmax = torch.zeros(len(host.t), dtype=torch.float64)
        self.dense = host.model_mflops()

    def due(self, t: torch.Tensor) -> torch.Tensor:
        return (t % self.cfg.every == 0) & (t <= self.cfg.until)

    def observe(self, rows: torch.Tensor, gradients: torch.Tensor) -> None:
        """Record the SGD gradients `[B, P]` of a local update of rows `rows` in ||g||_max (eq. 5.15)."""
        self.gmax[rows] = torch.maximum(self.gmax[rows], gradients.norm(dim=1).double().cpu())

    def mflops(self, host, masks: torch.Tensor) -> torch.Tensor:
        return host.model_mflops(masks)

    def work_macs(self, host, rows: torch.Tensor) -> float | torch.Tensor:
        """MACs the pruning call of each of the devices `rows` costs (`engines.cost`; a float: the same for each),
        asked just before the call; every pruner states its own."""
        raise NotImplementedError(f"{type(self).__name__} must state the work of a pruning call (work_macs)")


class AdaptivePruner(ScheduledPruner):
    """Per-device pruning rates, structured masks and the scheduled re-pruning of AEDFL Sec. 5 (module docstring)."""

    def __init__(self, host, cfg: AdaptivePruningConfig):
        super().__init__(host, cfg)
        self.ids = host.data.ids.cpu()
        self.net = net = host.net
        example = host.data.prepare(host.data.x[:1]).cpu()
        self.candidates = find_candidates(net.template, example)
        self.support = (self.candidates.unit_ids >= 0).to(host.dev)

    def _loss(self, flat: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """F_i at the flat model `flat` on minibatch `batch` (the function the curvature differentiates)."""
        return F.cross_entropy(functional_call(self.net.module, unflatten(flat, self.net.spec), (batch[0],)), batch[1])

    def work_macs(self, host, rows: torch.Tensor) -> float:
        """MACs of one pruning call (`engines.cost`) on one minibatch: the gradients at m and m^o, the
        `hutchinson` SLQ runs' `lanczos_steps` Hessian products each, and the secant's product along Delta m."""
        mfp, b = float(self.dense), host.cfg.batch_size
        return 2 * gradient_macs(mfp, b) + (self.cfg.hutchinson * self.cfg.lanczos_steps + 1) * hvp_macs(mfp, b)

    def probes(self, host, devs, P: int) -> torch.Tensor:
        """Rademacher vectors `[B, hutchinson, P]` from the engine's counter stream (device, update, vector, entry)."""
        u = counter_uniform(host.cfg.seed, STREAM_MASK, self.ids[devs].view(-1, 1, 1), host.t[devs].view(-1, 1, 1),
                            torch.arange(self.cfg.hutchinson).view(1, -1, 1), torch.arange(P).view(1, 1, -1))
        return torch.where(u < 0.5, -1.0, 1.0)

    def lossless_rates(self, nodes: torch.Tensor, weights: torch.Tensor, lipschitz: torch.Tensor) -> torch.Tensor:
        """p* `[B]` of the eigen-gap rule (module docstring), 0 for a rank-0 Hessian, clamped to the configured
        range."""
        rank0 = ~(nodes.abs() > 1e-6 * nodes.abs().amax(dim=1, keepdim=True)).any(dim=1)
        p = torch.zeros(len(nodes), dtype=torch.float64)
        if (~rank0).any():
            p[~rank0.cpu()] = eigengap_rates(nodes[~rank0], lipschitz[~rank0], weights[~rank0]).cpu()
        return p.clamp(self.cfg.min_rate, self.cfg.max_rate)

    def prune(self, host, devs, x, masks, w, active, neighbor_rates):
        """New masks `[B, P]` and compute-cost fractions `[B]` for rows `devs` from their FULL aggregated models
        `x [B, P]`, given the aggregation weights `w [B, K+1]`, active slots and the neighbours' announced rates
        `[B, K]`."""
        dev = x.device
        cfg = self.cfg
        xb, yb = host.data.batch(devs.to(dev), host.t[devs].to(dev), -1, host.cfg.batch_size, host.cfg.seed)
        self.net.module.train()
        z = self.probes(host, devs, x.shape[1]).to(device=dev, dtype=x.dtype)
        curv = device_curvature(self._loss, x, self.net.init, (xb, yb), z, cfg.lanczos_steps, self.support,
                                cfg.hessian)
        self.observe(devs, curv.gradient)
        p_star = self.lossless_rates(curv.nodes.double(), curv.weights.double(), curv.lipschitz.double())
        wn = w[:, 1:].double() * active[:, 1:].double()
        rate = neighbor_weighted_rates(p_star, w[:, 0].double(), neighbor_rates[:, :wn.shape[1]], wn,
                                       tol=1e-5).clamp(max=cfg.max_rate)
        self.rate[devs] = rate
        scores = unit_scores(x, curv, self.candidates, self.gmax[devs], cfg.C, cfg.damping)
        new = select_device_units(scores, self.candidates, rate)
        return new, self.mflops(host, new) / self.dense
