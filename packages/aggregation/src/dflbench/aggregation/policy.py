"""RL model selection, AEDFL Sec. 4.1: an LSTM + two fully connected layers scores the cached neighbor models; the
selection is sampled slot by slot; REINFORCE (eq. 4.4) trains it with the local loss and a moving-average baseline.

The network reads the M neighbor slots as a sequence. Step m sees the slot's features (already aggregated,
symlog(staleness), symlog(loss); symlog(x) = sign(x) log(1 + |x|)) and the previous decision c_{m-1}, so its output
is P(c_m = 1 | c_{m-1..1}) as in eq. 4.4:

    h_m = LSTM([f_m, c_{m-1}], h_{m-1});   p_m = sigmoid(FC_2(relu(FC_1(h_m))))

Eq. 4.4 (the reward is the local loss, to be lowered; l_i is the mean of the device's last `baseline_window`
losses, and the first update of a device, which has no history, has advantage 0):

    theta <- theta - eta' * sum_m grad_theta log P(c_m | c_{m-1..1}; theta) * (R_t - l_i)

With `normalize` (the default) the advantage is (R_t - l_i) / sd_i, sd_i the standard deviation of the same window
(advantage 0 until the window holds two rewards). Departure (stated): eq. 4.4 uses the raw difference, whose scale
follows the loss (large early, tiny late), so one eta' either saturates the policy early or never moves it later; the
normalized advantage (standard REINFORCE practice) keeps eq. 4.4's sign and baseline.

Slots with `valid = False` (padding, empty cache slots) are never selected and add nothing to log P.

`SelectionPolicy` is one device's network (torch.nn.LSTM and Linear layers); `PolicyBank` holds the parameters of
many devices stacked `[N, ...]` under the same names and evaluates any subset of devices in one batched pass
(the LSTM gates as batched matrix products: vmap has no batching rule for aten::lstm). Sampling takes its uniforms
from the caller, so a device's choices depend only on its own random stream (AEDFL keys them by device and update).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .staleness import NUM_FEATURES

INPUT_SIZE = NUM_FEATURES + 1          # slot features and the previous decision


@dataclass(frozen=True)
class PolicyConfig:
    """Hidden size of the LSTM and FC layers, eta' of eq. 4.4, the length of the baseline window, and whether the
    advantage R_t - l_i is divided by the standard deviation of the rewards in the window (module docstring)."""

    hidden: int = 32
    lr: float = 0.05
    baseline_window: int = 10
    normalize: bool = True

    def __post_init__(self):
        if self.hidden < 1 or self.baseline_window < 1 or not self.lr > 0:
            raise ValueError(f"PolicyConfig needs hidden >= 1, baseline_window >= 1 and lr > 0, got {self}")


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def policy_inputs(features: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
    """`[..., M, 3]` raw features and `[..., M]` decisions -> `[..., M, 4]` network inputs (teacher forcing: step m
    gets c_{m-1}, step 0 gets 0)."""
    if features.shape[-1] != NUM_FEATURES or tuple(choices.shape) != tuple(features.shape[:-1]):
        raise ValueError(f"policy inputs: features must be [..., M, {NUM_FEATURES}] and choices [..., M], got "
                         f"{tuple(features.shape)} and {tuple(choices.shape)}")
    f = torch.cat([features[..., :1], symlog(features[..., 1:])], dim=-1)
    prev = torch.cat([torch.zeros_like(choices[..., :1]), choices[..., :-1]], dim=-1).to(f.dtype)
    return torch.cat([f, prev.unsqueeze(-1)], dim=-1)


class SelectionPolicy(nn.Module):
    """One device's priority network: LSTM over the neighbor slots, then FC -> ReLU -> FC -> sigmoid.

    Pass a seeded `generator` for a reproducible init (without one, torch's global RNG initializes it).
    """

    def __init__(self, hidden: int = 32, generator: torch.Generator | None = None):
        super().__init__()
        self.lstm = nn.LSTM(INPUT_SIZE, hidden, batch_first=True)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        if generator is not None:              # torch's default LSTM/Linear init
                                               # U(-1/sqrt(hidden), 1/sqrt(hidden)), seeded
            bound = 1.0 / math.sqrt(hidden)
            with torch.no_grad():
                for p in self.parameters():
                    p.uniform_(-bound, bound, generator=generator)

    def forward(self, features: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
        """P(c_m = 1 | c_{m-1..1}) for `[B, M, 3]` features given the decisions `[B, M]` (teacher forcing)."""
        h, _ = self.lstm(policy_inputs(features, choices))
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(h)))).squeeze(-1)


class PolicyBank:
    """The selection policies of `num_devices` devices: parameters `[N, ...]` named as in SelectionPolicy."""

    def __init__(self, num_devices: int, config: PolicyConfig = PolicyConfig(),
                 generator: torch.Generator | None = None, init: SelectionPolicy | None = None, device=None):
        if num_devices < 1:
            raise ValueError(f"PolicyBank needs num_devices >= 1, got {num_devices}")
        self.config = config
        if init is None:
            if generator is None:
                raise ValueError("PolicyBank: pass a torch.Generator (seeded init) or a pretrained `init` policy")
            nets = [SelectionPolicy(config.hidden, generator) for _ in range(num_devices)]
            self.params = {k: torch.stack([dict(n.named_parameters())[k].detach() for n in nets]).to(device)
                           for k, _ in nets[0].named_parameters()}
        else:
            if init.fc1.in_features != config.hidden:
                raise ValueError(f"init policy has hidden size {init.fc1.in_features}, config says {config.hidden}")
            self.params = {k: v.detach().to(device).unsqueeze(0).repeat(num_devices, *([1] * v.dim()))
                           for k, v in init.named_parameters()}
        dev = self.params["fc2.bias"].device
        self.history = torch.zeros(num_devices, config.baseline_window, device=dev)
        self.history_count = torch.zeros(num_devices, dtype=torch.long, device=dev)

    @property
    def num_devices(self) -> int:
        return self.params["fc2.bias"].shape[0]

    def policy(self, i: int) -> SelectionPolicy:
        """Device i's network as a SelectionPolicy module (a copy)."""
        net = SelectionPolicy(self.config.hidden).to(self.params["fc2.bias"].device)
        net.load_state_dict({k: v[i] for k, v in self.params.items()})
        return net

    def _index(self, devices) -> torch.Tensor:
        dev = self.params["fc2.bias"].device
        if devices is None:
            return torch.arange(self.num_devices, device=dev)
        devices = torch.as_tensor(devices, dtype=torch.long, device=dev).reshape(-1)
        if devices.numel() and (devices.min() < 0 or devices.max() >= self.num_devices):
            raise ValueError(f"PolicyBank: device indices must be in [0, {self.num_devices})")
        if devices.unique().numel() != devices.numel():
            raise ValueError("PolicyBank: device indices must be distinct within one call")
        return devices

    @staticmethod
    def _step(p: dict, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """Batched LSTM cell (gate order i, f, g, o as torch.nn.LSTM) and head for per-device weights."""
        gates = (torch.bmm(p["lstm.weight_ih_l0"], x.unsqueeze(-1)).squeeze(-1) + p["lstm.bias_ih_l0"]
                 + torch.bmm(p["lstm.weight_hh_l0"], h.unsqueeze(-1)).squeeze(-1) + p["lstm.bias_hh_l0"])
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        z = torch.relu(torch.bmm(p["fc1.weight"], h.unsqueeze(-1)).squeeze(-1) + p["fc1.bias"])
        prob = torch.sigmoid(torch.bmm(p["fc2.weight"], z.unsqueeze(-1)).squeeze(-1) + p["fc2.bias"]).squeeze(-1)
        return prob, h, c

    def _run(self, p: dict, features: torch.Tensor, choices: torch.Tensor | None, valid: torch.Tensor,
             uniforms: torch.Tensor | None):
        """One pass over the slots: teacher-forced on `choices`, or sampling c_m = [u_m < P(c_m = 1 | ...)]."""
        d, m = valid.shape
        hdim = self.config.hidden
        h = features.new_zeros(d, hdim)
        c = features.new_zeros(d, hdim)
        f = torch.cat([features[..., :1], symlog(features[..., 1:])], dim=-1)
        prev = features.new_zeros(d)
        probs, picks = [], []
        for slot in range(m):                      # loop over the few neighbor slots, batched over devices
            prob, h, c = self._step(p, torch.cat([f[:, slot], prev.unsqueeze(-1)], dim=-1), h, c)
            prob = torch.where(valid[:, slot], prob, torch.zeros_like(prob))
            if choices is None:
                pick = (uniforms[:, slot] < prob.detach()) & valid[:, slot]
            else:
                pick = choices[:, slot]
            probs.append(prob)
            picks.append(pick)
            prev = pick.to(features.dtype)
        return torch.stack(probs, 1), torch.stack(picks, 1)

    def _check(self, features, valid, idx):
        if features.dim() != 3 or features.shape[-1] != NUM_FEATURES:
            raise ValueError(f"PolicyBank: features must be [D, M, {NUM_FEATURES}], got {tuple(features.shape)}")
        if tuple(valid.shape) != tuple(features.shape[:2]) or valid.dtype != torch.bool:
            raise ValueError(f"PolicyBank: valid must be a bool [D, M] = {tuple(features.shape[:2])} tensor")
        if features.shape[0] != idx.numel():
            raise ValueError(f"PolicyBank: {features.shape[0]} candidate sets for {idx.numel()} devices")

    @torch.no_grad()
    def sample(self, features: torch.Tensor, valid: torch.Tensor, uniforms: torch.Tensor, devices=None):
        """Sample selections slot by slot, c_m = [u_m < P(c_m = 1 | c_{m-1..1})] with the given uniforms
        `[D, M]` in [0, 1) (the caller owns the randomness, e.g. counter-based per device and update):
        `[D, M, 3]` features, `[D, M]` valid -> (choices `[D, M]` bool, probabilities `[D, M]`)."""
        idx = self._index(devices)
        self._check(features, valid, idx)
        uniforms = torch.as_tensor(uniforms)
        if tuple(uniforms.shape) != tuple(valid.shape) or not uniforms.is_floating_point():
            raise ValueError(f"PolicyBank.sample: uniforms must be float [D, M] = {tuple(valid.shape)}, got "
                             f"{tuple(uniforms.shape)} {uniforms.dtype}")
        if ((uniforms < 0) | (uniforms >= 1)).any():
            raise ValueError("PolicyBank.sample: uniforms must lie in [0, 1)")
        p = {k: v[idx] for k, v in self.params.items()}
        probs, picks = self._run(p, features.to(p["fc2.bias"].dtype), None, valid, uniforms.to(valid.device))
        return picks, probs

    def probabilities(self, features: torch.Tensor, choices: torch.Tensor, valid: torch.Tensor,
                      devices=None) -> torch.Tensor:
        """P(c_m = 1 | c_{m-1..1}) `[D, M]` for given decisions (0 on invalid slots)."""
        idx = self._index(devices)
        self._check(features, valid, idx)
        p = {k: v[idx] for k, v in self.params.items()}
        return self._run(p, features.to(p["fc2.bias"].dtype), choices.bool(), valid, None)[0]

    def _log_prob(self, params: dict, features, choices, valid) -> torch.Tensor:
        """sum_m log P(c_m | c_{m-1..1}) over the valid slots, `[D]`, for the gathered `params`."""
        probs = self._run(params, features, choices, valid, None)[0]
        lp = torch.where(choices, torch.log(probs.clamp_min(1e-12)), torch.log1p(-probs.clamp_max(1 - 1e-7)))
        return torch.where(valid, lp, torch.zeros_like(lp)).sum(-1)

    def baseline(self, devices=None) -> torch.Tensor:
        """l_i: the mean of each device's last `baseline_window` losses (NaN before the first one)."""
        idx = self._index(devices)
        n = self.history_count[idx].clamp_max(self.config.baseline_window)
        total = self.history[idx].sum(-1)
        return torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, float("nan")))

    def spread(self, devices=None) -> torch.Tensor:
        """sd_i: the standard deviation of each device's last `baseline_window` rewards (inf before two rewards, so
        a normalized advantage is 0 then; a constant window gives a tiny positive floor)."""
        idx = self._index(devices)
        n = self.history_count[idx].clamp_max(self.config.baseline_window)
        live = torch.arange(self.config.baseline_window, device=n.device).unsqueeze(0) < n.unsqueeze(1)
        mean = (self.history[idx] * live).sum(-1) / n.clamp_min(1)
        var = ((self.history[idx] - mean.unsqueeze(1)).square() * live).sum(-1) / (n - 1).clamp_min(1)
        sd = var.sqrt().clamp_min(1e-8)
        return torch.where(n >= 2, sd, torch.full_like(sd, float("inf")))

    def reinforce(self, features: torch.Tensor, choices: torch.Tensor, valid: torch.Tensor, rewards,
                  devices=None) -> torch.Tensor:
        """Eq. 4.4 for the devices that sampled `choices` from `features`; `rewards` `[D]` are the losses that
        selection led to (lower is better). Returns the advantages R_t - l_i (0 without history), divided by sd_i
        when `normalize`."""
        idx = self._index(devices)
        self._check(features, valid, idx)
        rewards = torch.as_tensor(rewards, dtype=self.history.dtype, device=self.history.device).reshape(-1)
        if rewards.numel() != idx.numel() or not torch.isfinite(rewards).all():
            raise ValueError(f"PolicyBank.reinforce: need {idx.numel()} finite rewards, got {rewards.tolist()}")
        base = self.baseline(idx)
        adv = torch.where(torch.isnan(base), torch.zeros_like(rewards), rewards - base)
        if self.config.normalize:
            adv = adv / self.spread(idx)
        p = {k: v[idx].detach().requires_grad_(True) for k, v in self.params.items()}
        lp = self._log_prob(p, features.to(p["fc2.bias"].dtype), choices.bool(), valid)
        grads = torch.autograd.grad((lp * adv.to(lp.dtype)).sum(), list(p.values()))
        with torch.no_grad():
            for (k, v), g in zip(p.items(), grads):
                self.params[k][idx] = v - self.config.lr * g
            slot = self.history_count[idx] % self.config.baseline_window
            self.history[idx, slot] = rewards
            self.history_count[idx] += 1
        return adv
