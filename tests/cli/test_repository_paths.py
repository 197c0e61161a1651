"""No machine path anywhere in the repository, and data from elsewhere is found only through twin.external.

Checks every tracked file (``git ls-files``) for absolute paths (under a work, root, home or Users folder,
or a Windows drive; the examples below are assembled from parts so that this file holds none) and for the
``shared`` folder of the external data outside the places that resolve or explain it: the resolver module,
its tests and the tests' helper, the README, the bench protocols and the CI script.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:work|root|home|Users)/|\b[A-Za-z]:\\\\?[A-Za-z]")
SHARED = re.compile(r"shared/|[\"']shared[\"']")
SHARED_ALLOWED = ("twin/external.py", "tests/external_data.py", "tests/twin/test_external.py",
                  "tests/cli/test_repository_paths.py", "README.md", ".ci/run")
BINARY = (".png", ".cbm", ".parquet", ".gz")


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.splitlines() if not f.endswith(BINARY) and (ROOT / f).is_file()]


def _hits(pattern: re.Pattern[str], files: list[str]) -> list[str]:
    out = []
    for f in files:
        for n, line in enumerate((ROOT / f).read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                out.append(f"{f}:{n}: {line.strip()[:120]}")
    return out


def _abs(*parts: str) -> str:
    """``/part/part/...``: an absolute path, assembled so that the source holds no literal one."""
    return "/" + "/".join(parts)


def test_patterns_catch_what_they_are_for() -> None:
    drive = "C" + ":"
    for bad in ("see " + _abs("work", "shared", "x"), f"p = '{_abs('root', 'data')}'",
                "~ " + _abs("home", "me", "x"), _abs("Users", "x", "y"), drive + "\\Users\\x",
                drive + "\\\\data"):
        assert ABSOLUTE.search(bad), bad
    # paths that only look absolute inside a longer token, assembled from parts like the bad ones above
    for fine in ("a" + _abs("work", "b"), "bench/results/x.csv", "http://h" + _abs("home", "x"),
                 "~" + _abs("home", "x"), "." + _abs("work", "x"), "key[0]:\\n"):
        assert not ABSOLUTE.search(fine), fine
    assert SHARED.search("../shared/traces") and SHARED.search('root / "shared" / kind')
    assert not SHARED.search("PLACER_SHARED_DIR/traces") and not SHARED.search("2 shared cores")


def test_no_absolute_machine_path_in_tracked_files() -> None:
    assert _hits(ABSOLUTE, _tracked()) == []  # this file included: its examples are assembled from parts


def test_shared_data_is_named_only_where_it_is_resolved_or_explained() -> None:
    files = [f for f in _tracked() if f not in SHARED_ALLOWED and not re.fullmatch(r"bench/[^/]+\.md", f)]
    assert _hits(SHARED, files) == []
