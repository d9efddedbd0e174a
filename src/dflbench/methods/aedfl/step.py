"""THE AEDFL device update (Liu et al. 2024, Algorithm 1 with Sec. 4.1 and Sec. 5), for a batch of devices.

One implementation, two hosts: `AsyncSimulator` (via `AEDFL.on_complete`: the B devices completing in one time
slot) and the torch.distributed runtime (`AsyncNode`: B = 1, the rank's own device). `AEDFLStep.update` advances the
devices in rows `rows [B]` of the host by one local update each, t_i -> t_i + 1:

  1. local SGD, eq. 4.5: `local_steps` steps from x_i on minibatches zeta_{t_i, s} keyed by (device, t_i, step s)
     (the counter before the update; pruned entries held at zero), then the host's counter t_i += 1; with `dwu` or
     `rl` the first step's loss and gradient were computed at the end of the previous update (step 8) and are
     reused, not recomputed;
  2. staleness of every cache slot, delta_t = t_i - stamp (the receiver's update count at arrival:
     `dflbench.aggregation.cache`); slot 0 is the local model (delta_t = 0, the device's sample count and loss);
  3. model selection, Sec. 4.1 (`rl`): a sampled selection (`PolicySelector`); without it, AEDFL-0's rule: every
     cached model not aggregated yet (`reuse_aggregated=True`: every valid slot, each update);
  4. weights: with `dwu` the current omega_i^{t-1} (eq. 4.6-4.7 from lambda^{t-1} and this update's staleness,
     losses and selection); without, AEDFL-0's static topology weights (`static_weights`: 1/(deg_i + 1) per
     selected neighbour, the rest on the local model);
  5. aggregation with those weights: m_i^t = eq. 4.11 (`masked_average`) with pruning, eq. 4.9 without, both with
     omega^{t_i - 1} as printed; the selected slots are flagged aggregated;
  6. scheduled pruning, Sec. 5 (`prune`, `AdaptivePruner`): every update's SGD gradient norms feed ||g||_max
     (eq. 5.15); at due updates the mask is re-selected from the full aggregate (eq. 4.11 before the local mask:
     pruned entries carry the neighbours' values; eq. 5.14-5.16, with the neighbours' announced rates from the
     cache) and x_i <- full aggregate * mask, so a regrown entry starts from its aggregated value;
  7. with `dwu` or `rl`: the loss and gradient g_i of F_i at the new model on zeta_{t+1, 0}, the minibatch of the
     next update's first SGD step, which starts there (step 1 reuses them). `dwu`: eq. 4.8 with eq. 4.10's
     derivative at m_i^t (`DynamicWeights.step`, normalized step, with the masks m_i^t was built from and the mask
     applied after it): lambda^t, used by the next update's weights. `rl`: eq. 4.4 for this update's selection,
     rewarded with the loss change the aggregation caused, F_i(x_i^t; zeta_{t+1,0}) - F_i(m_i^{t-1/2}; zeta_{t+1,0})
     (`PolicySelector.reward`; `reward="loss"`: the first term alone, the paper's R_t as printed);
  8. the message each device pushes to one out-neighbour (eq. 3.2): its new model, mask, loss, sample count,
     version (its update count) and pruning rate. The host picks the out-neighbour and delivers; on arrival the
     receiver's host calls `receive`, which replaces the sender's slot atomically.

Reading of eq. 4.8-4.11 (Sec. 4.2-4.3): eq. 4.9 and 4.11 build m_i^{t_i} with omega^{t_i - 1}, and eq. 4.8 updates
lambda^{t_i} from the gradient at that m_i^{t_i}, with eq. 4.10's derivative through the models m_j^{t_i - 1} it was
built from; so the aggregate is final before lambda moves, and lambda^{t_i} first acts on the next aggregation.
Algorithm 1 lists lines 4-5 (lambda, omega) before line 7 (eq. 4.11), which read literally would need the gradient
at an aggregate that depends on the lambda being computed; the superscripts of eq. 4.8-4.11 resolve that order, and
this is what the step does. g_i is the minibatch gradient "in SGD" of eq. 4.5 at m_i^t: the next update's first
step, on a minibatch no earlier step of the device used (keyed by the update count), so an unbiased estimate of
grad F_i(m_i^t) as a held-back minibatch would be, computed once for both uses. (Until issue 27 the step computed an
extra aggregate with omega^{t-1} and its gradient on a held-back minibatch, moved lambda, then aggregated again with
omega^t; that cost one forward/backward and one aggregate more per update.)

AEDFL-0 (none of the modules) is not defined by the paper beyond "without any module". What it does here, and why:
Sec. 4.1 says a model "already aggregated in a previous local update ... can be ignored in the following model
aggregation", so each cached model is averaged at most once (re-averaging the same copies put ~80% of the averaging
mass on models averaged before and kept AEDFL-0 near chance in a measured run), with the static weights of the
exponential graph's W (eq. 3.2), the fixed weights the dynamic ones replace. `reuse_aggregated=True` keeps the other
reading (every cached model at every update).

The host interface (`StepHost`) is small and explicit: the stacked model, the device data (minibatches keyed by
(device id, update count, step) with the engine's counter-based RNG, `async_rng`, and the sample counts), the
settings lr / batch_size / local_steps / seed, the update counters `t [R]`, the device `dev` and `model_mflops`.
Every random draw is keyed by device id and update count, so a device's update does not depend on the batch it is
in, nor on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from dflbench.aggregation import (
    DynamicWeights,
    DynamicWeightsConfig,
    NeighborCache,
    NeighborSlots,
    masked_average,
    staleness,
    static_weights,
)
from dflbench.aggregation.policy import INPUT_SIZE
from dflbench.engines.async_stacked import DeviceData, StackedModel, local_sgd
from dflbench.engines.cost import average_macs, forward_macs, gradient_macs, lstm_macs
from dflbench.methods.aedfl.diagnostics import SelectionStats
from dflbench.methods.aedfl.pruning import AdaptivePruner, AdaptivePruningConfig
from dflbench.methods.aedfl.selection import PolicySelector, SelectorConfig


@dataclass(frozen=True)
class AEDFLConfig:
    """The three modules of AEDFL (Sec. 6.1 ablations switch them off) and their settings; `reuse_aggregated`:
    without `rl`, aggregate every cached model at every update instead of each one once (module docstring)."""

    rl: bool = True
    dwu: bool = True
    prune: bool = True
    reuse_aggregated: bool = False
    weights: DynamicWeightsConfig = DynamicWeightsConfig()
    policy: SelectorConfig = SelectorConfig()
    pruning: AdaptivePruningConfig = AdaptivePruningConfig()


class StepSettings(Protocol):
    lr: float
    batch_size: int
    local_steps: int
    seed: int


class StepHost(Protocol):
    """What the step needs from the process hosting its R devices."""

    net: StackedModel               # the architecture at stacked flat parameters
    data: DeviceData                # row r is device data.ids[r]: minibatches and sample counts
    cfg: StepSettings
    t: torch.Tensor                 # [R] long, CPU: local updates done; the step advances it
    dev: torch.device

    def model_mflops(self, masks: torch.Tensor | None = None) -> float | torch.Tensor: ...


@dataclass(frozen=True)
class ModelMessage:
    """What a device pushes after an update; `mask` and `rate` are None without pruning."""

    model: torch.Tensor             # [P]
    mask: torch.Tensor | None       # [P] bool
    loss: float
    samples: int
    version: int                    # the sender's update count
    rate: float | None


@dataclass(frozen=True)
class StepResult:
    """`x [B, P]`: the new models (the step never writes them again: rows may be sent as they are); `loss [B]`:
    the local training loss (float64, CPU); `t [B]`: the update counts after the update; `pruned [n]`: the rows
    re-pruned, with compute-cost fractions `cost [n]` (masked MFP / dense MFP); one message per row; `work [B]`:
    MACs done beyond local SGD (`dflbench.engines.cost`), which the simulator charges in virtual time."""

    x: torch.Tensor
    loss: torch.Tensor
    t: torch.Tensor
    pruned: torch.Tensor
    cost: torch.Tensor
    messages: list[ModelMessage]
    work: torch.Tensor


class AEDFLStep:
    """The per-device state of AEDFL for the devices `slots.rows` of `host` (neighbour cache, masks, lambda, the
    selection policies, the pruner) and the update that advances it (module docstring). `concurrent`: another
    thread delivers messages (the runtime's receiver)."""

    def __init__(self, config: AEDFLConfig, host: StepHost, slots: NeighborSlots, concurrent: bool = False):
        R, K = len(host.t), slots.K
        if len(slots.rows) != R or not torch.equal(slots.rows, host.data.ids.cpu()):
            raise ValueError(f"AEDFLStep: the slot table covers devices {slots.rows.tolist()}, the host's data "
                             f"holds devices {host.data.ids.tolist()}; build it with in_neighbor_slots(adjacency, "
                             "rows=host.data.ids)")
        self.cfg = config
        self.ids = host.data.ids.cpu()
        self.cache = NeighborCache(slots, host.net.spec, device=host.dev, concurrent=concurrent)
        self.masks = torch.ones(R, host.net.numel, dtype=torch.bool, device=host.dev)
        self.sizes = host.data.sizes.double().cpu()
        self.dwu = DynamicWeights(R, K + 1, config.weights, device=host.dev,
                                  dtype=torch.float64) if config.dwu else None
        self.policy = PolicySelector(R, K, config.policy, seed=host.cfg.seed, ids=self.ids) if config.rl else None
        self.pruner = AdaptivePruner(host, config.pruning) if config.prune else None
        self.degree = (slots.neighbors >= 0).sum(1)
        self.mfp, self.numel, self.batch = float(host.model_mflops()), host.net.numel, host.cfg.batch_size
        self.hidden = config.policy.policy.hidden
        self.stats = SelectionStats(R, K)
        # step 7's loss and gradient at each row's model on its next first SGD minibatch, valid at update `first_at`
        probing = config.dwu or config.rl
        self.first_loss = host.net.init.new_zeros(R, device=host.dev) if probing else None
        self.first_grad = host.net.init.new_zeros(R, self.numel, device=host.dev) if probing else None
        self.first_at = torch.full((R,), -1, dtype=torch.long)

    def mflops(self, host: StepHost) -> float:
        """Mean MFP per sample of the devices' models: masked with pruning, else dense."""
        if self.pruner is None:
            return float(host.model_mflops())
        return float(self.pruner.mflops(host, self.masks).mean())

    def receive(self, row: int, src: int, message: ModelMessage, stamp: int) -> None:
        """Device `src`'s message arrives at row `row`, whose update count is `stamp`: atomic slot replacement."""
        self.cache.put(row, src, message.model, stamp=stamp, loss=message.loss, samples=message.samples,
                       mask=message.mask, rate=message.rate)

    CHUNK = 32          # devices per pass of `update`: its temporaries are [CHUNK, K + 1, P], not [B, K + 1, P]

    def update(self, host: StepHost, rows: torch.Tensor, x: torch.Tensor) -> StepResult:
        """One local update of the devices in rows `rows [B]` (distinct) from their models `x [B, P]`, `CHUNK`
        devices at a time (a device's update does not depend on the others in its batch)."""
        if len(rows) <= self.CHUNK:
            return self._update(host, rows, x)
        parts = [self._update(host, rows[s:s + self.CHUNK], x[s:s + self.CHUNK])
                 for s in range(0, len(rows), self.CHUNK)]
        return StepResult(*(torch.cat([getattr(r, f) for r in parts]) for f in ("x", "loss", "t", "pruned", "cost")),
                          [m for r in parts for m in r.messages], torch.cat([r.work for r in parts]))

    def _update(self, host: StepHost, rows: torch.Tensor, x: torch.Tensor) -> StepResult:
        pruner = self.pruner
        cfg = host.cfg
        masks = self.masks[rows] if pruner is not None else None
        first = None
        if self.first_grad is not None:
            first = (self.first_loss[rows], self.first_grad[rows], self.first_at[rows] == host.t[rows])
        x_half, loss, g = local_sgd(host.net, host.data, rows, host.t[rows], x, steps=cfg.local_steps, lr=cfg.lr,
                                    batch_size=cfg.batch_size, seed=cfg.seed, masks=masks, first=first)
        host.t[rows] += 1
        t = host.t[rows]
        B = len(rows)

        view = self.cache.read(rows, masks=masks is not None)
        valid = view.valid
        local = torch.ones(B, 1, dtype=torch.bool)
        stale = staleness(t, torch.cat([t.unsqueeze(1), view.stamp], 1))
        slot_loss = torch.cat([loss.unsqueeze(1), view.loss], 1)
        samples = torch.cat([self.sizes[rows].unsqueeze(1), view.samples], 1) * torch.cat([local, valid], 1)
        if self.policy is not None:
            chosen = self.policy.select(rows, t, view.aggregated, stale[:, 1:], slot_loss[:, 1:], valid)
            self.stats.record(rows, valid, view.aggregated, stale[:, 1:], self.policy.probability[rows])
        else:
            chosen = valid if self.cfg.reuse_aggregated else valid & ~view.aggregated
            self.stats.record(rows, valid, view.aggregated, stale[:, 1:], chosen.float())
        active = torch.cat([local, chosen], 1)
        dev = x_half.device
        slot_masks = torch.cat([masks.unsqueeze(1), view.masks], 1) if masks is not None else None
        stack = masks is not None or self.dwu is not None                  # the K+1 models, stacked once
        models = torch.cat([x_half.unsqueeze(1), view.models], 1) if stack else None
        if self.dwu is not None:                                                    # eq. 4.6-4.7: omega^{t-1}
            args = (samples.to(dev), stale.to(dev), slot_loss.to(dev))
            w = self.dwu.weights(*args, active=active.to(dev), devices=rows)
        else:
            w = static_weights(active, self.degree[rows])
        w = w.to(device=dev, dtype=x_half.dtype)
        x_full = _aggregate(x_half, view.models, w, models, slot_masks, remask=False)        # eq. 4.11 / 4.9
        x_new = x_full if masks is None else x_full * masks
        self.cache.mark_aggregated(rows, chosen, view.seq)
        work = self._work(active, valid, masked=masks is not None)

        pruned, cost = rows[:0], torch.zeros(0, dtype=torch.float64)
        if pruner is not None:
            pruner.observe(rows, g)
            due = pruner.due(t)
            if due.any():
                pruned = rows[due]
                work[due] += pruner.work_macs(host, pruned)            # before `prune`, which may change it
                new_masks, cost = pruner.prune(host, pruned, x_full[due], self.masks[pruned], w[due].cpu(),
                                               active[due], view.rate[due])
                self.masks[pruned] = new_masks
                x_new[due] = x_full[due] * new_masks
        if self.first_grad is not None:                                             # step 7
            nxt, loss_next, g_next = self._next_first_step(host, rows, t, x_new)
            if self.dwu is not None:                                                # eq. 4.8 / 4.10 at m_i^t
                self.dwu.step(models, g_next, *args, masks=slot_masks, active=active.to(dev), devices=rows,
                              out_mask=None if masks is None else self.masks[rows])
            if self.policy is not None:                                             # eq. 4.4's reward
                if self.cfg.policy.reward == "change":
                    loss_next = loss_next - host.net.losses(x_half, *nxt)
                self.policy.reward(rows, loss_next.cpu())
        messages = [ModelMessage(model=x_new[b], mask=None if pruner is None else self.masks[r].clone(),
                                 loss=float(loss[b]), samples=int(self.sizes[r]), version=int(t[b]),
                                 rate=None if pruner is None else float(pruner.rate[r]))
                    for b, r in enumerate(rows.tolist())]
        return StepResult(x_new, loss, t, pruned, cost, messages, work)

    def _next_first_step(self, host: StepHost, rows: torch.Tensor, t: torch.Tensor, x: torch.Tensor):
        """Step 7: the minibatch zeta_{t+1, 0} of the next update's first SGD step for rows `rows` at update count
        `t [B]`, and the loss `[B]` and gradient `[B, P]` of their new models `x [B, P]` on it, kept for that step."""
        dev = x.device
        batch = host.data.batch(rows.to(dev), t.to(dev), 0, host.cfg.batch_size, host.cfg.seed)
        loss, g = host.net.loss_and_grad(x, *batch)
        self.first_loss[rows], self.first_grad[rows], self.first_at[rows] = loss, g, t
        return batch, loss, g

    def _work(self, active: torch.Tensor, valid: torch.Tensor, masked: bool) -> torch.Tensor:
        """MACs `[B]` of this update's work beyond local SGD (`dflbench.engines.cost`): the aggregation, and with
        `dwu` the gradient at the aggregate and eq. 4.10's products (charged as two averages), with `rl` the two
        reward forwards (one with the paper's reward) and the policy's forward and eq. 4.4's backward over the
        valid slots. The charge is the algorithm's work as the cost model prices it, kept when issue 27 let the step
        share the gradient and one reward forward with the next update's first SGD step (what this implementation
        spends is not the charge)."""
        models = active.sum(1).double()
        work = average_macs(models, self.numel, masked)
        if self.dwu is not None:
            work = work + 2 * average_macs(models, self.numel, masked) + gradient_macs(self.mfp, self.batch)
        if self.policy is not None:
            slots = valid.sum(1).double()
            forwards = 2 if self.cfg.policy.reward == "change" else 1
            work = (work + forwards * forward_macs(self.mfp, self.batch) + lstm_macs(slots, self.hidden, INPUT_SIZE)
                    + lstm_macs(slots, self.hidden, INPUT_SIZE, backward=True))
        return work


def _aggregate(local: torch.Tensor, cache: torch.Tensor, w: torch.Tensor, models: torch.Tensor | None,
               masks: torch.Tensor | None, remask: bool = True) -> torch.Tensor:
    """Eq. 4.11 over the stacked `models [B, K+1, P]` = [local, cache] with masks `[B, K+1, P]` (`remask=False`: the
    full model, before the local mask); eq. 4.9 without masks, from `local` and `cache` (no stacking needed)."""
    if masks is not None:
        return masked_average(models, w, masks, remask=remask)
    return w[:, :1] * local + torch.bmm(w[:, None, 1:], cache).squeeze(1)
