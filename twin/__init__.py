"""twin: a discrete-event Digital Twin of one vLLM V1 server serving many LoRA adapters on one GPU."""

from twin.calibration.fit import CalibrationResult, fit_profile
from twin.calibration.runs import RunRecord, load_runs
from twin.catalogue import UncalibratedProfileWarning, list_profiles, load_profile, shipped_profiles
from twin.engine import is_oom, kv_capacity_tokens
from twin.errors import InfeasibleError, InputError, PlacerError
from twin.hardware import derived_profile
from twin.metrics import SimResult, is_starved, smape_paper, smape_symmetric
from twin.profile import (
    MemoryModel,
    Profile,
    StepModel,
)
from twin.seeds import SeedsResult, simulate_seeds
from twin.simulate import simulate, simulate_requests
from twin.spec import ALLOWED_RANKS, Adapter, Instance, Lengths, ServerSettings, Workload
from twin.tracelike import TraceLike, load_tracelike, tracelike_names
from twin.traces import Trace, load_trace, public_traces, shipped_traces
from twin.workload import Requests, generate_requests

__all__ = [
    "ALLOWED_RANKS",
    "Adapter",
    "CalibrationResult",
    "InfeasibleError",
    "InputError",
    "Instance",
    "Lengths",
    "MemoryModel",
    "PlacerError",
    "Profile",
    "Requests",
    "RunRecord",
    "SeedsResult",
    "ServerSettings",
    "SimResult",
    "StepModel",
    "Trace",
    "TraceLike",
    "UncalibratedProfileWarning",
    "Workload",
    "derived_profile",
    "fit_profile",
    "generate_requests",
    "is_oom",
    "is_starved",
    "kv_capacity_tokens",
    "list_profiles",
    "load_profile",
    "load_runs",
    "load_trace",
    "load_tracelike",
    "shipped_profiles",
    "public_traces",
    "shipped_traces",
    "simulate",
    "simulate_requests",
    "simulate_seeds",
    "smape_symmetric",
    "smape_paper",
    "tracelike_names",
]
