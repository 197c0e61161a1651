"""placer: minimise the GPUs that serve a multi-LoRA vLLM workload, with verifiable, deployable plans."""

from placer.advise import Advice, AdvicePoint, advise
from placer.check.evaluate import Evaluation, evaluate
from placer.check.repair import repair
from placer.check.verify import VerifyReport, verify
from placer.context import Context
from placer.deploy import Deployment, deployment, launch_commands, write_deployment
from placer.exact.binpack import read_bpp, solve_binpack, triplet_instance
from placer.exact.bounds import lower_bound
from placer.oracle import GpuVerdict, Oracle, make_oracle
from placer.problem.generate import generate
from placer.problem.io import read_instance, write_instance
from placer.result import GpuPlan, Result
from placer.solve import DEFAULT_SOLVER, SOLVERS, register_solver, solve
from twin.errors import InfeasibleError, InputError, PlacerError
from twin.spec import Adapter, Instance, Lengths, ServerSettings, Workload

Problem = Instance  # the placer's name for an instance

__all__ = [
    "Advice",
    "AdvicePoint",
    "advise",
    "DEFAULT_SOLVER",
    "SOLVERS",
    "Adapter",
    "Context",
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
