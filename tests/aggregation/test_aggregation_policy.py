"""Selection policy (Sec. 4.1): batched bank vs torch.nn.LSTM per device, sampling from given uniforms,
REINFORCE (eq. 4.4) on a toy bandit, baseline, and heuristic pretraining."""

import math

import pytest
import torch

from dflbench.aggregation.policy import PolicyBank, PolicyConfig, SelectionPolicy
from dflbench.aggregation.pretrain import (
    PretrainConfig,
    heuristic_selection,
    pretrain_policy,
    synthetic_candidates,
)


def _features(g, d, m):
    f = torch.stack([(torch.rand(d, m, generator=g) < 0.3).float(),
                     torch.randint(-2, 10, (d, m), generator=g).float(),
                     torch.rand(d, m, generator=g) * 3], dim=-1)
    return f


def test_bank_matches_each_devices_nn_lstm():
    g = torch.Generator().manual_seed(0)
    bank = PolicyBank(5, PolicyConfig(hidden=8), generator=g)
    devices = torch.tensor([3, 0, 4])
    f = _features(g, 3, 6)
    choices = torch.rand(3, 6, generator=g) < 0.5
    valid = torch.ones(3, 6, dtype=torch.bool)
    probs = bank.probabilities(f, choices, valid, devices)
    for row, i in enumerate(devices.tolist()):
        ref = bank.policy(i)(f[row:row + 1], choices[row:row + 1])[0]
        assert torch.allclose(probs[row], ref, atol=1e-6)
    assert isinstance(bank.policy(0).lstm, torch.nn.LSTM)


def test_sampling_follows_the_uniforms_and_respects_validity():
    g = torch.Generator().manual_seed(1)
    bank = PolicyBank(4, PolicyConfig(hidden=8), generator=g)
    f = _features(g, 4, 7)
    valid = torch.rand(4, 7, generator=g) < 0.6
    u = torch.rand(4, 7, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    a, pa = bank.sample(f, valid, u)
    b, pb = bank.sample(f, valid, u.clone())
    assert torch.equal(a, b) and torch.equal(pa, pb)
    assert not a[~valid].any() and (pa[~valid] == 0).all()
    # the probabilities returned by sampling are the teacher-forced ones for the sampled decisions
    assert torch.allclose(pa, bank.probabilities(f, a, valid), atol=1e-6)
    # c_m = [u_m < P(c_m = 1 | c_{m-1..1})] on the valid slots, against per-device nn.LSTM modules
    for i in range(4):
        ref = bank.policy(i)(f[i:i + 1], a[i:i + 1])[0].double()
        assert torch.equal(a[i], (u[i] < ref) & valid[i])
    every, p_every = bank.sample(f, valid, torch.zeros(4, 7))
    assert torch.equal(every, valid & (p_every > 0))
    assert not bank.sample(f, valid, torch.full((4, 7), 1 - 1e-9, dtype=torch.float64))[0].any()
    with pytest.raises(ValueError, match="distinct"):
        bank.sample(f, valid, u, devices=[0, 0, 1, 2])
    with pytest.raises(ValueError, match=r"uniforms must be float \[D, M\]"):
        bank.sample(f, valid, u[:, :3])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        bank.sample(f, valid, u + 1)
    with pytest.raises(ValueError, match="Generator"):
        PolicyBank(2)


@pytest.mark.parametrize("normalize", [False, True])
def test_reinforce_matches_eq_4_4_with_window_baseline(normalize):
    g = torch.Generator().manual_seed(2)
    cfg = PolicyConfig(hidden=6, lr=0.1, baseline_window=2, normalize=normalize)
    sd = 2 ** 0.5 if normalize else 1.0                   # both windows, [1, 3] and [2, 4], have sd sqrt(2)
    bank = PolicyBank(3, cfg, generator=g)
    f = _features(g, 2, 4)
    valid = torch.ones(2, 4, dtype=torch.bool)
    valid[1, 3] = False
    devices = torch.tensor([2, 0])
    choices, _ = bank.sample(f, valid, torch.rand(2, 4, generator=g), devices)
    adv = bank.reinforce(f, choices, valid, [1.0, 2.0], devices)
    assert torch.equal(adv, torch.zeros(2)), "no history yet: advantage 0"
    bank.reinforce(f, choices, valid, [3.0, 4.0], devices)
    assert torch.allclose(bank.baseline(devices), torch.tensor([2.0, 3.0]))
    before = {k: v.clone() for k, v in bank.params.items()}
    # reference: per-device torch.nn modules, log P from their teacher-forced probabilities, autograd
    expected = {}
    for row, i in enumerate(devices.tolist()):
        net = bank.policy(i)
        probs = net(f[row:row + 1], choices[row:row + 1])[0]
        lp = sum(torch.log(probs[m] if choices[row, m] else 1 - probs[m]) for m in range(4) if valid[row, m])
        adv_i = ([5.0, 7.0][row] - [2.0, 3.0][row]) / sd
        grads = torch.autograd.grad(lp * adv_i, list(net.parameters()))
        expected[i] = {k: p.detach() - 0.1 * gr for (k, p), gr in zip(net.named_parameters(), grads)}
    adv = bank.reinforce(f, choices, valid, [5.0, 7.0], devices)
    assert torch.allclose(adv, torch.tensor([3.0, 4.0]) / sd)
    for i, params in expected.items():
        for k, v in params.items():
            assert torch.allclose(bank.params[k][i], v, atol=1e-6), k
    assert all(torch.equal(bank.params[k][1], before[k][1]) for k in before), "device 1 untouched"
    assert torch.allclose(bank.baseline(devices), torch.tensor([4.0, 5.5]))   # window of 2: (3+5)/2, (4+7)/2


@pytest.mark.parametrize("lr, normalize, max_steps", [(0.5, False, 150), (0.02, True, 300)])
def test_reinforce_toy_bandit_learns_the_helpful_neighbor(lr, normalize, max_steps):
    """Selecting neighbor good[d] lowers device d's loss by 0.5; the others change nothing."""
    g = torch.Generator().manual_seed(0)
    d, m = 4, 5
    bank = PolicyBank(d, PolicyConfig(hidden=16, lr=lr, normalize=normalize), generator=g)
    good = torch.tensor([0, 2, 4, 1])
    rows = torch.arange(d)
    f = torch.zeros(d, m, 3)
    f[..., 1:] = 1.0
    valid = torch.ones(d, m, dtype=torch.bool)
    reached = None
    for step in range(max_steps):
        c, _ = bank.sample(f, valid, torch.rand(d, m, generator=g))
        loss = 1.0 - 0.5 * c[rows, good].float() + 0.05 * torch.randn(d, generator=g)
        bank.reinforce(f, c, valid, loss)
        if step % 10 == 9:
            picks = torch.stack([bank.sample(f, valid, torch.rand(d, m, generator=g))[0][rows, good]
                                 for _ in range(40)]).float()
            if (picks.mean(0) > 0.9).all():
                reached = step
                break
    assert reached is not None, f"P(select helpful neighbor) stayed below 0.9 after {max_steps} steps"


def test_pretraining_learns_the_heuristics():
    g = torch.Generator().manual_seed(3)
    policy = SelectionPolicy(hidden=16, generator=g)
    cfg = PretrainConfig(steps=100, batch_size=64, num_slots=6, lr=0.02)
    losses = pretrain_policy(policy, g, cfg)
    c = cfg.confidence                                   # soft targets: the BCE cannot go below their entropy
    floor = -(c * math.log(c) + (1 - c) * math.log(1 - c))
    assert losses[-1] - floor < 0.25 * (losses[0] - floor)
    test = synthetic_candidates(512, 6, torch.Generator().manual_seed(99), cfg)
    target = heuristic_selection(test, cfg.fresh_staleness)
    with torch.no_grad():
        p = policy(test, target)
    accuracy = ((p > 0.5) == target).float().mean()
    assert accuracy > 0.95
    assert p[test[..., 0] == 1].max() < 0.5, "an already aggregated model is never preferred"
    bank = PolicyBank(8, PolicyConfig(hidden=16), init=policy)       # every device starts from the pretrained net
    assert torch.allclose(bank.probabilities(test[:8], target[:8], torch.ones(8, 6, dtype=torch.bool)), p[:8],
                          atol=1e-6)


def test_pretraining_is_torch_adam_bit_for_bit():
    """`pretrain_policy`'s functional Adam equals the same loop with torch.optim.Adam (defaults), in every step's loss
    and in the final parameters, and leaves no .grad behind; nor does it import torch._dynamo (fresh interpreter)."""
    import subprocess
    import sys

    cfg = PretrainConfig(steps=30, batch_size=16, num_slots=5, lr=0.02)
    ours = SelectionPolicy(hidden=8, generator=torch.Generator().manual_seed(4))
    ref = SelectionPolicy(hidden=8, generator=torch.Generator().manual_seed(4))
    losses = pretrain_policy(ours, torch.Generator().manual_seed(5), cfg)
    g, opt, ref_losses = torch.Generator().manual_seed(5), torch.optim.Adam(ref.parameters(), lr=cfg.lr), []
    for _ in range(cfg.steps):
        features = synthetic_candidates(cfg.batch_size, cfg.num_slots, g, cfg)
        target = heuristic_selection(features, cfg.fresh_staleness)
        soft = torch.where(target, cfg.confidence, 1.0 - cfg.confidence)
        loss = torch.nn.BCELoss()(ref(features, target), soft)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref_losses.append(loss.item())
    assert losses == ref_losses
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name
        assert a.grad is None, name
    code = ("import sys, torch; from dflbench.aggregation.policy import SelectionPolicy; "
            "from dflbench.aggregation.pretrain import pretrain_policy, PretrainConfig; "
            "pretrain_policy(SelectionPolicy(8, torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1), "
            "PretrainConfig(steps=2)); print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_default_pretrained_selector_is_aedfl0s_rule():
    """The policy every AEDFL device starts from (PolicySelector's defaults) selects each not-yet-aggregated model
    and skips aggregated copies, whatever the staleness and loss: AEDFL-0's rule, before REINFORCE has data."""
    from dflbench.methods.aedfl.selection import PolicySelector

    selector = PolicySelector(500, 6, seed=0)
    feats = synthetic_candidates(500, 6, torch.Generator().manual_seed(5))
    fresh = feats[..., 0] < 0.5
    with torch.no_grad():
        p = selector.bank.probabilities(feats, fresh, torch.ones_like(fresh))
    assert p[fresh].min() > 0.95 and p[~fresh].max() < 0.1          # 0.983 and 0.076 measured
    assert p[fresh].mean() > 0.98 and p[~fresh].mean() < 0.02       # 0.991 and 0.013: the rule in 99% of decisions
