"""Running CBC through PuLP and reading its verdict honestly (PuLP may say "Optimal" after a time limit)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

from placer.exact.packing import Packing, PackOutcome

CBC_OVERHEAD_S = 0.15  # kept for writing the model, starting CBC and reading its solution back


@contextlib.contextmanager
def quiet_pulp() -> Iterator[None]:
    """Silence PuLP 3's deprecation notices about its (still supported) 2.x modelling API."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def run_cbc(prob: Any, time_limit: float, workers: int, warm: bool) -> tuple[int, float | None, str]:
    """Solve a PuLP problem with CBC: (sol_status, CBC's lower bound or None, CBC's result line)."""
    import pulp

    fd, log = tempfile.mkstemp(prefix="placer-cbc-", suffix=".log")
    os.close(fd)
    try:
        cmd = pulp.PULP_CBC_CMD(timeLimit=max(0.1, float(time_limit)), threads=max(1, int(workers)),
                                msg=False, warmStart=warm, logPath=log)
        prob.solve(cmd)
        with open(log, errors="replace") as f:
            text = f.read()
    finally:
        os.unlink(log)
    result = next((ln.strip() for ln in text.splitlines() if ln.startswith("Result - ")), "")
    bound = None
    m = re.search(r"^Lower bound:\s+(-?[\d.eE+-]+)", text, re.MULTILINE)
    if m:
        bound = float(m.group(1))
    return int(prob.sol_status), bound, result


def finish(packing: Packing, lower: int, sol_status: int, cbc_bound: float | None, result: str,
           runtime: float) -> PackOutcome:
    """Honest status from CBC's sol_status, its log line and the bounds."""
    bound = max(float(lower), cbc_bound if cbc_bound is not None else -math.inf)
    proven = (sol_status == 1 and "Optimal" in (result or "Optimal")) or \
        math.ceil(bound - 1e-6) >= packing.num_bins
    status = "optimal" if proven else "timeout"
    if proven:
        bound = float(packing.num_bins)
    return PackOutcome(packing, status, bound, runtime,
                       detail=f"CBC: {result or 'no result line'}; objective {packing.num_bins}, "
                              f"bound {bound:g}",
                       solver_status={1: "Optimal", 2: "IntegerFeasible"}.get(sol_status, str(sol_status)))
