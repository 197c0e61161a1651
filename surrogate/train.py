"""Training: twin sweep datasets → one :class:`~surrogate.bundle.Surrogate` per (model, GPU) profile.

Rows with a simulator error or an OOM configuration are left out (OOM is the profile's exact rule, not
learned). A random 20 % of each profile's rows is held out to measure validation metrics, which go into the
sidecars; the shipped model is then refitted on all rows with the same settings.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from surrogate.bundle import Surrogate, oom_from_features
from surrogate.dataset import dataset_hash, iter_rows, load_dataset
from surrogate.evaluate import macro_f1, smape
from surrogate.features import FEATURE_SCHEMA_VERSION, features
from surrogate.model import StarvationModel, ThroughputModel
from surrogate.sampling import sample_instance
from twin.errors import InputError
from twin.profile import load_profile


def design_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Feature rows of dataset rows (the configuration each sample was simulated with)."""
    X = np.empty((len(frame), 0))
    rows = []
    for rec in iter_rows(frame):
        inst, kw = sample_instance(rec)
        rows.append(features(inst, kw["max_loras"], kw["max_cpu_loras"], kw["max_lora_rank"]))
    return np.vstack(rows) if rows else X


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows a model can learn from: the simulator ran and the configuration started (not OOM)."""
    ok = frame["error"].isna() if "error" in frame else pd.Series(True, index=frame.index)
    ok &= ~frame["sim_oom"].fillna(True).astype(bool)
    return frame[ok].reset_index(drop=True)


def profile_fingerprint(name: str) -> dict[str, str]:
    """Version and content hash of a profile (recorded so stale models can be detected)."""
    model, gpu = name.split("@", 1)
    prof = load_profile(model, gpu)
    digest = hashlib.sha256(json.dumps(prof.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return {"profile_version": prof.version, "profile_sha256": digest}


def fit_pair(X: np.ndarray, thr: np.ndarray, starved: np.ndarray, *, iterations: int = 1000, depth: int = 6,
             learning_rate: float = 0.08, target: str = "log_fraction", seed: int = 0, thread_count: int = 1
             ) -> tuple[ThroughputModel, StarvationModel]:
    """Fit the throughput regressor and the starvation classifier on the same rows."""
    kw = {"iterations": iterations, "depth": depth, "learning_rate": learning_rate, "random_seed": seed,
          "thread_count": thread_count}
    tm = ThroughputModel(target=target, **kw).fit(X, thr)  # type: ignore[arg-type]
    sm = StarvationModel(**kw).fit(X, starved)  # type: ignore[arg-type]
    return tm, sm


def train(dataset_dirs: str | Path | list[str | Path], out_dir: str | Path | None = None, *,
          profiles: tuple[str, ...] | None = None, iterations: int = 1000, depth: int = 6,
          learning_rate: float = 0.08, target: str = "log_fraction", seed: int = 0, thread_count: int = 1,
          holdout: float = 0.2, recipe: str = "") -> dict[str, Surrogate]:
    """Train one surrogate per profile found in the datasets; save them into ``out_dir`` when given."""
    dirs = [dataset_dirs] if isinstance(dataset_dirs, (str, Path)) else list(dataset_dirs)
    frame = usable(load_dataset(*dirs))
    names = profiles or tuple(sorted(frame["profile"].unique()))
    d_hash = dataset_hash(*dirs)
    X_all = design_matrix(frame)
    out: dict[str, Surrogate] = {}
    for name in names:
        sel = np.asarray((frame["profile"] == name).to_numpy(), dtype=bool)
        if sel.sum() < 20:
            raise InputError(f"only {int(sel.sum())} usable rows for {name}; sweep more samples",
                             field="profiles", value=name)
        X = X_all[sel]
        thr = frame.loc[sel, "sim_throughput_tok_s"].to_numpy(dtype=np.float64)
        starved = frame.loc[sel, "sim_starved"].to_numpy(dtype=bool)
        rng = np.random.default_rng(seed)
        test = rng.random(X.shape[0]) < holdout
        params = {"iterations": iterations, "depth": depth, "learning_rate": learning_rate,
                  "target": target, "seed": seed, "thread_count": thread_count}
        tm, sm = fit_pair(X[~test], thr[~test], starved[~test], **params)  # type: ignore[arg-type]
        val = {"rows": int(test.sum()), "throughput_smape_pct": smape(thr[test], tm.predict(X[test])),
               "starvation_macro_f1": macro_f1(starved[test], sm.predict(X[test]))}
        tm, sm = fit_pair(X, thr, starved, **params)  # type: ignore[arg-type]
        oom_mismatch = int(oom_from_features(X).sum())  # rows the twin ran but the exact rule calls OOM
        meta = {
            "feature_schema_version": FEATURE_SCHEMA_VERSION, "dataset_hash": d_hash,
            "datasets": [str(Path(d).name) for d in dirs], "rows": int(X.shape[0]),
            "starved_share": float(starved.mean()), "validation": val, "oom_rule_mismatches": oom_mismatch,
            "params": params, "recipe": recipe, **profile_fingerprint(name),
            "trained_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        tm.meta_ = sm.meta_ = meta
        out[name] = Surrogate(tm, sm, name=name, meta=meta)
        if out_dir is not None:
            out[name].save(out_dir)
    return out
