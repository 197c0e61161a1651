"""Run the ``placer`` console script in-process, the way a shell would see it (shared by the CLI tests)."""

from __future__ import annotations

import contextlib
import io
import sys

from placer.cli.app import main


def run_cli(*args: str) -> tuple[int, str, str]:
    """``placer ARGS`` through :func:`placer.cli.app.main`: (exit code, stdout, stderr).

    Any exception other than SystemExit propagates: a traceback is a bug, and the test shows it.
    """
    out, err = io.StringIO(), io.StringIO()
    saved, sys.argv = sys.argv, ["placer", *args]
    code: object = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = saved
    exit_code = code if isinstance(code, int) else (0 if code is None else 1)
    return exit_code, out.getvalue(), err.getvalue()
