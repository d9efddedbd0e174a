"""DisPFL: ERK densities, per-round random neighbours, per-tensor prune-and-regrow, personalized accuracy."""

import math

import pytest
import torch

from dflbench.methods.dispfl import erk_densities
from dflbench.methods.registry import make_method
from dflbench.recipes.aedfl import AEDFLRunConfig, run_aedfl


def _erk_by_bisection(shapes, density):
    """Reference: eps by bisection on sum_l min(1, eps raw_l) n_l = density sum_l n_l, raw_l = sum(shape) / n_l."""
    numel = [math.prod(s) for s in shapes]
    raw = [sum(s) / n for s, n in zip(shapes, numel)]
    lo, hi = 0.0, 1.0 / min(raw)
    for _ in range(200):
        eps = (lo + hi) / 2
        kept = sum(min(1.0, eps * r) * n for r, n in zip(raw, numel))
        lo, hi = (eps, hi) if kept < density * sum(numel) else (lo, eps)
    return [min(1.0, lo * r) for r in raw]


@pytest.mark.parametrize("density", [0.05, 0.3, 0.5, 0.9])
def test_erk_densities_follow_the_erk_formula(density):
    shapes = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,), (10, 84), (10,)]
    got = erk_densities([torch.Size(s) for s in shapes], density)
    assert got == pytest.approx(_erk_by_bisection(shapes, density), rel=1e-9, abs=1e-12)
    assert sum(d * math.prod(s) for d, s in zip(got, shapes)) == pytest.approx(density * sum(map(math.prod, shapes)))


def test_dispfl_masks_are_erk_and_keep_their_per_tensor_counts(aedfl_sim):
    sim = aedfl_sim(make_method("dispfl", {"density": 0.3, "alpha": 0.5}), max_updates=3)
    sim.method.setup(sim)
    m = sim.method
    spec = sim.net.spec
    dens = erk_densities([torch.Size(s) for s in spec.shapes], 0.3)
    counts = [int(d * n) for d, n in zip(dens, spec.numels)]
    bounds = m.bounds
    initial = m.masks.clone()
    for layer, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        assert (initial[:, a:b].sum(1) == counts[layer]).all()
    assert torch.equal(initial, initial[:1].expand_as(initial))             # DisPFL's common initial mask
    sim2 = aedfl_sim(make_method("dispfl", {"density": 0.3, "alpha": 0.5}), max_updates=3)
    sim2.run()
    after = sim2.method.masks
    assert not torch.equal(after, initial)
    for layer, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        assert (after[:, a:b].sum(1) == counts[layer]).all()
    assert torch.all(sim2.x[~after] == 0)


def test_prune_regrow_drops_smallest_weights_and_regrows_largest_gradients(aedfl_sim):
    sim = aedfl_sim(make_method("dispfl", {"alpha": 0.4, "anneal_rounds": 10}))
    sim.method.setup(sim)
    m = sim.method
    gen = torch.Generator().manual_seed(3)
    x, g = torch.randn(2, sim.P, generator=gen), torch.randn(2, sim.P, generator=gen)
    masks = m.masks[:2].clone()
    assert m.rate(sim) == pytest.approx(0.4)                              # round 0 of 10: alpha
    new = m.prune_regrow(x, g, masks, m.rate(sim))
    for b in range(2):                                                      # per-tensor loop reference
        for a, e in zip(m.bounds[:-1], m.bounds[1:]):
            kept = masks[b, a:e].nonzero().squeeze(1).tolist()
            k = math.ceil(0.4 * len(kept))
            drop = sorted(kept, key=lambda i: float(x[b, a + i].abs()))[:k]
            left = set(kept) - set(drop)
            grow = sorted(set(range(e - a)) - left, key=lambda i: -float(g[b, a + i].abs()))[:k]
            expected = torch.zeros(e - a, dtype=torch.bool)
            expected[sorted(left | set(grow))] = True
            assert torch.equal(new[b, a:e], expected)


def test_neighbours_are_redrawn_every_round_among_the_other_alive_devices(aedfl_sim):
    sim = aedfl_sim(make_method("dispfl", {"neighbors": 3}), D=8)
    sim.method.setup(sim)
    m = sim.method
    sim.alive[5] = False
    devs = torch.tensor([0, 1, 2, 3])
    draws = []
    for r in range(4):
        m.round = r
        nb = m.neighbours(sim, sim.alive, devs)
        for i, row in zip(devs.tolist(), nb.tolist()):
            assert len(set(row)) == 3 and i not in row and 5 not in row and min(row) >= 0
        draws.append(nb)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_personalized_accuracy_beats_global_accuracy_on_a_dirichlet_01_split(aedfl_npz):
    """Devices holding mostly one class: each personalized model fits its own labels (measured 0.95 against 0.48)."""
    cfg = AEDFLRunConfig(dataset=f"npz:{aedfl_npz}", devices=6, methods=("dispfl",), alpha=0.1, max_updates=30,
                         batch_size=16, lr=0.05, local_steps=5, eval_samples=None, seed=0,
                         method_options={"dispfl": {"neighbors": 2}})
    run = run_aedfl(cfg)["runs"][0]
    assert run["personalized_accuracy"] > run["accuracy"] + 0.2, run


def test_personalized_accuracy_matches_a_per_client_loop(aedfl_sim):
    sim = aedfl_sim(make_method("dispfl"), max_updates=3)
    sim.run()
    got = sim.method.personalized_accuracy(sim)
    model = sim.net.template
    data = sim.data
    for i in range(sim.D):
        torch.nn.utils.vector_to_parameters(sim.x[i].cpu(), model.parameters())   # client i's model only
        own = data.y[data.parts[i, :int(data.sizes[i])]]
        correct = {}
        with torch.no_grad():
            for xs, ys in zip(data.x_test, data.y_test):
                pred = int(model(data.prepare(xs[None])).argmax())
                correct.setdefault(int(ys), []).append(pred == int(ys))
        freq = {c: float((own == c).sum()) for c in correct}
        expected = sum(freq[c] * sum(v) / len(v) for c, v in correct.items()) / sum(freq.values())
        assert float(got[i]) == pytest.approx(expected, abs=1e-9)


def test_a_budgeted_run_anneals_over_its_virtual_time(aedfl_sim):
    sim = aedfl_sim(make_method("dispfl", {"alpha": 0.4}), max_updates=None, time_budget=2.0)
    sim.method.setup(sim)
    for now, expected in ((0.0, 0.4), (1.0, 0.2), (2.0, 0.0), (3.0, 0.0)):    # alpha / 2 (1 + cos(pi now / B))
        sim.now = now
        assert sim.method.rate(sim) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(Exception, match="anneal_rounds"):
        bad = aedfl_sim(make_method("dispfl"), max_updates=None, consensus_threshold=0.1)
        bad.method.setup(bad)
