"""Gossip baselines on the AsyncSimulator (exponential graph, no server): AD-PSGD (asynchronous pairwise averaging,
AEDFL Table 1) and D-PSGD (its synchronous counterpart); `base.py`: what they and DisPFL share. Every module here
is imported, so a new method is its file and its `register_method` line."""

from dflbench.registry import import_submodules

import_submodules(__name__, __path__)
