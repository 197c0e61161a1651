"""twin: a discrete-event Digital Twin of one vLLM V1 server serving many LoRA adapters on one GPU."""

from twin.errors import InfeasibleError, InputError, PlacerError
from twin.profile import MemoryModel, Profile, StepModel, load_profile, shipped_profiles
from twin.spec import ALLOWED_RANKS, Adapter, Instance, Lengths, ServerSettings, Workload
from twin.traces import Trace, load_trace, shipped_traces

__all__ = [
    "ALLOWED_RANKS",
    "Adapter",
    "InfeasibleError",
    "InputError",
    "Instance",
    "Lengths",
    "MemoryModel",
    "PlacerError",
    "Profile",
    "ServerSettings",
    "StepModel",
    "Trace",
    "Workload",
    "load_profile",
    "load_trace",
    "shipped_profiles",
    "shipped_traces",
]
