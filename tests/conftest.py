"""Suite-wide fixtures."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for every test, restored afterwards: the tests use tiny models, and on the shared
    2-core CI machine OpenMP thread wake-ups cost far more than the ops (a 4-image tiny ViT forward: ~450 ms
    with 2 threads vs ~3 ms with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def saved_figures(monkeypatch):
    """Every figure `dflbench.plots` saves during the test, kept open for inspection: [(file name, figure)]; closed
    after the test."""
    import matplotlib.pyplot as plt

    from dflbench import plots

    saved, save, close = [], plots._save, plt.close

    def keep(plt, fig, path):
        saved.append((str(path).rsplit("/", 1)[-1], fig))
        monkeypatch.setattr(plt, "close", lambda fig: None)
        return save(plt, fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    yield saved
    for _, fig in saved:
        close(fig)
