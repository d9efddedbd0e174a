"""Per-layer structured pruning: `layerwise` rates, FedAP's layer rates, and the structural MFP of flat masks."""

import math

import pytest
import torch
import torch.nn.functional as F

from dflbench.pruning import (
    PruningConfig,
    count_flops,
    find_candidates,
    null_mass,
    prune_model,
    structured_mfp,
)


def test_layerwise_prunes_each_group_at_the_rate(tiny_cnn):
    model, batch = tiny_cnn(bn=False)
    for rule in ("magnitude", "hrank"):
        res = prune_model(model, F.cross_entropy, batch, 0.5, config=PruningConfig(rule=rule, layerwise=True))
        for g, start, stop in res.candidates.group_slices():
            assert int((~res.keep_units[start:stop]).sum()) == math.floor(0.5 * g.num_units), (rule, g.module)


def test_fedap_layer_rates_share_out_the_requested_rate(tiny_cnn):
    model, batch = tiny_cnn(bn=False)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        opt.step()
    res = prune_model(model, F.cross_entropy, batch, 0.5, initial_params=init,
                      config=PruningConfig(rule="fedap", slq_steps=8, slq_runs=2))
    groups = len(res.candidates.groups)
    pruned = int((~res.keep_units).sum())
    assert 0.5 * res.candidates.num_units - groups <= pruned <= 0.5 * res.candidates.num_units and pruned > 0


def test_null_mass_counts_the_weight_near_zero():
    nodes = torch.tensor([1e-6, 0.5, 1.0, -2e-4], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.2, 0.1, 0.2], dtype=torch.float64)
    assert null_mass(nodes, weights, 1e-3) == pytest.approx(0.7)
    assert null_mass(nodes, weights, 1e-5) == pytest.approx(0.5)


def test_structured_mfp_counts_the_pruned_structure(tiny_cnn):
    """One row per device through `count_flops` with its masks; a pruned conv channel also removes the next conv's
    weights that read it, which a density scaling would still count."""
    model, (x, _) = tiny_cnn(bn=False)
    cand = find_candidates(model, x[:1])
    keep = torch.ones(2, cand.num_units, dtype=torch.bool)
    keep[0, :2] = False                                              # two conv1 channels of device 0
    keep[1, 4:6] = False                                             # two conv2 channels of device 1
    flat = torch.stack([cand.flat_keep(k) for k in keep])
    got = structured_mfp(model, x[:1], flat)
    for d in range(2):
        assert got[d] == count_flops(model, x[:1], cand.param_masks(keep[d])).mfp
    fc = 6 * 80 + 3 * 6                                              # 6x6 inputs: 6x6 conv1, 4x4 conv2 maps
    assert round(float(got[0]) * 1e6) == 2 * 2 * 9 * 36 + 5 * 2 * 9 * 16 + fc     # conv2 reads 2 live channels
    assert round(float(got[1]) * 1e6) == 4 * 2 * 9 * 36 + 3 * 4 * 9 * 16 + 6 * 48 + 3 * 6   # fc1: 3 live x 16
    assert float(got[0]) < count_flops(model, x[:1]).mfp * float(flat[0].double().mean())   # below density scaling
