"""Training: twin sweep datasets → one :class:`~surrogate.bundle.Surrogate` per (model, GPU) profile.

Rows with a simulator error or an OOM configuration are left out (OOM is the profile's exact rule, not
learned). A random 20 % of each profile's rows is held out to measure validation metrics, which go into the
sidecars; the shipped model is then refitted on all rows with the same settings.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from surrogate.bundle import Surrogate, oom_from_features, profile_fingerprint
from surrogate.dataset import dataset_hash, iter_rows, load_dataset, user_profiles
from surrogate.features import FEATURE_SCHEMA_VERSION, features
from surrogate.metrics import macro_f1
from surrogate.model import StarvationModel, ThroughputModel
from surrogate.sampling import profile_by_name, sample_instance
from twin.errors import InputError
from twin.metrics import smape_paper
from twin.profile import Profile


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
          holdout: float = 0.2, joint: bool = True, recipe: str = "") -> dict[str, Surrogate]:
    """Train surrogates for the profiles found in the datasets; save them into ``out_dir`` when given.

    ``joint``: one throughput and one starvation model on the rows of all profiles (the profile's memory and
    step constants are features), shared by every profile's surrogate and stored once (``joint.*.cbm``);
    otherwise one pair per profile on its own rows. Validation: a random ``holdout`` share of the rows.
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
        out[name] = Surrogate(tm, sm, name=name, meta=meta)
        if out_dir is not None:
            out[name].save(out_dir, models_prefix=key, write_models=not joint or i == 0)
    return out
