"""The server baselines of AEDFL Table 1 on the AsyncSimulator, one class per algorithm (`base.py`: what they
share). Synchronous rounds: fedavg, fedprox, fednova (`fedavg.py`). Asynchronous: fedbuff, fedsa, aso-fed, safa,
sageflow, port (one file each). Aggregation rules come from `dflbench.aggregation.rules`."""

# the import order is the order `list_methods()` shows them in
from . import aso_fed, fedavg, fedbuff, fedsa, port, safa, sageflow  # noqa: F401  (register the methods)
