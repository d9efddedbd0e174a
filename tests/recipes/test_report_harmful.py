"""The report's harmful-neighbour table: honest devices scored apart, and the modules' selection and lambda split
into corrupt and honest senders over the second half of the run."""

import pytest

from dflbench.recipes.report import harmful_lines, sender_means


def _run(method, honest, acc, selection=None, lam=None):
    run = {"method": method, "accuracy": acc, "consensus_accuracy": acc + 0.1,
           "history": [{"time": 0.0, "accuracy": 0.1, "consensus_accuracy": 0.1},
                       {"time": 1.0, "accuracy": acc, "consensus_accuracy": acc + 0.1}]}
    if honest is not None:
        run["honest_accuracy"] = honest
    if selection is not None:
        run["diagnostics"] = {"selection_probability": selection, "lambda": lam}
    return run


def test_sender_means_take_the_second_half_and_the_named_senders():
    # 4 evaluations x 3 senders; the first half (rows 0-1) is ignored; None entries are skipped
    series = [[9.0, 9.0, 9.0], [9.0, 9.0, 9.0], [0.1, 0.5, None], [0.3, 0.7, 0.9]]
    assert sender_means({"p": series}, "p", {0}) == pytest.approx(0.2)
    assert sender_means({"p": series}, "p", {1, 2}) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert sender_means({"p": series}, "p", set()) is None
    assert sender_means({}, "p", {0}) is None


def test_harmful_table_scores_honest_devices_and_splits_senders():
    sel = [[0.5, 0.5, 0.5, 0.5], [0.0, 1.0, 1.0, 1.0]]        # device 0 corrupt: second half 0.0 vs 1.0
    lam = [[1.0, 1.0, 1.0, 1.0], [0.2, 0.8, 0.8, 0.8]]
    runs = {"aedfl": [_run("aedfl", 0.7, 0.6, sel, lam), _run("aedfl", 0.9, 0.8, sel, lam)],
            "fedavg": [_run("fedavg", None, 0.5), _run("fedavg", None, 0.7)]}
    lines = harmful_lines(runs, [0], "labels", 4)
    assert lines[0] == "## Harmful neighbours: devices 0 of 4, mode `labels`"
    aedfl = next(row for row in lines if row.startswith("| aedfl |")).split(" | ")
    assert aedfl[1] == "0.8000 ± 0.1414"                      # honest devices: mean and sample std of 0.7, 0.9
    assert aedfl[2] == "0.7000 ± 0.1414"                      # all devices
    assert aedfl[3] == "0.8000 ± 0.1414"                      # the consensus column
    assert aedfl[4:] == ["0.0000 ± 0.0000", "1.0000 ± 0.0000", "0.2000 ± 0.0000", "0.8000 ± 0.0000 |"]
    fedavg = next(row for row in lines if row.startswith("| fedavg |")).split(" | ")
    assert fedavg[1] == "0.6000 ± 0.1414"                     # a server's global model is every device's model
    assert fedavg[4:] == ["-", "-", "-", "- |"]
    assert "flipped labels" in lines[-1]
