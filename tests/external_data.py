"""The real data from elsewhere (public traces, real vLLM runs), found by :mod:`twin.external`, for tests.

A test that needs it calls :func:`external_file`, which skips the test with the reason when the file is not
found (CI has ``../shared`` next to the checkout; set ``PLACER_TRACES_DIR`` / ``PLACER_CALIBRATION_DIR`` or
``PLACER_SHARED_DIR`` elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.external import KIND_ENV, SHARED_ENV, find_data_dir


def external_file(kind: str, name: str) -> Path:
    """``name`` in the external ``kind`` folder (``traces`` or ``calibration``); skips the test if absent."""
    folder = find_data_dir(kind)
    if folder is None or not (folder / name).is_file():
        pytest.skip(f"{name} not found: set {KIND_ENV[kind]} or {SHARED_ENV}, or put the {kind} folder in "
                    f"../shared/{kind} next to the checkout")
    return folder / name
