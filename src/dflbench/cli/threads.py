"""`--threads`, shared by every command that trains (`p2pft`, `pretrain`, `demo`, `reproduce`, `run`)."""

from __future__ import annotations

import warnings

import torch

from dflbench.errors import UserError


def set_threads(threads: int | None) -> None:
    """torch CPU threads (None or 0 keeps the default); also silences torch's notice that vmap over SDPA falls back to a
    slower path (docs/ARCHITECTURE.md, stacked node state)."""
    warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented "
                                              "the batching rule")
    if threads is not None and threads < 0:
        raise UserError(f"--threads must be >= 0 (0 keeps torch's default), got {threads}")
    if threads:
        torch.set_num_threads(threads)
