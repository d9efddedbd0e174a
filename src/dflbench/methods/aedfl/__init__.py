"""AEDFL (Liu et al., SDM 2024): the device update shared by the simulator and the runtime (`step`), the simulator
method (`method`), RL model selection (`selection`, Sec. 4.1) and adaptive pruning (`pruning`, Sec. 5)."""

from .method import AEDFL
from .step import AEDFLConfig, AEDFLStep, ModelMessage, StepResult

__all__ = ["AEDFL", "AEDFLConfig", "AEDFLStep", "ModelMessage", "StepResult"]
