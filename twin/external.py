"""Where data from elsewhere lives: the public request traces and the real vLLM runs.

Neither is part of the package (they come from other public repositories and keep their own licences);
they are read where they are. A folder of kind ``traces`` or ``calibration`` is found, in this order:

1. ``$PLACER_TRACES_DIR`` / ``$PLACER_CALIBRATION_DIR`` (the folder itself);
2. ``$PLACER_SHARED_DIR/<kind>`` (a folder holding both);
3. ``<repository root>/../shared/<kind>``, the repository root being the folder above this package when it
   holds a ``pyproject.toml`` (a source checkout; an installed package has no such root).

:func:`find_data_dir` returns ``None`` when nothing is found (tests skip on it); :func:`data_dir` and
:func:`data_file` raise a one-line :class:`~twin.errors.InputError` that says where to download the data and
how to point at it.
"""

from __future__ import annotations

import os
from pathlib import Path

from twin.errors import InputError

SHARED_ENV = "PLACER_SHARED_DIR"
KIND_ENV: dict[str, str] = {"traces": "PLACER_TRACES_DIR", "calibration": "PLACER_CALIBRATION_DIR"}
ORIGIN: dict[str, str] = {
    "traces": "https://github.com/Azure/AzurePublicDataset (AzureLLMInferenceTrace_conv.csv, _code.csv)",
    "calibration": "https://github.com/FerranAgulloLopez/GPULLMAdapterOptimization "
                   "(benchmarks/lora/definitive_results)",
}


def _check_kind(kind: str) -> None:
    if kind not in KIND_ENV:
        raise ValueError(f"unknown external data kind {kind!r} (known: {', '.join(KIND_ENV)})")


def checkout_root() -> Path | None:
    """The source checkout this package runs from (the folder with ``pyproject.toml``), or ``None``."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def _candidates(kind: str) -> list[tuple[str, Path]]:
    """(how it was found, folder) in the order of precedence, whether the folder exists or not."""
    out: list[tuple[str, Path]] = []
    if os.environ.get(KIND_ENV[kind]):
        out.append((f"${KIND_ENV[kind]}", Path(os.environ[KIND_ENV[kind]])))
    if os.environ.get(SHARED_ENV):
        out.append((f"${SHARED_ENV}/{kind}", Path(os.environ[SHARED_ENV]) / kind))
    root = checkout_root()
    if root is not None:
        out.append(("../shared next to the checkout", root.parent / "shared" / kind))
    return out


def find_data_dir(kind: str) -> Path | None:
    """The folder of external data ``kind`` (``traces`` or ``calibration``), or ``None`` when not found.

    An environment variable that is set wins even when its folder is missing (then ``None``): a wrong
    setting is not silently replaced by another copy."""
    _check_kind(kind)
    cands = _candidates(kind)
    if not cands:
        return None
    how, path = cands[0]
    if how.startswith("$"):
        return path if path.is_dir() else None
    return next((p for _, p in cands if p.is_dir()), None)


def _missing(kind: str, what: str) -> InputError:
    cands = _candidates(kind)
    tried = f"; tried {cands[0][0]} = {cands[0][1]}" if cands and cands[0][0].startswith("$") else ""
    return InputError(f"{what} is not available{tried}: download it from {ORIGIN[kind]} and set "
                      f"{KIND_ENV[kind]} (or {SHARED_ENV}) to its folder, or give a file path",
                      field=kind, value=what)


def data_dir(kind: str) -> Path:
    """The folder of external data ``kind``; a one-line :class:`InputError` when it is not found."""
    found = find_data_dir(kind)
    if found is None:
        raise _missing(kind, f"the {kind} folder")
    return found


def data_file(kind: str, *names: str) -> Path:
    """The first of ``names`` present in the folder of ``kind`` (e.g. a processed or an original file name);
    a one-line :class:`InputError` naming the first when none is."""
    found = find_data_dir(kind)
    for name in names:
        if found is not None and (found / name).is_file():
            return found / name
    raise _missing(kind, names[0])
