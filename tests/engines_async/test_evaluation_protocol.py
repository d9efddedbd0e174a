"""The evaluation protocol (engines.evaluation, docs/EVALUATION.md) against direct computations."""

import pytest
import torch

from dflbench.engines.async_sim import AsyncConfig, AsyncSimulator
from dflbench.engines.devices import sample_profiles
from dflbench.engines.evaluation import consensus_model, mask_disagreement
from dflbench.methods.registry import make_method
from dflbench.models import make_model
from dflbench.topology import exponential


def test_consensus_model_is_the_per_entry_mean_over_keepers():
    x = torch.tensor([[1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 5.0, 0.0], [5.0, 4.0, 0.0, 0.0]])
    masks = x != 0
    expected = torch.tensor([3.0, 3.0, 5.0, 0.0])                # entry 3: kept by none
    assert torch.equal(consensus_model(x, masks), expected)
    assert torch.allclose(consensus_model(x), x.mean(0))
    assert torch.allclose(consensus_model(x, torch.ones_like(masks)), x.mean(0))


def test_mask_disagreement_counts_entries_one_of_two_keeps():
    masks = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    # pairs (0,1): 2 of 4, (0,2): 0, (1,2): 2 of 4 -> mean 1/3
    assert mask_disagreement(masks) == pytest.approx(1 / 3)
    assert mask_disagreement(None) == 0.0 and mask_disagreement(torch.ones(3, 4, dtype=torch.bool)) == 0.0


def _run(data, name, **cfg):
    torch.manual_seed(0)
    options = {"every": 2} if name == "aedfl-p" else None
    sim = AsyncSimulator(make_model("lenet5", 4, 1, 16), data, exponential(4), sample_profiles(4, 1, latency=0.001),
                         make_method(name, options), AsyncConfig(batch_size=8, eval_interval=0.05, eval_samples=32,
                                                        slot_width=0.0, local_steps=1,
                                                        **{"time_budget": None, **cfg}))
    return sim, sim.run()


@pytest.mark.parametrize("name", ["aedfl-0", "aedfl-p", "fedavg"])
def test_every_evaluation_has_both_columns_computed_from_the_models(tiny_data, name):
    data = tiny_data(4)
    sim, res = _run(data, name, max_updates=3)
    assert all({"accuracy", "consensus_accuracy", "consensus", "mask_disagreement"} <= h.keys() for h in res.history)
    models = sim.method.eval_models(sim)
    masks = getattr(sim.method, "eval_masks", lambda s: None)(sim)
    x_eval, y_eval = sim._eval_set(data, sim.cfg)
    per_model, _ = sim.net.accuracy_and_loss(models, x_eval, y_eval)
    avg, _ = sim.net.accuracy_and_loss(consensus_model(models, masks)[None], x_eval, y_eval)
    last = res.history[-1]
    assert last["accuracy"] == pytest.approx(float(per_model.mean()))
    assert last["consensus_accuracy"] == pytest.approx(float(avg[0]))
    assert res.device_accuracy == pytest.approx(per_model.tolist())          # one per evaluated model
    if name == "fedavg":                                         # one global model: both columns are the same model
        assert all(h["accuracy"] == h["consensus_accuracy"] for h in res.history)
    if name == "aedfl-p":
        assert masks is not None and not bool(masks.all())
        assert last["mask_disagreement"] > 0


def test_convergence_rule_on_hand_made_histories():
    from dflbench.engines.evaluation import convergence

    rising = [{"accuracy": 0.01 * i} for i in range(20)]         # window 4: (0.185 - 0.165) = 2 points
    flat = [{"accuracy": min(0.5, 0.1 * i)} for i in range(20)]
    c = convergence(rising)
    assert c["window"] == 4 and c["gain"] == pytest.approx(0.02) and c["converged"] is False
    assert c["accuracy"] == pytest.approx((0.16 + 0.17 + 0.18 + 0.19) / 4)
    c = convergence(flat)
    assert c["converged"] is True and c["accuracy"] == pytest.approx(0.5) and c["gain"] == pytest.approx(0.0)
    assert convergence(rising[:9]) == {"converged": None, "gain": None, "accuracy": None, "window": 9}
    assert convergence(flat[:10])["window"] == 2 and convergence(flat[:10])["converged"] is True
