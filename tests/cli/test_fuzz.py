"""Robustness: no input ever produces a traceback.

Random structures, random bytes and mutated valid files go through the instance reader, the plan reader and
the console script: each is accepted or rejected with an :class:`InputError` (the CLI: one red line, exit 2).
Plans that do not fit their instance are rejected by ``verify`` with the reason. Interrupted writes leave the
old file (or report folder) intact and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placer.problem.io import read_instance, write_instance
from placer.result import GpuPlan, Result
from twin.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[2] / "instances" / "examples"
TINY = EXAMPLES / "tiny.yaml"
N_EXAMPLES = int(os.environ.get("PLACER_FUZZ_EXAMPLES", "40"))  # raise it for a long fuzzing session
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_KEYS = ["format_version", "name", "model", "gpu", "server", "workload", "adapters", "adapters_csv", "id",
         "rank", "rate_rps", "duration_s", "arrival", "cv", "trace", "lengths", "input_mean", "input_std",
         "output_mean", "output_std", "max_num_batched_tokens", "max_num_seqs", "max_model_len",
         "gpu_memory_utilization", "solver", "status", "num_gpus", "gpus", "max_loras", "max_cpu_loras",
         "max_lora_rank", "lower_bound", "runtime_s", "extra", "solver_bound"]
_WORDS = ["llama-3.1-8b-instruct", "h100-64gb", "sharegpt", "poisson", "gamma", "trace", "feasible", "a0",
          "16", ""]
_leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
         | st.text(max_size=12) | st.sampled_from(_WORDS))
_key = st.sampled_from(_KEYS) | st.text(max_size=8)
values = st.recursive(_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(_key, c, max_size=6),
                      max_leaves=25)


def _tiny_doc() -> dict[str, Any]:
    return yaml.safe_load(TINY.read_text())


def _plan_doc() -> dict[str, Any]:
    return {"format_version": 1, "solver": "ffd-bisect", "status": "feasible", "num_gpus": 2,
            "lower_bound": 1, "runtime_s": 0.1, "gpus": [
                {"adapters": ["a0", "a1", "a2"], "max_loras": 3, "max_cpu_loras": 3, "max_lora_rank": 16},
                {"adapters": ["a3", "a4"], "max_loras": 2, "max_cpu_loras": 2, "max_lora_rank": 32}]}


def _read_or_input_error(path: Path) -> None:
    try:
        read_instance(path)
    except InputError as exc:
        assert "\n" not in str(exc), str(exc)


@st.composite
def mutated(draw: st.DrawFn, doc: dict[str, Any]) -> Any:
    """``doc`` with a few random edits at random paths: replace a value, delete a key, add a key."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        node: Any = doc
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            if not isinstance(node[key], (dict, list)) or not node[key]:
                break
            node = node[key]
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                node[key] = draw(values)
            elif action == "delete":
                del node[key]
            else:
                node[draw(_key)] = draw(values)
        elif isinstance(node, list) and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(values)
    return doc


# --- the instance reader ---------------------------------------------------------------------------------
@FUZZ
@given(doc=values, suffix=st.sampled_from([".yaml", ".json"]))
def test_random_structures_are_read_or_rejected(tmp_path_factory: pytest.TempPathFactory, doc: Any,
                                                suffix: str) -> None:
    path = tmp_path_factory.mktemp("inst") / f"x{suffix}"
    text = json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc)
    path.write_text(text)
    _read_or_input_error(path)


@FUZZ
@given(doc=mutated(_tiny_doc()), suffix=st.sampled_from([".yaml", ".json"]))
def test_mutated_instances_are_read_or_rejected(tmp_path_factory: pytest.TempPathFactory, doc: Any,
                                                suffix: str) -> None:
    path = tmp_path_factory.mktemp("inst") / f"x{suffix}"
    path.write_text(json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc))
    _read_or_input_error(path)


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".yaml", ".json", ".yml"]))
def test_random_bytes_are_rejected(tmp_path_factory: pytest.TempPathFactory, data: bytes,
                                   suffix: str) -> None:
    path = tmp_path_factory.mktemp("inst") / f"x{suffix}"
    path.write_bytes(data)
    _read_or_input_error(path)


@FUZZ
@given(data=st.data())
def test_text_edits_of_a_valid_file_are_read_or_rejected(tmp_path_factory: pytest.TempPathFactory,
                                                         data: st.DataObject) -> None:
    text = TINY.read_text()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 20)))
        edit = data.draw(st.text(max_size=6) | st.sampled_from(
            [":", "- ", "{", "]", "\t", "\x00", "&a", "*a", "!!python/object", "\n", "1e999", "-0"]))
        text = text[:i] + edit + text[j:]
    path = tmp_path_factory.mktemp("inst") / "x.yaml"
    path.write_text(text, encoding="utf-8")
    _read_or_input_error(path)


@FUZZ
@given(body=st.text(max_size=200), header=st.sampled_from(["id,rank,rate_rps", "rank,id,rate_rps", "id,rank",
                                                            "", "id,rank,rate_rps,extra"]))
def test_random_adapter_csv_files_are_read_or_rejected(tmp_path_factory: pytest.TempPathFactory, body: str,
                                                       header: str) -> None:
    d = tmp_path_factory.mktemp("csv")
    doc = _tiny_doc()
    del doc["adapters"]
    doc["adapters_csv"] = "a.csv"
    (d / "x.yaml").write_text(yaml.safe_dump(doc))
    (d / "a.csv").write_bytes((header + "\n" + body).encode("utf-8", "surrogatepass"))
    _read_or_input_error(d / "x.yaml")


_CELLS = st.sampled_from(["0", "1.5", "-1", "nan", "inf", "", "x", "1e9", "3"])
_TRACE_HEADERS = ["arrived_at,num_prefill_tokens,num_decode_tokens", "arrived_at,num_prefill_tokens", "x", ""]


@pytest.mark.filterwarnings("ignore:loadtxt")
@FUZZ
@given(rows=st.lists(st.lists(_CELLS, min_size=2, max_size=4), max_size=6),
       header=st.sampled_from(_TRACE_HEADERS))
def test_random_trace_files_are_read_or_rejected(tmp_path_factory: pytest.TempPathFactory,
                                                 rows: list[list[str]], header: str) -> None:
    from twin.traces import load_trace

    path = tmp_path_factory.mktemp("trace") / "t.csv"
    path.write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    with contextlib.suppress(InputError):
        tr = load_trace(path)
        assert tr.arrival_s.size >= 2


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "- " * 100_000 + "x\n", "{a: " * 50_000])
def test_deeply_nested_files_are_rejected_not_a_crash(tmp_path: Path, text: str) -> None:
    """libyaml overflows its C stack (SIGSEGV) near 10^5 nesting levels: a subprocess, so a crash is seen;
    json raises RecursionError."""
    import subprocess

    (tmp_path / "deep.yaml").write_text(text)
    (tmp_path / "deep.json").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "placer", "show", str(tmp_path / "deep.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "nested more than" in proc.stderr, (proc.returncode, proc.stderr[-300:])
    for args in (["show", str(tmp_path / "deep.json")], ["verify", str(TINY), str(tmp_path / "deep.json")],
                 ["verify", str(TINY), str(tmp_path / "deep.yaml")]):
        code, _out, err = run_cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, code, err)


# --- the plan reader ------------------------------------------------------------------------------------
@FUZZ
@given(doc=values | mutated(_plan_doc()))
def test_plan_reader_accepts_or_rejects(doc: Any) -> None:
    try:
        plan = Result.from_dict(doc, source="p.json")
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert plan.num_gpus == len(plan.gpus)
    json.dumps(plan.to_dict())  # what was read can be written


@FUZZ
@given(data=st.binary(max_size=200))
def test_plan_files_of_random_bytes_are_rejected(tmp_path_factory: pytest.TempPathFactory,
                                                  data: bytes) -> None:
    path = tmp_path_factory.mktemp("plan") / "p.json"
    path.write_bytes(data)
    with contextlib.suppress(InputError):
        Result.load(path)


# --- verify rejects plans that do not fit their instance ------------------------------------------------
def _plan(*gpus: GpuPlan) -> Result:
    return Result(solver="hand", status="feasible", num_gpus=len(gpus), lower_bound=1, runtime_s=0.0,
                  gpus=tuple(gpus))


def _g(ids: str, s: int = 2, m: int | None = None, r: int = 32) -> GpuPlan:
    ad = tuple(ids.split())
    return GpuPlan(adapters=ad, max_loras=s, max_cpu_loras=m if m is not None else len(ad), max_lora_rank=r)


@pytest.mark.parametrize(("plan", "reason"), [
    (_plan(_g("a0 a1 a2 a3 a4 zz")), "unknown adapter ids ['zz']"),
    (_plan(_g("a0 a1 a2"), _g("a2 a3 a4")), "adapters placed more than once: ['a2']"),
    (_plan(_g("a0 a1 a2 a3")), "1 adapters not placed: ['a4']"),
    (_plan(_g("a0 a1 a2 a3 a4", r=16)), "max_lora_rank 16 below rank 32"),
    (_plan(_g("a0 a1 a2 a3 a4", r=24)), "max_lora_rank 24 is not one of"),
    (_plan(_g("a0 a1 a2 a3 a4", s=9)), "max_loras 9 outside [1, 5 adapters]"),
    (_plan(_g("a0 a1 a2 a3 a4", s=4, m=3)), "max_cpu_loras 3 below max_loras 4"),
    (_plan(_g("a0 a1"), _g(""), _g("a2 a3 a4")), "gpus[1]: no adapters"),
])
def test_verify_rejects_plans_that_do_not_fit_with_the_reason(plan: Result, reason: str) -> None:
    from placer.check.verify import verify

    with pytest.raises(InputError) as info:
        verify(read_instance(TINY), plan, workers=1)
    assert reason in str(info.value)


# --- the console script ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def broken_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("broken")
    doc = _tiny_doc()
    files = {"bytes.yaml": b"\x00\xff\xfe garbage", "empty.json": b"", "list.yaml": b"- 1\n- 2\n",
             "badrank.yaml": yaml.safe_dump({**doc, "adapters": [{"id": "a", "rank": 7, "rate_rps": 1}]}
                                            ).encode(),
             "unknown.yaml": yaml.safe_dump({**doc, "colour": "red"}).encode(),
             "plan-bad.json": json.dumps({**_plan_doc(), "num_gpus": 5}).encode(),
             "plan-unknown.json": json.dumps({**_plan_doc(), "gpus": [
                 {"adapters": ["nope"], "max_loras": 1, "max_cpu_loras": 1, "max_lora_rank": 8}],
                 "num_gpus": 1}).encode(),
             "notjson.json": b"{'a': 1", "deep.yaml": b"[" * 5000}
    for name, data in files.items():
        (d / name).write_bytes(data)
    return [str(d / name) for name in files] + [str(d / "missing.yaml"), str(d)]


_COMMANDS = [["show"], ["solve"], ["verify", str(TINY)], ["deploy", str(TINY)], ["compare"],
             ["twin", "simulate"], ["surrogate", "predict"], ["verify"], ["deploy"]]
_OPTIONS = st.lists(st.sampled_from([
    ["--seed", "-3"], ["--seed", "x"], ["--time-limit", "0"], ["--time-limit", "nan"], ["--solver", "nope"],
    ["--oracle", "analytic"], ["--oracle", "bogus"], ["--json"], ["--max-loras", "0"], ["--max-loras", "4"],
    ["--sample", "-1"], ["--workers", "0"], ["--margin", "7"], ["--solvers", ",,"], ["--bogus"], ["--"],
    ["--max-cpu-loras", "1"], ["-o"], ["--plot", "x.gif"], ["--plot", "/proc/x.png"],
    ["--report", "/dev/null"]]), max_size=3)


@settings(max_examples=N_EXAMPLES + 20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cmd=st.sampled_from(_COMMANDS), which=st.integers(0, 100), opts=_OPTIONS)
def test_cli_on_broken_files_exits_2_with_one_line(broken_files: list[str], cmd: list[str], which: int,
                                                   opts: list[list[str]]) -> None:
    target = broken_files[which % len(broken_files)]
    args = [*cmd, target, *(target for _ in range(1) if cmd in (["verify"], ["deploy"])),
            *[a for o in opts for a in o]]
    code, _out, err = run_cli(*args)
    assert code == 2, (args, code, err)
    assert "Traceback" not in err, (args, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if lines and lines[0].startswith(("error:", "infeasible:")):
        assert len(lines) == 1, (args, err)


def test_cli_error_line_names_the_file_field_and_value(broken_files: list[str]) -> None:
    bad = next(f for f in broken_files if f.endswith("badrank.yaml"))
    code, out, err = run_cli("solve", bad, "--json")
    assert code == 2 and out == ""
    ranks = "[1, 8, 16, 32, 64, 128, 256, 320, 512]"
    assert err.strip() == f"error: {bad}: adapters[0].rank: must be one of {ranks} (got 7)"


# --- interrupted writes leave the old file ---------------------------------------------------------------
def _interrupt(*_a: Any, **_k: Any) -> None:
    raise KeyboardInterrupt


def _no_temp_left(d: Path, keep: set[str]) -> None:
    assert {p.name for p in d.iterdir()} == keep


def test_interrupted_plan_write_keeps_the_old_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plan.json"
    path.write_text("old plan\n")
    monkeypatch.setattr(os, "fsync", _interrupt)  # the moment the data is in the temporary file
    code, _out, _err = run_cli("solve", str(TINY), "--oracle", "analytic", "--out", str(path))
    assert isinstance(code, KeyboardInterrupt) or code == 130  # click turns ^C into "Aborted!", exit 130
    assert path.read_text() == "old plan\n"
    _no_temp_left(tmp_path, {"plan.json"})


def test_interrupted_instance_chart_and_csv_writes_keep_old_files(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from placer.check.compare import CompareRow, write_csv
    from placer.reporting.charts import compare_chart

    inst, chart, csv = tmp_path / "i.yaml", tmp_path / "c.png", tmp_path / "r.csv"
    for p in (inst, chart, csv):
        p.write_text("old\n")
    row = CompareRow("tiny", 5, "m", "ffd-bisect", "optimal", 1, 1, 0.0, 0.1, True, "")
    monkeypatch.setattr(os, "fsync", _interrupt)
    for write in (lambda: write_instance(read_instance(TINY), inst), lambda: compare_chart([row], chart),
                  lambda: write_csv([row], csv)):
        with pytest.raises(KeyboardInterrupt):
            write()
    assert all(p.read_text() == "old\n" for p in (inst, chart, csv))
    _no_temp_left(tmp_path, {"i.yaml", "c.png", "r.csv"})


def test_interrupted_report_keeps_the_old_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import placer.reporting.report as report

    problem = read_instance(TINY)
    plan = _plan(_g("a0 a1 a2 a3 a4", s=5))
    out = report.write_report(problem, plan, tmp_path / "rep", verify=False, charts=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(report, "summary_markdown", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(problem, plan.replace(solver="other"), out, verify=False, charts=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    _no_temp_left(tmp_path, {"rep"})
