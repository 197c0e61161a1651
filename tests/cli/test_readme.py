"""Every ``placer ...`` command in the README runs: the README is a tested script, not a promise.

The README's fenced shell blocks (```bash, ```sh, ```console or unlabelled) are parsed; every line (after
joining ``\\`` continuations and splitting ``&&``) that starts with ``placer`` is one test case. The cases
run in README order, in one scratch folder holding a copy of ``instances/`` (so earlier commands' outputs are
there for later ones), in-process through ``placer.cli.main``, and must exit 0 (``--json`` output must be
JSON). ``solve`` and ``compare`` without ``--time-limit`` get a short one. Optional parts written
``[--seed 0]`` are left out.

An HTML comment on the line before a block changes how its commands are tested:

- ``<!-- readme-test: slow -->`` — run them only in the slow suite (``pytest -m slow``); a slow command must
  not write a file that a later fast command reads;
- ``<!-- readme-test: help -->`` — they need what CI has not (a GPU, a vLLM server, Ray, real-run data):
  run ``COMMAND --help`` and check that every ``--option`` the README uses exists.

```python blocks run too (``exec`` in the same folder, after the commands), unless marked ``help``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
SHORT_TIME_LIMIT = "20"
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"<!--\s*readme-test:\s*(\w+)\s*-->")
_ENV = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+(?=placer\b)")


@dataclass(frozen=True)
class Command:
    line: int
    text: str
    mode: str  # run | slow | help

    @property
    def argv(self) -> list[str]:
        text = re.sub(r"\s\[[^\]]*\]", "", self.text)  # optional parts: [--seed 0]
        args = shlex.split(text, comments=True)
        assert args and args[0] == "placer", self.text
        return args[1:]


def readme_commands(text: str) -> list[Command]:
    """The ``placer`` commands of the shell blocks of a Markdown text, with their test mode."""
    out: list[Command] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i].strip())
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        mode = "run"
        for back in range(start - 1, max(-1, start - 3), -1):
            mark = _MARK.search(lines[back])
            if mark:
                mode = mark.group(1)
                break
            if lines[back].strip():
                break
        i += 1
        buf, first = "", 0
        while i < len(lines) and not lines[i].strip().startswith("```"):
            raw = lines[i].rstrip()
            if not buf:
                first = i + 1
            buf += raw[:-1] + " " if raw.endswith("\\") else raw
            if not raw.endswith("\\"):
                if lang in SHELL_LANGS:
                    for part in buf.split("&&"):
                        part = _ENV.sub("", part.strip())  # RAY_ADDRESS=auto placer ...
                        if part.startswith("placer ") or part == "placer":
                            out.append(Command(first, part, mode))
                buf = ""
            i += 1
        i += 1
    return out


COMMANDS = readme_commands(README.read_text())


def python_blocks(text: str) -> list[Command]:
    """The ```python blocks of a Markdown text (``text`` = the code), with their test mode."""
    out = []
    for m in re.finditer(r"(?:^|\n)((?:<!--[^\n]*-->\s*\n)?)```python\n(.*?)```", text, re.S):
        mark = _MARK.search(m.group(1))
        out.append(Command(text[:m.start(2)].count("\n") + 1, m.group(2), mark.group(1) if mark else "run"))
    return out


PYTHON = python_blocks(README.read_text())


def _params() -> list[Any]:
    params = []
    for c in COMMANDS:
        marks = [pytest.mark.slow] if c.mode == "slow" else []
        params.append(pytest.param(c, id=f"L{c.line}:{' '.join(c.argv[:2])}", marks=marks))
    return params


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "instances", d / "instances")
    return d


def _with_time_limit(argv: list[str]) -> list[str]:
    if argv and argv[0] in ("solve", "compare") and not any(a.startswith("--time-limit") for a in argv):
        return [*argv, "--time-limit", SHORT_TIME_LIMIT]
    return argv


@pytest.mark.parametrize("cmd", _params())
def test_readme_command_runs(cmd: Command, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    argv = cmd.argv
    if cmd.mode == "help":
        words = [a for a in argv if not a.startswith("-")]
        sub = words[:2] if len(words) > 1 and words[0] in ("twin", "surrogate") else words[:1]
        code, out, err = run_cli(*sub, "--help")
        assert code == 0, err
        for opt in (a.split("=")[0] for a in argv if a.startswith("--")):
            assert opt in out, f"README line {cmd.line}: {opt} is not an option of placer {' '.join(sub)}"
        return
    code, out, err = run_cli(*_with_time_limit(argv))
    assert code == 0, f"README line {cmd.line}: `{cmd.text}` exited {code}: {err.strip()[-500:]}"
    if "--json" in argv:
        json.loads(out)


@pytest.mark.parametrize("block", [
    pytest.param(b, id=f"L{b.line}", marks=[pytest.mark.slow] if b.mode == "slow" else [])
    for b in PYTHON if b.mode != "help"])
def test_readme_python_block_runs(block: Command, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    exec(compile(block.text, f"README.md:{block.line}", "exec"), {"__name__": "readme"})


def test_the_readme_has_commands_and_a_two_command_quick_start() -> None:
    assert len(COMMANDS) >= 5
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = [ln for block in re.findall(r"```bash\n(.*?)```", quick, re.S) for ln in block.splitlines()
             if ln.strip()]
    assert len(lines) == 2, lines


def test_parser_joins_continuations_splits_and_reads_marks() -> None:
    text = "\n".join([
        "```bash", "pip install . && placer solve a.yaml   # comment", "placer verify a.yaml \\",
        "    p.json --json", "```", "<!-- readme-test: help -->", "```",
        "placer twin collect x.yaml [--seed 0]", "RAY_ADDRESS=auto placer surrogate sweep --backend ray",
        "```", "```python", "placer.solve(x)", "```"])
    cmds = readme_commands(text)
    assert [(c.argv, c.mode) for c in cmds] == [
        (["solve", "a.yaml"], "run"), (["verify", "a.yaml", "p.json", "--json"], "run"),
        (["twin", "collect", "x.yaml"], "help"), (["surrogate", "sweep", "--backend", "ray"], "help")]
