"""placer: minimise the GPUs that serve a multi-LoRA vLLM workload, with verifiable, deployable plans."""

from twin.errors import InfeasibleError, InputError, PlacerError
from twin.spec import Adapter, Instance, Lengths, ServerSettings, Workload

Problem = Instance  # the placer's name for an instance

__all__ = [
    "Adapter",
    "InfeasibleError",
    "InputError",
    "Instance",
    "Lengths",
    "PlacerError",
    "Problem",
    "ServerSettings",
    "Workload",
]
