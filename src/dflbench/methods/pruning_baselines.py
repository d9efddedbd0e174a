"""Pruning baselines of AEDFL Table 1 (hrank, fedap, hap) on the decentralized asynchronous loop.

The loop is AEDFL-0's (`AEDFL` with none of its modules: each cached model averaged once, with the static topology
weights, masked aggregation eq. 4.11, one random out-neighbour per update); at the same scheduled updates as AEDFL's
pruning (`PruningSchedule`), each due device re-prunes its full aggregated model with `dflbench.pruning.prune_model`
on its current local minibatch, structured units (conv channels, linear neurons; the classifier is never pruned):
  hrank  (Lin et al. 2020)   every layer loses floor(rate * units) units, those whose output feature maps have the
                             lowest average rank (HRank's per-layer ranking at per-layer rates)
  fedap  (Zhang et al. 2022) per-layer rates from each layer's Hessian spectrum, sharing out the overall `rate`
                             (`dflbench.pruning.scoring.fedap_scores`), HRank scores inside a layer; the device's local
                             batch replaces FedAP's server-side shared data, which a decentralized network does not
                             have. FedAP sets its layer rates once, from the server's data; here each device sets them
                             at its first pruning and keeps them, re-ranking units by HRank at later prunings (the
                             spectra at every pruning cost 32 Hessian products per call and gave FedAP half the
                             updates of HRank in the same virtual time)
  hap    (Yu et al. 2022)    HAP's sensitivity tr(H_uu) / |u| ||w_u||^2 (Hutchinson), the floor(rate * units) least
                             sensitive units of the whole model, a layer losing at most `layer_limit` of its units
                             (HAP's prune_ratio_limit; at 0.95 a LeNet-5 conv layer still keeps only one channel)
The baselines have no neighbour-aware rate rule: `rate` is fixed. Its defaults are calibrated, as AEDFL's rate
bounds are, to each method's compute in Table 1 (LeNet-5, MFP of a dense 0.283: hrank 0.277, fedap 0.278, hap
0.173), measured on LeNet-5 after 400 SGD steps on Fashion-MNIST, three local batches (structural MFP / dense):
  hrank  rate 0.05 -> 0.991 (linear neurons only; 0.0625 already removes a conv2 channel: 0.942), Table 1 0.979
  fedap  rate 0.05 -> 0.991 (same per-layer counts at this rate), Table 1 0.982
  hap    rate 0.075: at 0.1 -> 0.47-0.83, mean 0.65 (the whole-model ranking picks conv channels or not, batch by
         batch); Table 1 0.611
Checked by 16-device Fashion-MNIST runs (30 virtual s, seed 0; the final structure's MFP / dense): hrank 0.991, fedap
0.991, hap 0.698 at 0.075 and 0.519 at 0.1.
The paper gives the methods' MFP, not their rates; at the earlier shared default 0.4 they removed 40-70% of the
MACs (hap's accuracy fell to 0.15 at 16 devices). MFLOPs and the compute-cost fraction come from the pruned
structure (`dflbench.pruning.structured_mfp`: a dead unit also removes the weights that read it).
Simplification: pruning runs model by model (a loop over the due devices, at pruning updates only); local training
and aggregation stay batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils import vector_to_parameters

from dflbench.engines.cost import forward_macs, hvp_macs
from dflbench.errors import UserError
from dflbench.methods.aedfl.method import AEDFL, AEDFLConfig
from dflbench.methods.aedfl.pruning import PruningSchedule, ScheduledPruner
from dflbench.methods.registry import register_method
from dflbench.pruning import PruningConfig, find_candidates, prune_model
from dflbench.registry import option


@dataclass(frozen=True)
class PruningBaselineOptions(PruningSchedule):
    rate: float = option(0.1, "fraction of the structured units pruned, in [0, 1): per layer (hrank), shared out "
                         "over the layers (fedap), over the whole model (hap); each method's default is calibrated "
                         "to its Table 1 MFP on LeNet-5 (module docstring)")
    num_probes: int = option(4, "Hutchinson probes of the Hessian diagonal (hap)")
    layer_limit: float = option(0.95, "hap: a layer loses at most this fraction of its units (HAP's "
                                      "prune_ratio_limit; 0.95 in the authors' CIFAR config)")
    slq_steps: int = option(8, "Lanczos steps of each layer's Hessian spectrum (fedap)")
    slq_runs: int = option(1, "stochastic Lanczos quadrature runs (fedap)")

    def __post_init__(self):
        super().__post_init__()
        if (not 0 <= self.rate < 1 or not 0 <= self.layer_limit <= 1
                or min(self.num_probes, self.slq_steps, self.slq_runs) < 1):
            raise UserError(f"pruning baselines need every >= 1, rate in [0, 1), layer_limit in [0, 1] and "
                            f"num_probes, slq_steps, slq_runs >= 1, got {self}")


@dataclass(frozen=True)
class HRankOptions(PruningBaselineOptions):
    rate: float = option(0.05, "fraction of each layer's units pruned, in [0, 1) (calibrated: Table 1's MFP, module "
                               "docstring)")


@dataclass(frozen=True)
class FedAPOptions(PruningBaselineOptions):
    rate: float = option(0.05, "overall fraction of the units pruned, shared out over the layers by their spectra, "
                               "in [0, 1) (calibrated: Table 1's MFP, module docstring)")


@dataclass(frozen=True)
class HAPOptions(PruningBaselineOptions):
    rate: float = option(0.075, "fraction of the model's units pruned (the least sensitive over the whole model), "
                                "in [0, 1) (calibrated: Table 1's MFP, module docstring)")


class PackagePruner(ScheduledPruner):
    """Scheduled structured pruning of single models with a `dflbench.pruning` scoring rule."""

    def __init__(self, sim, rule: str, cfg: PruningBaselineOptions):
        super().__init__(sim, cfg)
        self.rule = rule
        self.pcfg = PruningConfig(rule=rule, approximation="diagonal", num_probes=cfg.num_probes,
                                         slq_steps=cfg.slq_steps, slq_runs=cfg.slq_runs, layerwise=rule == "hrank",
                                         max_group_rate=cfg.layer_limit if rule == "hap" else 1.0)
        self.rate.fill_(cfg.rate)
        self.layer_rates: dict[int, torch.Tensor] = {}    # fedap: each device's layer rates, from its first pruning
        self.hrank = PruningConfig(rule="hrank")
        self.model = sim.net.template
        self.init = {k: v.detach().clone() for k, v in self.model.named_parameters()}
        self.example = sim.data.prepare(sim.data.x_test[:1]).cpu()
        self.layers = len(find_candidates(self.model, self.example).groups)

    def work_macs(self, host, rows: torch.Tensor) -> float | torch.Tensor:
        """MACs of one pruning call (`engines.cost`) on one minibatch of b samples: hrank a forward pass for the
        feature maps (their ranks' SVDs, tiny next to it, are not counted), hap `num_probes` Hessian-vector products,
        fedap a forward pass, plus at a device's first pruning `slq_runs * slq_steps` Hessian-vector products per
        prunable layer (its layer rates)."""
        mfp, b = float(self.dense), host.cfg.batch_size
        if self.rule == "hap":
            return self.cfg.num_probes * hvp_macs(mfp, b)
        work = forward_macs(mfp, b)
        if self.rule != "fedap":
            return work
        first = torch.tensor([int(d) not in self.layer_rates for d in rows.tolist()], dtype=torch.float64)
        return work + first * self.layers * self.cfg.slq_runs * self.cfg.slq_steps * hvp_macs(mfp, b)


    def prune(self, sim, devs, x, masks, w, active, neighbor_rates):
        xb, yb = sim.data.batch(devs.to(sim.dev), sim.t[devs].to(sim.dev), -1, sim.cfg.batch_size, sim.cfg.seed)
        new = []
        for b, dev in enumerate(devs.tolist()):
            vector_to_parameters(x[b].detach().cpu(), self.model.parameters())
            kept = self.layer_rates.get(dev)
            res = prune_model(self.model, F.cross_entropy, (xb[b].cpu(), yb[b].cpu()), self.cfg.rate,
                              config=self.pcfg if kept is None else self.hrank, initial_params=self.init,
                              seed=sim.cfg.seed + dev, group_rates=kept)
            if self.rule == "fedap" and kept is None:
                self.layer_rates[dev] = res.group_rates
            new.append(res.flat_mask(self.model).to(torch.bool))
        new = torch.stack(new).to(sim.dev)
        return new, self.mflops(sim, new) / self.dense


class PruningBaseline(AEDFL):
    """AEDFL-0's loop with the `dflbench.pruning` scoring rule `rule` (the subclass's name) at the scheduled
    updates."""

    rule: str
    Options: type[PruningBaselineOptions] = PruningBaselineOptions

    def __init__(self, options: PruningBaselineOptions | None = None):
        super().__init__(self.rule, AEDFLConfig(rl=False, dwu=False, prune=False))
        self.options = self.Options() if options is None else options

    def setup(self, sim) -> None:
        super().setup(sim)
        self.pruner = PackagePruner(sim, self.rule, self.options)


@register_method("hrank", options=HRankOptions, kind="pruning", paper="Lin et al. 2020 (AEDFL Table 1)")
class HRank(PruningBaseline):
    """Every layer pruned at `rate`, its units ranked by the average rank of their feature maps."""

    rule = "hrank"
    Options = HRankOptions


@register_method("fedap", options=FedAPOptions, kind="pruning",
                 paper="Zhang et al. 2022 (AEDFL Table 1); each device's local batch replaces the server's shared data")
class FedAP(PruningBaseline):
    """Per-layer rates from each layer's Hessian spectrum on the local batch, HRank scores inside a layer."""

    rule = "fedap"
    Options = FedAPOptions


@register_method("hap", options=HAPOptions, kind="pruning", paper="Yu et al. 2022 (AEDFL Table 1)")
class HAP(PruningBaseline):
    """Hessian-aware sensitivity tr(H_uu) / |u| ||w_u||^2 of each unit, ranked over the whole model."""

    rule = "hap"
    Options = HAPOptions
