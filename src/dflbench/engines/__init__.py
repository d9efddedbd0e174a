"""dflbench.engines."""

from .async_sim import AsyncConfig, AsyncMethod, AsyncSimulator, Message, RunResult
from .async_stacked import DeviceData, StackedModel
from .coordinator import Coordinator, FaultConfig
from .devices import DeviceProfiles, load_profiles, sample_profiles
from .sampling import NodeSampler
from .sync import SyncConfig, SyncResult, SyncSimulator, TailInputs

__all__ = [
    "AsyncConfig", "AsyncMethod", "AsyncSimulator", "Message", "RunResult", "DeviceData", "StackedModel",
    "Coordinator", "FaultConfig", "DeviceProfiles", "load_profiles", "sample_profiles", "NodeSampler",
    "SyncConfig", "SyncResult", "SyncSimulator", "TailInputs",
]
