"""The surrogate of one (model, GPU) profile: throughput regressor + starvation classifier + exact OOM rule.

:class:`Surrogate` answers what placement asks — "these adapters on one GPU with this configuration: what
throughput, starved or not, memory error or not?" — for one group (:meth:`Surrogate.predict`) or many groups
of one instance in one vectorised call (:meth:`Surrogate.predict_groups`). OOM is never learned: it is the
profile's memory rule, evaluated exactly. :func:`load_default` returns the models shipped in
``surrogate/models/``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.features import Packed, feature_index, features, features_for_groups, packed_inputs
from surrogate.model import LATENCY_TARGETS, LatencyModel, StarvationModel, ThroughputModel, stacked_columns
from twin.catalogue import check_model_gpu, load_profile
from twin.errors import InputError
from twin.files import atomic_write_text
from twin.profile import Profile
from twin.spec import Instance

_KV = feature_index("kv_tokens")
_MML = feature_index("max_model_len")


@dataclass(frozen=True)
class Prediction:
    """The surrogate's answer for one GPU. An OOM configuration has throughput 0 and is not starved."""

    throughput_tok_s: float
    starved: bool
    starved_probability: float
    oom: bool
    offered_tok_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"throughput_tok_s": self.throughput_tok_s, "starved": self.starved,
                "starved_probability": self.starved_probability, "oom": self.oom,
                "offered_tok_s": self.offered_tok_s}


@dataclass(frozen=True, eq=False)
class BatchPrediction:
    """Vectorised :class:`Prediction`: one entry per group (read-only numpy arrays)."""

    throughput_tok_s: np.ndarray
    starved: np.ndarray
    starved_probability: np.ndarray
    oom: np.ndarray
    offered_tok_s: np.ndarray
    #: Predicted latency percentiles (seconds) by target name (``ttft_p99_s``, ...), for those asked.
    latency: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.throughput_tok_s.shape[0])

    def __getitem__(self, i: int) -> Prediction:
        return Prediction(float(self.throughput_tok_s[i]), bool(self.starved[i]),
                          float(self.starved_probability[i]), bool(self.oom[i]), float(self.offered_tok_s[i]))

    @property
    def feasible(self) -> np.ndarray:
        """Neither starved nor OOM."""
        return np.asarray(~self.starved & ~self.oom)


def oom_from_features(X: np.ndarray) -> np.ndarray:
    """The profile's OOM rule on feature rows: KV cache left below ``max_model_len`` (or measured to fail)."""
    return np.asarray(~(X[:, _KV] >= X[:, _MML]))


class Surrogate:
    """Throughput + starvation models of one profile (``name`` = ``model@gpu``) with metadata."""

    def __init__(self, throughput: ThroughputModel, starvation: StarvationModel, *, name: str = "",
                 meta: dict[str, Any] | None = None, profile: Profile | None = None,
                 latency: dict[str, LatencyModel] | None = None) -> None:
        self.throughput = throughput
        self.starvation = starvation
        #: Latency regressors by target (:data:`surrogate.model.LATENCY_TARGETS`); empty for bundles trained
        #: before latency models existed (they load, and cannot judge a latency SLO).
        self.latency = dict(latency or {})
        self.name = name
        self.meta = dict(meta or {})
        #: The twin profile the features are computed with (None: the shipped profile of the instance's
        #: model and GPU). A bundle trained on a user's profile must be given that profile.
        self.profile = profile
        self._packed: dict[tuple[Any, ...], Packed] = {}  # feature inputs per (model, GPU, server, workload)

    def with_profile(self, profile: Profile) -> Surrogate:
        """The same models computing features with ``profile`` (which must be for this bundle's model/GPU)."""
        if self.name and profile.name != self.name:
            raise InputError(f"profile {profile.name} does not match surrogate {self.name}", field="profile",
                             value=profile.name)
        return _checked(Surrogate(self.throughput, self.starvation, name=self.name, meta=self.meta,
                                  profile=profile, latency=self.latency))

    def latency_targets(self) -> tuple[str, ...]:
        """The latency percentiles this bundle predicts (() for a bundle without latency models)."""
        return tuple(t for t in LATENCY_TARGETS if t in self.latency)

    def trained_range(self, feature: str, kind: str | None = None) -> tuple[float, float] | None:
        """The range of ``feature`` (e.g. ``max_num_seqs``) the models were trained on, from their sidecars'
        ``meta.trained_ranges``: of one ``kind`` (``throughput``, ``starvation`` or ``latency``: all the
        latency models), or (None) the intersection over all the bundle's models — where every prediction
        is inside its training data. None when no model (of that kind) records it (e.g. older models) or
        the recorded ranges do not overlap."""
        kinds: dict[str, list[Any]] = {"throughput": [self.throughput], "starvation": [self.starvation],
                                       "latency": list(self.latency.values())}
        if kind is not None and kind not in kinds:
            raise InputError(f"must be one of {sorted(kinds)}", field="kind", value=kind)
        models = kinds[kind] if kind is not None else [m for ms in kinds.values() for m in ms]
        seen = [m.meta_.get("trained_ranges", {}).get(feature) for m in models]
        known = [r for r in seen if r is not None]
        if not known:
            return None
        lo, hi = max(float(r[0]) for r in known), min(float(r[1]) for r in known)
        return (lo, hi) if lo <= hi else None

    def _inputs(self, instance: Instance) -> Packed:
        key = (instance.model, instance.gpu, instance.server, instance.workload)
        hit = self._packed.get(key)
        if hit is None:
            if len(self._packed) >= 64:
                self._packed.pop(next(iter(self._packed)))
            prof = self.profile if self.profile is not None else load_profile(instance.model, instance.gpu)
            hit = self._packed[key] = packed_inputs(prof, instance.server, instance.workload)
        return hit

    def predict_features(self, X: np.ndarray, latency: Sequence[str] = ()) -> BatchPrediction:
        """Predictions for feature rows (see :mod:`surrogate.features`); ``latency``: the latency targets to
        predict too (each must be in :meth:`latency_targets`; NaN for OOM rows)."""
        X = np.asarray(X, dtype=np.float64)
        oom = oom_from_features(X)
        thr = self.throughput.predict(X)
        p = self.starvation.predict_proba(X)
        thr = np.where(oom, 0.0, thr)
        p = np.where(oom, 0.0, p)
        starved = (p >= self.starvation.threshold) & ~oom
        offered = X[:, feature_index("offered_tok_s")].copy()
        lat: dict[str, np.ndarray] = {}
        stack = None
        for target in latency:
            model = self.latency.get(target)
            if model is None:
                raise InputError(f"surrogate {self.name or '(unnamed)'} has no latency model for {target} "
                                 f"(it has: {', '.join(self.latency_targets()) or 'none'})", field="latency",
                                 value=target)
            if model.stacked and stack is None:  # the throughput and starvation verdicts as inputs
                stack = stacked_columns(X, thr, p)
            lat[target] = np.where(oom, np.nan, model.predict(X, stack if model.stacked else None))
        for a in (thr, p, starved, oom, offered, *lat.values()):
            a.setflags(write=False)
        return BatchPrediction(thr, starved, p, oom, offered, lat)

    def predict(self, instance: Instance, max_loras: int, max_cpu_loras: int | None = None,
                max_lora_rank: int | None = None) -> Prediction:
        """All adapters of ``instance`` on one GPU with this configuration."""
        self._check(instance)
        X = features(instance, max_loras, max_cpu_loras, max_lora_rank, packed=self._inputs(instance))
        X = X[None, :]
        return self.predict_features(X)[0]

    def predict_groups(self, instance: Instance, groups: Sequence[Sequence[int] | np.ndarray],
                       max_loras: int | Sequence[int] | np.ndarray,
                       max_cpu_loras: int | Sequence[int] | np.ndarray | None = None,
                       max_lora_rank: int | Sequence[int] | np.ndarray | None = None,
                       latency: Sequence[str] = ()) -> BatchPrediction:
        """Many GPUs at once: ``groups`` of adapter positions, per-group or shared configuration values;
        ``latency``: latency targets to predict too."""
        self._check(instance)
        return self.predict_features(features_for_groups(instance, groups, max_loras, max_cpu_loras,
                                                         max_lora_rank, packed=self._inputs(instance)),
                                     latency)

    def _check(self, instance: Instance) -> None:
        if self.name and f"{instance.model}@{instance.gpu}" != self.name:
            raise InputError(f"surrogate {self.name} cannot predict for {instance.model}@{instance.gpu}",
                             field="model", value=instance.model)

    # --- files ------------------------------------------------------------------------------------------
    def save(self, directory: str | Path, *, models_prefix: str | None = None, write_models: bool = True
             ) -> None:
        """Write ``<prefix>.throughput.cbm``, ``<prefix>.starvation.cbm`` (+ ``.json`` sidecars; prefix = the
        name unless ``models_prefix`` is given, e.g. one model shared by several profiles) and
        ``<name>.surrogate.json``, which names the model files, into ``directory``."""
        d = Path(directory)
        prefix = models_prefix or self.name
        files: dict[str, Any] = {"throughput_file": f"{prefix}.throughput.cbm",
                                 "starvation_file": f"{prefix}.starvation.cbm"}
        if self.latency:
            files["latency_files"] = {t: f"{prefix}.latency-{t}.cbm" for t in self.latency_targets()}
        if write_models:
            self.throughput.save(d / files["throughput_file"])
            self.starvation.save(d / files["starvation_file"])
            for t, f in files.get("latency_files", {}).items():
                self.latency[t].save(d / f)
        doc = {**self.meta, "name": self.name, **files}
        atomic_write_text(d / f"{self.name}.surrogate.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")

    def save_metadata(self, directory: str | Path, files: dict[str, Any], prefix: str) -> None:
        """Rewrite only ``<name>.surrogate.json`` (model ``files`` as given, latency files named by
        ``prefix``), e.g. after adding latency models beside existing throughput and starvation models."""
        doc = {**self.meta, "name": self.name, **files}
        if self.latency:
            doc["latency_files"] = {t: f"{prefix}.latency-{t}.cbm" for t in self.latency_targets()}
        atomic_write_text(Path(directory) / f"{self.name}.surrogate.json",
                          json.dumps(doc, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | Path, name: str) -> Surrogate:
        """Read what :meth:`save` wrote."""
        d = Path(directory)
        meta_path = d / f"{name}.surrogate.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read surrogate metadata ({exc})", source=str(meta_path)) from None
        meta.pop("name", None)
        thr = meta.pop("throughput_file", f"{name}.throughput.cbm")
        st = meta.pop("starvation_file", f"{name}.starvation.cbm")
        lat_files = meta.pop("latency_files", {}) or {}  # absent in bundles made before latency models
        latency = {t: _load_cached(LatencyModel, d / f) for t, f in sorted(lat_files.items())}
        return cls(_load_cached(ThroughputModel, d / thr), _load_cached(StarvationModel, d / st), name=name,
                   meta=meta, latency=latency)


_MODEL_CACHE: dict[tuple[type, str, float], Any] = {}


def _load_cached(kind: type, path: Path) -> Any:
    """Estimators shared by several profiles are read once (keyed by path and modification time)."""
    try:
        key = (kind, str(path.resolve()), path.stat().st_mtime)
    except OSError:
        return kind.load(path)  # type: ignore[attr-defined]  # raises the InputError
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = kind.load(path)  # type: ignore[attr-defined]
    return _MODEL_CACHE[key]


def default_models_dir() -> Path:
    """Where the shipped default models live (package data ``surrogate/models/``)."""
    return Path(str(resources.files("surrogate").joinpath("models")))


class StaleSurrogateWarning(UserWarning):
    """The surrogate was trained on twin runs of another version of its profile than the current one."""


def profile_mismatch(surrogate: Surrogate) -> str | None:
    """Why ``surrogate`` no longer matches its twin profile (None when it matches or records no profile).

    Models record the version and content hash of the profile their training runs used; a recalibrated
    profile changes the twin, so the models must be retrained (``python -m surrogate.build_default``).
    """
    trained = surrogate.meta.get("profile_sha256")
    if not trained or "@" not in surrogate.name:
        return None
    current = profile_fingerprint(surrogate.name, surrogate.profile)
    if current["profile_sha256"] == trained:
        return None
    def version(v: object, digest: str) -> str:
        text = str(v)
        return f"v{text} ({digest})" if text[:1].isdigit() else f"{text} ({digest})"

    was = version(surrogate.meta.get("profile_version"), str(trained))
    now = version(current["profile_version"], current["profile_sha256"])
    fix = ("sweep and train on it: placer surrogate sweep --profile FILE ..., placer surrogate train ..."
           if surrogate.profile is not None else "retrain it (python -m surrogate.build_default)")
    return (f"surrogate {surrogate.name} was trained on twin profile {was}; the current profile is {now}: "
            f"{fix}")


def _checked(surrogate: Surrogate) -> Surrogate:
    reason = profile_mismatch(surrogate)
    if reason:
        import warnings

        warnings.warn(reason, StaleSurrogateWarning, stacklevel=3)
    return surrogate


@cache
def load_default(model: str, gpu: str) -> Surrogate:
    """The shipped surrogate for (model, gpu); :class:`InputError` if none ships. Warns
    (:class:`StaleSurrogateWarning`) when it was trained on another version of the profile."""
    check_model_gpu(model, gpu)
    name = f"{model}@{gpu}"
    if not (default_models_dir() / f"{name}.surrogate.json").exists():
        suffix = ".surrogate.json"
        shipped = sorted(p.name[: -len(suffix)] for p in default_models_dir().glob(f"*{suffix}"))
        raise InputError(f"no shipped surrogate for model {model!r} on GPU {gpu!r} (surrogates ship for "
                         f"{', '.join(shipped) or 'nothing'}; train one with `placer surrogate sweep` and "
                         "`placer surrogate train`)", field="gpu", value=gpu)
    return _checked(Surrogate.load(default_models_dir(), name))


def load_surrogate(model: str, gpu: str, models_dir: str | Path | None = None,
                   profile: Profile | None = None) -> Surrogate:
    """The surrogate for (model, gpu) from ``models_dir``, or the shipped one when None, computing its
    features with ``profile`` (None: the shipped profile). Warns when the models were trained on another
    version of that profile."""
    if models_dir is None:
        bundle = load_default(model, gpu)
    else:
        check_model_gpu(model, gpu)
        bundle = Surrogate.load(models_dir, f"{model}@{gpu}")
        if profile is None:
            bundle = _checked(bundle)
    return bundle if profile is None else bundle.with_profile(profile)


def profile_fingerprint(name: str, profile: Profile | None = None) -> dict[str, str]:
    """Version and content hash of a profile (recorded so stale models can be detected): ``profile``, or
    the shipped/derived one named ``name`` (``model@gpu``). The hash covers what decides the twin's runs
    (:meth:`twin.profile.Profile.simulation_dict`), not the version string or notes: a profile that only adds
    fitted scrape costs, with no scraper, keeps its surrogates."""
    model, gpu = name.split("@", 1)
    prof = profile if profile is not None else load_profile(model, gpu)
    digest = hashlib.sha256(json.dumps(prof.simulation_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return {"profile_version": prof.version, "profile_sha256": digest}
