"""Sageflow (Park et al. 2021, Sec. 3), AEDFL Table 1: staleness-aware grouping with entropy-based filtering and
loss-weighted averaging, every K arrivals:
  1. entropy filter: upload k is dropped when its mean prediction entropy on the server's public set exceeds
     E_th = `entropy_threshold` * log C (C classes; an upload far from any data, e.g. a poisoned one, predicts
     near-uniformly);
  2. loss-weighted averaging per staleness group g: v_g = sum_k s_k / f_k^delta x_k / sum_k s_k / f_k^delta, f_k the
     upload's loss on the public set;
  3. groups combined with weights S_g / (1 + g)^lambda (S_g: the group's samples), z = sum_g a_g v_g, and
     x <- (1 - gamma) x + gamma z.
None kept: the global model stays.
Departure (stated): Sageflow's server holds public data; dflbench has none, so the public set is `public_samples`
images drawn (seeded) from the devices' pooled training data, i.e. from the same distribution, as the paper assumes;
with harmful neighbours in labels mode (`FaultConfig`) it keeps the labels the data had before the flip
(`AsyncSimulator.clean_y`), as a server's own data would. The default E_th = log C drops only uploads predicting
uniformly: a freshly initialised LeNet-5 already predicts with 0.99-0.999 log C (measured on the tests' data), so a
lower E_th drops every early upload of one-step local updates and the global model never leaves its initialisation
(Sageflow tunes E_th for models trained several local epochs); lower it when simulating adversaries."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dflbench.aggregation import rules
from dflbench.engines.cost import forward_macs
from dflbench.errors import UserError
from dflbench.methods.registry import register_method
from dflbench.methods.server.base import BufferedServer, BufferOptions
from dflbench.registry import option


@dataclass(frozen=True)
class SageflowOptions(BufferOptions):
    gamma: float = option(0.5, "rate in (0, 1] at which the grouped average enters the global model")
    entropy_threshold: float = option(1.0, "E_th / log C in (0, 1]: uploads predicting with more entropy are dropped")
    delta: float = option(1.0, "delta >= 0: the loss exponent of the in-group weights s_k / f_k^delta")
    staleness_exponent: float = option(1.0, "lambda >= 0: group weights S_g / (1 + g)^lambda")
    public_samples: int = option(100, "size of the server's public set (drawn from the pooled training data)")

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.gamma <= 1:
            raise UserError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0 < self.entropy_threshold <= 1:
            raise UserError(f"entropy_threshold must be in (0, 1] (a fraction of log C), got {self.entropy_threshold}")
        if not (self.delta >= 0 and self.staleness_exponent >= 0):
            raise UserError(f"delta and staleness_exponent must be >= 0, got {self.delta}, {self.staleness_exponent}")
        if self.public_samples < 1:
            raise UserError(f"public_samples must be >= 1, got {self.public_samples}")


def sageflow_combine(models: torch.Tensor, samples: torch.Tensor, losses: torch.Tensor, taus: torch.Tensor,
                     delta: float, lam: float) -> torch.Tensor:
    """z = sum_g a_g v_g: loss-weighted averages v_g per staleness group, combined by a_g ~ S_g / (1 + g)^lambda."""
    w = samples / losses.clamp_min(1e-12) ** delta
    groups = taus.unique()
    v = torch.stack([rules.fedavg(models[taus == g], w[taus == g]) for g in groups])
    a = torch.stack([samples[taus == g].sum() / (1 + g) ** lam for g in groups])
    return rules.fedavg(v, a)


@register_method("sageflow", options=SageflowOptions, kind="server",
                 paper="Park et al. 2021 (AEDFL Table 1); public set drawn from the training data")
class Sageflow(BufferedServer):
    name = "sageflow"

    def __init__(self, options: SageflowOptions = SageflowOptions()):
        super().__init__(options)

    def setup(self, sim) -> None:
        n = sim.data.x.shape[0]
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(sim.cfg.seed))[:self.options.public_samples]
        self.x_pub = sim.data.prepare(sim.data.x[idx.to(sim.data.x.device)])
        self.y_pub = sim.clean_y[idx.to(sim.clean_y.device)]     # the server's data: never a corrupt device's labels
        super().setup(sim)

    def upload_macs(self, sim) -> float:
        """Merging the upload plus scoring it: one forward pass over the public set (`engines.cost`)."""
        return super().upload_macs(sim) + forward_macs(sim.dense_mfp, self.options.public_samples)

    def scores(self, sim, models: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean prediction entropy over log C `[K]` and loss `[K]` (float64, CPU) of `models` on the public set."""
        logp = sim.net.logits(models, self.x_pub).log_softmax(-1)                       # [K, n, C]
        entropy = -(logp.exp() * logp).sum(-1).mean(-1) / math.log(logp.shape[-1])
        loss = F.nll_loss(logp.flatten(0, 1), self.y_pub.repeat(models.shape[0]), reduction="none")
        return entropy.double().cpu(), loss.view(models.shape[0], -1).mean(-1).double().cpu()

    def aggregate(self, sim, devs, models, taus) -> torch.Tensor:
        entropy, loss = self.scores(sim, models)
        keep = entropy <= self.options.entropy_threshold
        if not keep.any():
            return self.xg
        o = self.options
        z = sageflow_combine(models[keep], self.sizes[devs][keep], loss[keep], taus[keep], o.delta,
                             o.staleness_exponent)
        return (1 - o.gamma) * self.xg + o.gamma * z
