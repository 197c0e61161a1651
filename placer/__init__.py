"""placer: minimise the GPUs that serve a multi-LoRA vLLM workload, with verifiable, deployable plans."""

from placer.generate import generate
from placer.io import read_instance, write_instance
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
    "generate",
    "read_instance",
    "write_instance",
]
