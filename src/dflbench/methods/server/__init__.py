"""The server baselines of AEDFL Table 1 on the AsyncSimulator, one class per algorithm (`base.py`: what they
share). Synchronous rounds: fedavg, fedprox, fednova (`fedavg.py`). Asynchronous: fedbuff, fedsa, aso-fed, safa,
sageflow, port (one file each). Aggregation rules come from `dflbench.aggregation.rules`. Every module here is
imported (in file-name order, the order `list_methods()` shows them in), so a new method is its file and its
`register_method` line."""

from dflbench.registry import import_submodules

import_submodules(__name__, __path__)
