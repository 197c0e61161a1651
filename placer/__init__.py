"""placer: minimise the GPUs that serve a multi-LoRA vLLM workload, with verifiable, deployable plans."""

from placer.binpack import read_bpp, solve_binpack, triplet_instance
from placer.bounds import lower_bound
from placer.deploy import Deployment, deployment, launch_commands, write_deployment
from placer.evaluate import Evaluation, evaluate
from placer.generate import generate
from placer.io import read_instance, write_instance
from placer.oracle import GpuVerdict, Oracle, make_oracle
from placer.repair import repair
from placer.result import GpuPlan, Result
from placer.solve import DEFAULT_SOLVER, SOLVERS, register_solver, solve
from placer.verify import VerifyReport, verify
from twin.errors import InfeasibleError, InputError, PlacerError
from twin.spec import Adapter, Instance, Lengths, ServerSettings, Workload

Problem = Instance  # the placer's name for an instance

__all__ = [
    "DEFAULT_SOLVER",
    "SOLVERS",
    "Adapter",
    "Deployment",
    "Evaluation",
    "GpuPlan",
    "GpuVerdict",
    "Oracle",
    "Result",
    "VerifyReport",
    "deployment",
    "evaluate",
    "launch_commands",
    "lower_bound",
    "read_bpp",
    "solve_binpack",
    "triplet_instance",
    "make_oracle",
    "register_solver",
    "repair",
    "solve",
    "verify",
    "write_deployment",
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
