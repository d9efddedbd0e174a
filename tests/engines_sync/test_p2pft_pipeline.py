"""run_p2pft end to end on embedded digits with a tiny ViT: every algorithm, results files, traffic, claim."""

import csv
import json

import numpy as np
import pytest

from dflbench.mixing import MixingMatrix, list_algorithms
from dflbench.recipes.config import parse_model_kwargs
from dflbench.recipes.demo import check_claim, demo_config
from dflbench.recipes.p2pft import P2PFTConfig, run_p2pft
from dflbench.recipes.p2pft_algorithms import (
    build_algorithm,
    label,
    list_p2pft_algorithms,
    needs_graph,
    parse_algorithms,
    single_model,
)
from dflbench.topology import column_stochastic, make_topology, row_stochastic

TINY = parse_model_kwargs("img_size=8,patch_size=4,embed_dim=16,depth=2,num_heads=2")


def test_every_algorithm_end_to_end(tmp_path):
    names = list_p2pft_algorithms()
    assert names == [*list_algorithms(), "central"]                    # the mixing registry's names, and central
    cfg = P2PFTConfig(model="vit_tiny_patch16_224", model_kwargs=TINY, dataset="digits", nodes=4,
                      topology="erdos_renyi", algorithms=tuple(names), epochs=1, lr=0.05, batch_size=16, device="cpu",
                      seed=0, attention=2)
    res = run_p2pft(cfg, tmp_path).results
    runs = {r["algorithm"]: r for r in res["runs"]}
    assert list(runs) == names
    hist = np.array(res["partition"]["class_histograms"])
    assert [np.flatnonzero(h).tolist() for h in hist] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    # traffic: every send is one [q] float32 row per out-neighbour (pushpull sends params and tracker)
    topo = make_topology("erdos_renyi", 4, seed=0)
    directed = MixingMatrix(topo.weights, None).out_degree.sum().item()
    steps = runs["pushpull"]["steps"]
    per_row = runs["pushpull"]["bytes_sent"] / (steps * 2 * directed)
    assert per_row == int(per_row) and per_row % 4 == 0
    for name in ("dgd", "dpsgd", "dgd_eq1"):
        assert runs[name]["bytes_sent"] == steps * directed * per_row, name
    assert runs["gtdgd"]["bytes_sent"] == runs["gtdgd_atc"]["bytes_sent"] == 2 * runs["dgd"]["bytes_sent"]
    # the matrices each run used: the directed graph's own (DGD / GT-DGD: row stochastic; push-pull: A and B)
    A, B = row_stochastic(topo).tolist(), column_stochastic(topo).tolist()
    assert runs["pushpull"]["matrices"] == {"A": A, "B": B}
    for name in ("dgd", "dpsgd", "dgd_eq1", "gtdgd", "gtdgd_atc"):
        assert runs[name]["matrices"] == {"W": A}, name
    assert runs["local"]["matrices"] == runs["central"]["matrices"] == {}
    assert runs["pushsum"]["matrices"] == {"B": B}
    assert all(runs[n]["mixing"] == n for n in names if n != "central") and runs["central"]["mixing"] == "local"
    assert runs["local"]["bytes_sent"] == runs["central"]["bytes_sent"] == 0
    assert runs["central"]["single_model"] and len(set(runs["central"]["node_accuracy"])) == 1
    # central: a 4x batch and, by default, the nodes' steps per epoch (ceil(largest node / batch))
    assert runs["central"]["steps_per_epoch"] == runs["pushpull"]["steps_per_epoch"] == \
        int(np.ceil(max(res["partition"]["sizes"]) / 16))
    for r in res["runs"]:
        assert len(r["history"]) == 2 and 0.0 <= r["mean_accuracy"] <= 1.0
        assert r["mean_accuracy"] == pytest.approx(np.mean(r["node_accuracy"]))
    # Fig. 2 images: test images of classes node 1 never trains on
    assert (tmp_path / "attention.png").stat().st_size > 1000
    assert len(res["attention"]["labels"]) == 2 and not set(res["attention"]["labels"]) & {0, 1, 2}
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["runs"][names.index("pushpull")]["node_accuracy"] == runs["pushpull"]["node_accuracy"]
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["algorithm"] for r in rows] == list(runs)
    assert float(rows[names.index("pushpull")]["node_3"]) == pytest.approx(runs["pushpull"]["node_accuracy"][2])


def test_demo_claim_holds(tmp_path):
    res = run_p2pft(demo_config(), tmp_path).results                      # exactly what `make demo` runs
    holds, text = check_claim(res)
    assert holds, text
    # and it is not vacuous: Local-FT nodes cannot exceed their class share of the test set
    local = next(r for r in res["runs"] if r["algorithm"] == "local")
    assert max(local["node_accuracy"]) <= 0.31


def test_config_errors():
    with pytest.raises(ValueError, match="valid: centralized, dgd, .*, pushsum, central"):
        parse_algorithms("local,fedavg")
    with pytest.raises(ValueError, match="repeats a name"):
        parse_algorithms("p2pft,pushpull")                                # a former name is the same algorithm
    assert parse_algorithms("local,p2pft,gt-dgd,dgd-cta,dgd-eq1,gt-dgd-atc,central") == (
        "local", "pushpull", "gtdgd", "dpsgd", "dgd_eq1", "gtdgd_atc", "central")
    assert P2PFTConfig(algorithms=("p2pft", "central")).algorithms == ("pushpull", "central")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_model_kwargs("img_size")
    with pytest.raises(ValueError, match="either --checkpoint or --pretrained"):
        P2PFTConfig(checkpoint="x.pt", pretrained=True)


@pytest.mark.parametrize("name", list_p2pft_algorithms())
def test_every_algorithm_builds_its_mixing_rule(name):
    """Each --algorithms name builds the dflbench.mixing algorithm of that name (central: plain local SGD on one
    model) with the run's learning rate and the matrices its `topology_matrices` name; its label is its own."""
    topo = make_topology("exponential", 4)
    algo = build_algorithm(name, 0.05, 0.0, topo if needs_graph(name) else None)
    assert algo.name == ("local" if name == "central" else name) and algo.lr == 0.05
    assert len(algo.matrices()) == len(type(algo).topology_matrices) == (2 if name == "pushpull" else
                                                                         int(needs_graph(name)))
    assert single_model(name) == (name == "central")
    assert len({label(n) for n in list_p2pft_algorithms()}) == len(list_p2pft_algorithms())
