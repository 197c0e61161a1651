"""Shared test set-up.

The tests mirror the packages: ``tests/twin``, ``tests/surrogate``, ``tests/placer`` (by the module each file
exercises) and ``tests/cli`` (the console script end to end). The helper modules at ``tests/`` —
``cli_run`` (the in-process console script), ``fake_vllm_server`` (a loopback stand-in for vLLM) and
``surrogate_fake`` (a fast fake twin for sweeps) — are importable by name because ``pyproject.toml`` sets
``pythonpath = ["tests"]``; test files need no ``sys.path`` edits. The test folders have no ``__init__.py``
(so ``tests/twin`` can never shadow the ``twin`` package), hence test file names are unique across folders.

A test file that needs a repository path at collection time (``parametrize`` over files) computes it from
its own location, ``Path(__file__).resolve().parents[2]``; inside a test, use the fixtures below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_run import run_cli

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder (``README.md``, ``instances/``, ``bench/``)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def examples_dir(repo_root: Path) -> Path:
    """``instances/examples/``: the shipped example instances (read them; write elsewhere)."""
    return repo_root / "instances" / "examples"


@pytest.fixture(scope="session")
def tiny_yaml(examples_dir: Path) -> Path:
    """``instances/examples/tiny.yaml``: the hand-checkable 5-adapter instance."""
    return examples_dir / "tiny.yaml"


@pytest.fixture()
def cli() -> Callable[..., tuple[int, str, str]]:
    """``cli("solve", path, ...)`` runs ``placer ...`` in-process: (exit code, stdout, stderr)."""
    return run_cli
