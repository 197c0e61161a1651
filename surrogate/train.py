"""Training: twin sweep datasets → one :class:`~surrogate.bundle.Surrogate` per (model, GPU) profile.

Rows with a simulator error or an OOM configuration are left out (OOM is the profile's exact rule, not
learned). A random 20 % of each profile's rows is held out to measure validation metrics, which go into the
sidecars; the shipped model is then refitted on all rows with the same settings.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from surrogate.bundle import Surrogate, oom_from_features, profile_fingerprint
from surrogate.dataset import dataset_hash, iter_rows, load_dataset, user_profiles
from surrogate.features import FEATURE_SCHEMA_VERSION, features, trained_ranges
from surrogate.metrics import f1_true, macro_f1
from surrogate.model import LATENCY_TARGETS, LatencyModel, StarvationModel, ThroughputModel, stacked_columns
from surrogate.sampling import profile_by_name, sample_instance
from twin.errors import InputError
from twin.metrics import smape_paper
from twin.profile import Profile
from twin.spec import Slo


def design_matrix(frame: pd.DataFrame, book: Mapping[str, Profile] | None = None) -> np.ndarray:
    """Feature rows of dataset rows (the configuration each sample was simulated with; ``book``: the user
    profiles the sweep ran with, see :func:`surrogate.dataset.user_profiles`)."""
    X = np.empty((len(frame), 0))
    rows = []
    for rec in iter_rows(frame):
        inst, kw = sample_instance(rec)
        rows.append(features(inst, kw["max_loras"], kw["max_cpu_loras"], kw["max_lora_rank"],
                             profile=profile_by_name(str(rec["profile"]), book)))
    return np.vstack(rows) if rows else X


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows a model can learn from: the simulator ran and the configuration started (not OOM)."""
    ok = frame["error"].isna() if "error" in frame else pd.Series(True, index=frame.index)
    ok &= ~frame["sim_oom"].fillna(True).astype(bool)
    return frame[ok].reset_index(drop=True)


def fit_pair(X: np.ndarray, thr: np.ndarray, starved: np.ndarray, *, iterations: int = 1000, depth: int = 6,
             learning_rate: float = 0.08, target: str = "log_capped", loss: str = "MAE", seed: int = 0,
             thread_count: int = 1) -> tuple[ThroughputModel, StarvationModel]:
    """Fit the throughput regressor and the starvation classifier on the same rows."""
    kw = {"iterations": iterations, "depth": depth, "learning_rate": learning_rate, "random_seed": seed,
          "thread_count": thread_count}
    tm = ThroughputModel(target=target, loss=loss, **kw).fit(X, thr)  # type: ignore[arg-type]
    sm = StarvationModel(**kw).fit(X, starved)  # type: ignore[arg-type]
    return tm, sm


def train(dataset_dirs: str | Path | list[str | Path], out_dir: str | Path | None = None, *,
          profiles: tuple[str, ...] | None = None, iterations: int = 1000, depth: int = 6,
          learning_rate: float = 0.08, target: str = "log_capped", seed: int = 0, thread_count: int = 1,
          holdout: float = 0.2, joint: bool = True, recipe: str = "",
          keep_latency: bool = True) -> dict[str, Surrogate]:
    """Train surrogates for the profiles found in the datasets; save them into ``out_dir`` when given.

    ``joint``: one throughput and one starvation model on the rows of all profiles (the profile's memory and
    step constants are features), shared by every profile's surrogate and stored once (``joint.*.cbm``);
    otherwise one pair per profile on its own rows. Validation: a random ``holdout`` share of the rows.
    ``keep_latency``: a bundle already in ``out_dir`` keeps its latency models (and their ``latency`` meta)
    when they take the features only; stacked ones (:func:`train_latency` ``inputs="stacked"``) read the
    throughput and starvation models' outputs, so they are dropped and must be retrained.
    """
    dirs = [dataset_dirs] if isinstance(dataset_dirs, (str, Path)) else list(dataset_dirs)
    frame = usable(load_dataset(*dirs))
    book = user_profiles(*dirs)
    names = profiles or tuple(sorted(frame["profile"].unique()))
    frame = frame[frame["profile"].isin(list(names))].reset_index(drop=True)
    d_hash = dataset_hash(*dirs)
    X_all = design_matrix(frame, book)
    thr_all = frame["sim_throughput_tok_s"].to_numpy(dtype=np.float64)
    st_all = frame["sim_starved"].to_numpy(dtype=bool)
    prof_all = frame["profile"].to_numpy()
    test_all = np.random.default_rng(seed).random(len(frame)) < holdout
    params = {"iterations": iterations, "depth": depth, "learning_rate": learning_rate, "target": target,
              "seed": seed, "thread_count": thread_count}
    groups = {"joint": np.ones(len(frame), dtype=bool)} if joint else {n: prof_all == n for n in names}
    fitted: dict[str, tuple[ThroughputModel, StarvationModel]] = {}
    val: dict[str, dict[str, float]] = {}
    for key, sel in groups.items():
        if sel.sum() < 20:
            raise InputError(f"only {int(sel.sum())} usable rows for {key}; sweep more samples",
                             field="profiles", value=key)
        train_rows, test_rows = sel & ~test_all, sel & test_all
        tm, sm = fit_pair(X_all[train_rows], thr_all[train_rows], st_all[train_rows], **params)  # type: ignore
        for name in names:
            t = test_rows & (prof_all == name)
            if t.any():
                val[name] = {"rows": int(t.sum()),
                             "throughput_smape_pct": smape_paper(thr_all[t], tm.predict(X_all[t])),
                             "starvation_macro_f1": macro_f1(st_all[t], sm.predict(X_all[t]))}
        fitted[key] = fit_pair(X_all[sel], thr_all[sel], st_all[sel], **params)  # type: ignore[arg-type]
    out: dict[str, Surrogate] = {}
    for i, name in enumerate(names):
        key = "joint" if joint else name
        tm, sm = fitted[key]
        sel = groups[key]
        mine = prof_all == name
        meta = {
            "feature_schema_version": FEATURE_SCHEMA_VERSION, "dataset_hash": d_hash,
            "datasets": [str(Path(d).name) for d in dirs], "rows": int(sel.sum()),
            "profile_rows": int(mine.sum()),
            "joint": joint, "starved_share": float(st_all[mine].mean()) if mine.any() else float("nan"),
            "validation": val.get(name, {}), "params": params, "recipe": recipe,
            "oom_rule_mismatches": int(oom_from_features(X_all[mine]).sum()),  # twin ran, rule says OOM
            "trained_ranges": trained_ranges(X_all[sel]),
            **profile_fingerprint(name, book.get(name)),
            "trained_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if joint:
            per_profile = ("validation", "profile_rows", "starved_share", "profile_version", "profile_sha256")
            tm.meta_ = sm.meta_ = {k: v for k, v in meta.items() if k not in per_profile}
            tm.meta_["profiles"] = {n: profile_fingerprint(n, book.get(n)) for n in names}
            tm.meta_["validation"] = val
        else:
            tm.meta_ = sm.meta_ = meta
        latency = _kept_latency(out_dir, name) if keep_latency and out_dir is not None else None
        if latency is not None:
            meta["latency"] = latency.meta["latency"]
        out[name] = Surrogate(tm, sm, name=name, meta=meta, latency=latency.latency if latency else None)
        if out_dir is not None:
            out[name].save(out_dir, models_prefix=key, write_models=not joint or i == 0)
    return out


def _kept_latency(out_dir: str | Path, name: str) -> Surrogate | None:
    """The bundle ``name`` already in ``out_dir`` when it has latency models that do not read the
    throughput and starvation models (None otherwise)."""
    if not (Path(out_dir) / f"{name}.surrogate.json").exists():
        return None
    try:
        old = Surrogate.load(out_dir, name)
    except InputError:
        return None
    if not old.latency or any(m.stacked for m in old.latency.values()) or "latency" not in old.meta:
        return None
    return old


def slo_verdict(served_ok: np.ndarray, latency: dict[str, np.ndarray], slo: Slo | None = None) -> np.ndarray:
    """Meets ``slo`` (default: the default SLO) per row, from a served-fraction verdict and latency values
    (seconds, by twin metric name; NaN = no request = not a violation)."""
    slo = slo or Slo()
    ok = np.asarray(served_ok, dtype=bool).copy()
    for _, metric, bound in slo.limits():
        v = np.asarray(latency[metric], dtype=float)
        ok &= ~(np.isfinite(v) & (v > bound))
    return ok


def train_latency(dataset_dirs: str | Path | list[str | Path], models_dir: str | Path,
                  out_dir: str | Path | None = None, *, targets: tuple[str, ...] = LATENCY_TARGETS,
                  iterations: int = 800, depth: int = 6, learning_rate: float = 0.08, seed: int = 0,
                  thread_count: int = 1, holdout: float = 0.2, recipe: str = "", inputs: str = "features",
                  ttft_base: str = "none") -> dict[str, Surrogate]:
    """Add joint latency regressors (one per target, log space) to the bundles in ``models_dir``.

    The bundles' throughput and starvation models are kept as they are; the latency models are fitted on
    the rows of all profiles in the sweeps (one joint model per target, like the throughput model), with a
    random ``holdout`` share measuring validation metrics per profile — SMAPE (papers' form) per target, and
    the F1 of "meets the default SLO" (the bundle's starvation verdict and the latency predictions against
    the twin's :meth:`~twin.metrics.SimResult.meets`). Saved into ``out_dir`` (default ``models_dir``) as
    ``joint.latency-<target>.cbm``, named by each bundle's ``latency_files``.

    ``inputs``: ``features`` or ``stacked`` (the bundles' throughput and starvation predictions of each row
    as two more inputs, :func:`surrogate.model.stacked_columns`); ``ttft_base``: ``none`` or ``queue`` (the
    TTFT regressors learn the log ratio to :func:`surrogate.model.queue_prior_s`). See
    :class:`~surrogate.model.LatencyModel`.
    """
    dirs = [dataset_dirs] if isinstance(dataset_dirs, (str, Path)) else list(dataset_dirs)
    frame = usable(load_dataset(*dirs))
    missing = [t for t in targets if f"sim_{t}" not in frame]
    if missing:
        raise InputError(f"the sweep has no twin latency columns {missing}: re-run it with this version",
                         source=str(dirs[0]), field="columns", value=missing)
    names = tuple(sorted(frame["profile"].unique()))
    X = design_matrix(frame)
    prof = frame["profile"].to_numpy()
    test = np.random.default_rng(seed).random(len(frame)) < holdout
    kw = {"iterations": iterations, "depth": depth, "learning_rate": learning_rate, "random_seed": seed,
          "thread_count": thread_count}
    y = {t: frame[f"sim_{t}"].to_numpy(dtype=np.float64) for t in targets}
    bundles = {n: Surrogate.load(models_dir, n) for n in names}
    stack = np.zeros((len(frame), 2))  # read by stacked models only
    if inputs == "stacked":
        for name in names:  # what the bundle's throughput and starvation models say of each row
            sel = prof == name
            said = bundles[name].predict_features(X[sel])
            stack[sel] = stacked_columns(X[sel], said.throughput_tok_s, said.starved_probability)

    def fit(t: str, rows: np.ndarray) -> LatencyModel:
        base = ttft_base if t.startswith("ttft") else "none"
        model = LatencyModel(target=t, inputs=inputs, base=base, **kw)  # type: ignore[arg-type]
        return model.fit(X[rows], y[t][rows], stack[rows] if model.stacked else None)

    held = {t: fit(t, ~test) for t in targets}
    models = {t: fit(t, np.ones(len(frame), dtype=bool)) for t in targets}
    served_true = ~frame["sim_starved"].to_numpy(dtype=bool)
    truth = slo_verdict(served_true, y) if all(m in y for _, m, _ in Slo().limits()) else None
    out_path = Path(out_dir) if out_dir is not None else Path(models_dir)
    out: dict[str, Surrogate] = {}
    for i, name in enumerate(names):
        t_rows = test & (prof == name)
        val: dict[str, Any] = {"rows": int(t_rows.sum())}
        pred = {t: held[t].predict(X[t_rows], stack[t_rows] if held[t].stacked else None) for t in targets}
        for t in targets:
            ok = np.isfinite(y[t][t_rows])
            val[f"{t}_smape_pct"] = smape_paper(y[t][t_rows][ok], pred[t][ok])
        if truth is not None and t_rows.any():
            served_pred = ~bundles[name].starvation.predict(X[t_rows])
            val["default_slo_f1"] = f1_true(truth[t_rows], slo_verdict(served_pred, pred))
            val["default_slo_share"] = float(truth[t_rows].mean())
        b = bundles[name]
        meta = {**b.meta, "latency": {"datasets": [str(Path(d).name) for d in dirs],
                                      "dataset_hash": dataset_hash(*dirs), "rows": int(len(frame)),
                                      "params": {**kw, "loss": "MAE", "target_space": "log seconds",
                                                 "inputs": inputs, "ttft_base": ttft_base},
                                      "stacked_on": {"throughput_dataset_hash": b.throughput.meta_.get(
                                          "dataset_hash")} if inputs == "stacked" else None,
                                      "validation": val, "recipe": recipe,
                                      "trained_ranges": trained_ranges(X),
                                      "trained_utc": _dt.datetime.now(_dt.UTC).strftime(
                                          "%Y-%m-%dT%H:%M:%SZ")}}
        files = {"throughput_file": "joint.throughput.cbm", "starvation_file": "joint.starvation.cbm"}
        bundle = Surrogate(b.throughput, b.starvation, name=name, meta=meta, latency=models)
        if i == 0:  # the latency sidecars' meta, wherever they are written
            for m in models.values():
                m.meta_ = {"profiles": list(names), **meta["latency"]}
        if out_path != Path(models_dir):
            bundle.save(out_path, models_prefix="joint", write_models=i == 0)
        else:
            if i == 0:
                for t, m in models.items():
                    m.save(out_path / f"joint.latency-{t}.cbm")
            bundle.save_metadata(out_path, files, "joint")
        out[name] = bundle
    return out
