"""Gossip baselines on the AsyncSimulator (exponential graph, no server): AD-PSGD (asynchronous pairwise averaging,
AEDFL Table 1) and D-PSGD (its synchronous counterpart); `base.py`: what they and DisPFL share."""

from . import ad_psgd, d_psgd  # noqa: F401  (register the methods)
