"""A placement report a person can hand to a colleague: one folder with the plan, the vLLM launch settings
and routing map, the twin's verification, the charts and a short Markdown summary (``README.md``).

:func:`write_report` builds everything in a temporary sibling folder and renames it into place at the end,
so an interrupted run leaves either the old report or the new one, never half of one. It only replaces an
existing folder that is empty or was itself written by :func:`write_report`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from placer.check.evaluate import check_plan
from placer.context import DEFAULT_CONTEXT, Context
from placer.reporting.jsonable import json_default
from placer.reporting.markdown import summary_markdown
from placer.reporting.progress import ProgressFn
from placer.result import Result
from twin.errors import InputError
from twin.files import atomic_write_text
from twin.profile import Profile
from twin.spec import Instance

if TYPE_CHECKING:
    from placer.check.verify import VerifyReport

MARKER = ".placer-report"


def check_target(out_dir: str | Path) -> Path:
    """``out_dir`` if a report may be written there (absent, empty, or an earlier report); else InputError."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", field="--report", value=str(out))
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise InputError("exists, is not empty and is not a placer report: choose a new folder",
                         field="--report", value=str(out))
    return out


def write_report(problem: Instance, result: Result, out_dir: str | Path, *, verify: bool = True,
                 verification: VerifyReport | None = None, seed: int = 0, workers: int | None = None,
                 sample: int | None = None, charts: bool = True, adapter_dir: str = "adapters",
                 base_port: int = 8000, progress: ProgressFn | None = None,
                 context: Context | None = None) -> Path:
    """Write the report folder ``out_dir`` for ``result`` (a plan of ``problem``) and return its path.

    ``verify``: re-simulate the plan's GPUs in the twin (:func:`placer.check.verify.verify` with ``seed``,
    ``workers``, ``sample``) unless ``verification`` is given. ``charts``: draw ``plan.png`` and the twin run
    of the worst simulated GPU. ``context``: the twin profile (default: the shipped one). Raises
    :class:`InputError` when the plan does not fit the problem (unknown
    adapters, violated constraints) or ``out_dir`` is a folder that is not a report.
    """
    out = check_target(out_dir)
    profile = (context or DEFAULT_CONTEXT).profile_for(problem)
    structural = ([e for e in check_plan(problem, result, profile) if "memory error" not in e]
                  if result.gpus else [])
    if structural:
        raise InputError(f"plan does not fit the instance: {structural[0]}", field="gpus",
                         value=result.num_gpus)
    if verification is None and verify and result.gpus:
        from placer.check.verify import verify as twin_verify

        verification = twin_verify(problem, result, seed=seed, workers=workers, sample=sample,
                                   progress=progress, context=context)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        _fill(tmp, problem, result, verification, charts=charts, seed=seed, adapter_dir=adapter_dir,
              base_port=base_port, profile=profile)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fill(d: Path, problem: Instance, result: Result, verification: VerifyReport | None, *, charts: bool,
          seed: int, adapter_dir: str, base_port: int, profile: Profile) -> None:
    from placer.deploy import ROUTES_FILE, deployment, launch_commands, routes_json
    from placer.problem.io import write_instance

    result.save(d / "plan.json")
    write_instance(problem, d / "instance.yaml")
    launch_error = None
    if result.gpus:
        try:
            launches = launch_commands(problem, result, adapter_dir=adapter_dir, base_port=base_port,
                                       profile=profile)
            shell = deployment(problem, result, format="shell", adapter_dir=adapter_dir, base_port=base_port)
            atomic_write_text(d / "launch.sh", shell.text)
            os.chmod(d / "launch.sh", 0o777 & ~_umask())
            atomic_write_text(d / ROUTES_FILE, routes_json(shell))
            atomic_write_text(d / "launch.json", json.dumps(
                [{"gpu": x.gpu, "port": x.port, "argv": list(x.argv), "command": x.command}
                 for x in launches],
                indent=2) + "\n")
        except InputError as exc:  # e.g. a GPU whose settings cannot start: say so instead of a script
            launch_error = exc.detail
    if verification is not None:
        atomic_write_text(d / "verification.json", json.dumps(verification.to_dict(), indent=2,
                                                              default=json_default) + "\n")
    twin_png = None
    if charts:
        from placer.reporting.charts import plan_chart

        plan_chart(problem, result, d / "plan.png", verification=verification)
        twin_png = _worst_gpu_chart(d, problem, result, verification, seed, profile)
    text = summary_markdown(problem, result, verification, launch_error=launch_error, twin_png=twin_png,
                            files=sorted({p.name for p in d.iterdir()} | {"README.md"}), charts=charts)
    atomic_write_text(d / "README.md", text)
    atomic_write_text(d / MARKER, f"written by placer at {_now()}\n")


def _worst_gpu_chart(d: Path, problem: Instance, result: Result, verification: VerifyReport | None,
                     seed: int, profile: Profile) -> str | None:
    """Simulate again, with time series, the simulated GPU that served the smallest fraction of its load."""
    if verification is None or not verification.gpus:
        return None
    from placer.reporting.charts import twin_chart
    from twin.simulate import simulate

    def served(row: dict[str, Any]) -> float:
        if row.get("oom"):
            return -1.0
        f = row.get("served_fraction")
        return 2.0 if f is None else float(f)

    row = min(verification.gpus, key=served)
    j = int(row["gpu"])
    g = result.gpus[j]
    sim = simulate(problem.subset(list(g.adapters)), max_loras=g.max_loras, max_cpu_loras=g.max_cpu_loras,
                   max_lora_rank=g.max_lora_rank, seed=verification.seed, timeseries=True, profile=profile)
    name = f"gpu-{j}-twin.png"
    twin_chart(sim, d / name, title=f"{problem.name}, GPU {j} ({len(g.adapters)} adapters) in the twin")
    return name


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

