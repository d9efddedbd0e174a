"""dflbench.engines (names imported on first use: `dflbench.lazy`)."""

from dflbench.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "async_sim": ("AsyncConfig", "AsyncMethod", "AsyncSimulator", "Message", "RunResult"),
    "async_stacked": ("DeviceData", "StackedModel"),
    "coordinator": ("Coordinator", "FaultConfig"),
    "devices": ("DeviceProfiles", "load_profiles", "sample_profiles"),
    "sampling": ("NodeSampler",),
    "sync": ("SyncConfig", "SyncResult", "SyncSimulator", "TailInputs"),
})
