"""Which profiles exist and loading them by name: the calibrated ones shipped in ``twin/profiles/`` and the
uncalibrated ones :mod:`twin.hardware` derives from a model's architecture and a GPU's datasheet.

A user's own profile file needs none of this: :meth:`twin.profile.Profile.load` reads it.
"""

from __future__ import annotations

import json
import warnings
from functools import cache
from importlib import resources
from typing import Any

from twin.errors import InputError
from twin.hardware import (
    REFERENCE_GPU,
    REFERENCE_MODEL,
    catalogue_gpus,
    catalogue_models,
    derived_profile,
    in_catalogue,
)
from twin.profile import PROFILE_DIR, Profile


def _shipped_files() -> dict[tuple[str, str], Any]:
    out = {}
    for entry in resources.files("twin").joinpath(PROFILE_DIR).iterdir():
        name = entry.name
        if name.endswith(".json") and "@" in name:
            model, gpu = name[: -len(".json")].split("@", 1)
            out[(model, gpu)] = entry
    return out


@cache
def shipped_profiles() -> tuple[tuple[str, str], ...]:
    """The (model, gpu) pairs with a profile shipped inside the package."""
    return tuple(sorted(_shipped_files()))


@cache
def known_models() -> tuple[str, ...]:
    """Models with a shipped profile or an architecture in :mod:`twin.hardware` (uncalibrated)."""
    return tuple(sorted({m for m, _ in shipped_profiles()} | set(catalogue_models())))


@cache
def known_gpus() -> tuple[str, ...]:
    """GPUs with a shipped profile or a datasheet in :mod:`twin.hardware` (uncalibrated)."""
    return tuple(sorted({g for _, g in shipped_profiles()} | set(catalogue_gpus())))


def is_calibrated(model: str, gpu: str) -> bool:
    """True when a fitted profile ships for (model, gpu); False for a profile derived from datasheets."""
    return (model, gpu) in shipped_profiles() and load_profile(model, gpu).calibrated


def check_model_gpu(model: Any, gpu: Any) -> None:
    """Raise :class:`InputError` unless a profile exists (shipped, or derivable by :mod:`twin.hardware`).

    The message lists every accepted name (shipped and uncalibrated); ``placer twin profiles`` says which is
    which.
    """
    if model not in known_models():
        names = ", ".join(known_models())
        raise InputError(f"unknown model profile (got {model!r}; accepted: {names})", field="model",
                         value=model)
    if gpu not in known_gpus():
        names = ", ".join(known_gpus())
        raise InputError(f"unknown GPU profile (got {gpu!r}; accepted: {names})", field="gpu", value=gpu)
    if (model, gpu) not in shipped_profiles() and not in_catalogue(model, gpu):
        raise InputError(f"no profile for model {model!r} on GPU {gpu!r}", field="gpu", value=gpu)


@cache
def load_shipped_profile(model: str, gpu: str) -> Profile:
    """The profile file shipped in ``twin/profiles/`` for (model, gpu)."""
    files = _shipped_files()
    if (model, gpu) not in files:
        raise InputError(f"no shipped profile for model {model!r} on GPU {gpu!r}", field="gpu", value=gpu)
    entry = files[(model, gpu)]
    return Profile.from_dict(json.loads(entry.read_text()), source=f"twin/profiles/{entry.name}")


@cache
def load_profile(model: str, gpu: str) -> Profile:
    """The profile for (model, gpu): the shipped one, else an uncalibrated one derived by :mod:`twin.hardware`
    (``calibrated`` False)."""
    check_model_gpu(model, gpu)
    if (model, gpu) in shipped_profiles():
        return load_shipped_profile(model, gpu)
    warnings.warn(f"{model}@{gpu}: UNCALIBRATED profile derived from architecture and datasheet; its "
                  "predictions are unvalidated (fit it with `placer twin calibrate`)",
                  UncalibratedProfileWarning, stacklevel=2)
    return derived_profile(model, gpu, reference=_reference(model))


class UncalibratedProfileWarning(UserWarning):
    """Emitted (once per process and pair) when a profile is derived from datasheets rather than fitted."""


def _reference(model: str) -> Profile:
    if (model, REFERENCE_GPU) in shipped_profiles():
        return load_shipped_profile(model, REFERENCE_GPU)
    return load_shipped_profile(REFERENCE_MODEL, REFERENCE_GPU)


def list_profiles() -> list[dict[str, object]]:
    """Every profile the twin can load: shipped (calibrated or not) and derivable (uncalibrated)."""
    out: list[dict[str, object]] = []
    pairs = list(shipped_profiles()) + [(m, g) for m in catalogue_models() for g in catalogue_gpus()
                                        if (m, g) not in shipped_profiles()]
    for model, gpu in pairs:
        with warnings.catch_warnings():  # the listing shows the flag itself
            warnings.simplefilter("ignore")
            p = load_profile(model, gpu)
        out.append({"model": model, "gpu": gpu, "shipped": (model, gpu) in shipped_profiles(),
                    "calibrated": p.calibrated, "version": p.version, "max_model_len": p.max_model_len,
                    "kv_tokens_8x16": round(p.memory.kv_base_tokens - p.memory.kv_per_slot_rank * 128
                                            - p.memory.kv_per_slot * 8),
                    "base_ms": p.step.base_ms, "notes": p.notes})
    return out
