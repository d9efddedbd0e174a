"""AEDFL (Liu et al., SDM 2024): the method (`method`), RL model selection (`selection`, Sec. 4.1) and adaptive
pruning (`pruning`, Sec. 5)."""

from .method import AEDFL, AEDFLConfig

__all__ = ["AEDFL", "AEDFLConfig"]
