"""Surrogate accuracy and speed: against a fresh twin sweep and against the real ``dt_real`` vLLM runs.

Metric definitions (mission.md): SMAPE in the papers' form ``100 · mean(|a − b| / (|a| + |b|))`` (0 when both
are 0) and in the usual symmetric form (twice that); starvation macro-F1 (mean of the F1 of both classes);
``predict_us_per_row`` = features + both models for a batch of groups, per row; ``predict_ms_single`` = one
:meth:`Surrogate.predict` call (features + both models + OOM rule).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.metrics import macro_f1
from surrogate.model import LATENCY_TARGETS
from twin.errors import InputError
from twin.metrics import smape_paper
from twin.spec import Slo

REAL_RUNS_FILE = "real_runs.csv"  # in the calibration folder that twin.external finds (not shipped)


def default_real_runs() -> Path | None:
    """The real runs file of the calibration folder (:func:`twin.external.find_data_dir`), or ``None``."""
    from twin.external import find_data_dir

    folder = find_data_dir("calibration")
    return folder / REAL_RUNS_FILE if folder is not None and (folder / REAL_RUNS_FILE).is_file() else None


def _real_runs_path(path: str | Path | None) -> Path:
    """``path``, or the default real runs file (a one-line InputError saying where to get it when absent)."""
    from twin.external import data_file

    if path is None:
        return data_file("calibration", REAL_RUNS_FILE)
    if not Path(path).is_file():
        raise InputError("is not a readable file", source=str(path), field="real_runs", value=str(path))
    return Path(path)


def score(thr_true: np.ndarray, thr_pred: np.ndarray, starved_true: np.ndarray, starved_pred: np.ndarray
          ) -> dict[str, float]:
    """The accuracy metrics of one set of rows."""
    s = smape_paper(thr_true, thr_pred)
    return {"rows": int(np.asarray(thr_true).size), "throughput_smape_pct": s,
            "throughput_smape_std_pct": 2 * s,
            "starvation_macro_f1": macro_f1(starved_true, starved_pred),
            "starved_share": float(np.mean(np.asarray(starved_true, dtype=bool))) if len(thr_true) else 0.0}


def predictions_frame(surrogates: dict[str, Any], frame: Any) -> Any:
    """One row per usable sweep row: the twin's throughput/starvation next to the surrogate's."""
    import pandas as pd

    from surrogate.train import design_matrix, usable

    frame = usable(frame)
    frame = frame[frame["profile"].isin(list(surrogates))].reset_index(drop=True)
    if not len(frame):
        raise InputError("no usable rows for these surrogates", field="profiles", value=list(surrogates))
    X = design_matrix(frame)
    p_thr = np.zeros(len(frame))
    p_prob = np.zeros(len(frame))
    p_st = np.zeros(len(frame), dtype=bool)
    lat_targets = [t for t in LATENCY_TARGETS if f"sim_{t}" in frame
                   and all(t in getattr(sur, "latency_targets", lambda: ())() for sur in surrogates.values())]
    p_lat = {t: np.full(len(frame), np.nan) for t in lat_targets}
    for name, sur in surrogates.items():
        sel = (frame["profile"] == name).to_numpy()
        if sel.any():
            pred = sur.predict_features(X[sel], lat_targets) if lat_targets else sur.predict_features(X[sel])
            p_thr[sel], p_prob[sel], p_st[sel] = pred.throughput_tok_s, pred.starved_probability, pred.starved
            for t in lat_targets:
                p_lat[t][sel] = pred.latency[t]
    cols = ["sample", "profile", "n_adapters", "max_loras", "max_cpu_loras", "max_lora_rank", "arrival",
            "lengths", "target_load", "max_num_seqs", "sim_expected_offered_tok_s", "run_s"]
    out = frame[[c for c in cols if c in frame]].copy()
    out["throughput_tok_s"] = frame["sim_throughput_tok_s"].to_numpy(dtype=np.float64)
    out["pred_throughput_tok_s"] = p_thr
    out["starved"] = frame["sim_starved"].to_numpy(dtype=bool)
    out["pred_starved"] = p_st
    out["pred_starved_probability"] = p_prob
    for t in lat_targets:
        out[t] = frame[f"sim_{t}"].to_numpy(dtype=np.float64)
        out[f"pred_{t}"] = p_lat[t]
    return pd.DataFrame(out)


def latency_scores(rows: Any) -> dict[str, float]:
    """SMAPE (papers' form) of each latency percentile present in a :func:`predictions_frame`, the TTFT p99
    SMAPE on rows whose twin TTFT p99 is ≤ 10 s (where SLOs are set), and the F1 of "meets the default
    SLO" (served ≥ 0.9 by the starvation verdict, TTFT p99 ≤ 2 s, TPOT p99 ≤ 200 ms) against the twin."""
    from surrogate.metrics import f1_true
    from surrogate.train import slo_verdict

    out: dict[str, float] = {}
    for t in LATENCY_TARGETS:
        if t in rows and f"pred_{t}" in rows:
            y, p = rows[t].to_numpy(dtype=float), rows[f"pred_{t}"].to_numpy(dtype=float)
            ok = np.isfinite(y) & np.isfinite(p)
            out[f"{t}_smape_pct"] = smape_paper(y[ok], p[ok])
            if t == "ttft_p99_s":
                near = ok & (y <= 10.0)
                out["ttft_p99_s_smape_pct_below_10s"] = smape_paper(y[near], p[near])
                out["rows_ttft_p99_below_10s"] = float(near.sum())
    needed = [m for _, m, _ in Slo().limits()]
    if all(m in rows and f"pred_{m}" in rows for m in needed):
        truth = slo_verdict(~rows["starved"].to_numpy(dtype=bool), {m: rows[m].to_numpy() for m in needed})
        pred = slo_verdict(~rows["pred_starved"].to_numpy(dtype=bool),
                           {m: rows[f"pred_{m}"].to_numpy() for m in needed})
        out["default_slo_f1"] = f1_true(truth, pred)
        out["default_slo_share"] = float(truth.mean()) if truth.size else float("nan")
    return out


def score_predictions(rows: Any) -> dict[str, Any]:
    """Metrics of a :func:`predictions_frame` (or real-run frame), overall and per profile."""
    def sc(r: Any) -> dict[str, float]:
        return score(r["throughput_tok_s"].to_numpy(), r["pred_throughput_tok_s"].to_numpy(),
                     r["starved"].to_numpy(), r["pred_starved"].to_numpy())

    def both(r: Any) -> dict[str, float]:
        return {**sc(r), **latency_scores(r)}

    out: dict[str, Any] = both(rows)
    out["by_profile"] = {str(n): both(g) for n, g in rows.groupby("profile")}
    return out


def score_frame(surrogates: dict[str, Any], frame: Any) -> dict[str, Any]:
    """Metrics of surrogates (by profile name) on usable rows of a sweep dataset, overall and per profile."""
    return score_predictions(predictions_frame(surrogates, frame))


def timing(surrogate: Any, instance: Any, *, n_groups: int = 2000, group_size: int = 64, repeats: int = 300,
           seed: int = 0, latency: tuple[str, ...] = ()) -> dict[str, float]:
    """Prediction speed on one instance: batched per row, and one single prediction (median of repeats);
    ``latency``: latency targets predicted too in the batched call."""
    rng = np.random.default_rng(seed)
    n = instance.n_adapters
    size = min(group_size, n)
    groups = [rng.choice(n, size=size, replace=False) for _ in range(n_groups)]
    slots = rng.integers(1, size + 1, n_groups)
    surrogate.predict_groups(instance, groups[:4], slots[:4], latency=latency)  # compile / warm caches
    t0 = time.perf_counter()
    surrogate.predict_groups(instance, groups, slots, latency=latency)
    batch = (time.perf_counter() - t0) / n_groups * 1e6
    k = max(1, min(8, n))
    surrogate.predict(instance, k)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        surrogate.predict(instance, k)
        times.append(time.perf_counter() - t0)
    return {"predict_us_per_row": batch, "predict_ms_single": float(np.median(times) * 1e3),
            "timing_group_size": float(size), "timing_instance_adapters": float(n)}


def real_records(path: str | Path | None = None) -> list[Any]:
    """The dt_real runs (ok and OOM) as :class:`twin.calibration.runs.RunRecord` (default:
    :func:`default_real_runs`)."""
    from twin.calibration.runs import load_runs

    return list(load_runs(_real_runs_path(path), source="dt_real"))


def real_predictions_frame(surrogates: dict[str, Any], path: str | Path | None = None, *,
                           seed: int = 0) -> Any:
    """One row per dt_real run (ok or OOM) of the surrogates' profiles: measured vs predicted."""
    import pandas as pd

    rows = []
    for r in real_records(path):
        name = f"{r.model}@{r.gpu}"
        if name not in surrogates:
            continue
        pred = surrogates[name].predict(r.instance(seed=seed), int(r.max_loras), int(r.max_cpu_loras),
                                        int(r.max_lora_rank))
        rows.append({"run": r.key, "profile": name, "n_adapters": r.n_adapters, "max_loras": r.max_loras,
                     "max_cpu_loras": r.max_cpu_loras, "max_lora_rank": r.max_lora_rank, "oom": r.oom,
                     "pred_oom": pred.oom, "throughput_tok_s": r.throughput_total,
                     "pred_throughput_tok_s": pred.throughput_tok_s, "starved": bool(r.starved),
                     "pred_starved": pred.starved, "pred_starved_probability": pred.starved_probability,
                     "offered_tok_s": r.ideal_throughput, "twin_published_tok_s": r.dt_throughput})
    return pd.DataFrame(rows)


def score_real(surrogates: dict[str, Any], path: str | Path | None = None, *, seed: int = 0
               ) -> dict[str, Any]:
    """Metrics of surrogates against the real dt_real runs that completed (status ok), plus OOM agreement."""
    rows = real_predictions_frame(surrogates, path, seed=seed)
    ok = rows[~rows["oom"] & np.isfinite(rows["throughput_tok_s"].astype(float))]
    out = score_predictions(ok)
    out["oom_agreement"] = float((rows["oom"] == rows["pred_oom"]).mean()) if len(rows) else float("nan")
    return out


DEFAULT_EVAL_SEED = 7  # the shipped models are trained on other seeds (see surrogate.build_default)


def timing_instance(name: str, n_adapters: int = 600, seed: int = 0) -> Any:
    """A placement-sized instance (ranks 8–64, rates 0.01–0.2 req/s) to time predictions on."""
    from twin.spec import Adapter, Instance

    rng = np.random.default_rng(seed)
    model, gpu = name.split("@", 1)
    adapters = tuple(Adapter(f"a{i}", int(rng.choice([8, 16, 32, 64])), float(rng.uniform(0.01, 0.2)))
                     for i in range(n_adapters))
    return Instance(name="timing", model=model, gpu=gpu, adapters=adapters)


def evaluate(models_dir: str | Path | None = None, *, n_samples: int = 300, seed: int = DEFAULT_EVAL_SEED,
             dataset_dir: str | Path | None = None, workers: int = 2, backend: str = "local",
             profiles: tuple[str, ...] | None = None, real_runs: str | Path | None = None,
             quiet: bool = True, keep_rows: bool = False) -> dict[str, Any]:
    """Score surrogates (``models_dir``, default: the shipped ones) on a fresh twin sweep and on dt_real.

    The sweep (``n_samples`` runs drawn with ``seed``) goes to ``dataset_dir`` (resumable) or a temporary
    directory. Returns ``{"twin": ..., "real": ..., "speed": ..., "sweep": ...}`` with the metrics above (and
    the per-run prediction frames under ``twin_rows``/``real_rows`` with ``keep_rows``). ``real_runs``: the
    real runs CSV (default: :func:`default_real_runs`; when that is not found, ``real`` is left out).
    """
    import tempfile

    from surrogate.bundle import Surrogate, default_models_dir
    from surrogate.dataset import DEFAULT_PROFILES, load_dataset, sweep

    names = profiles or DEFAULT_PROFILES
    real_path = _real_runs_path(real_runs) if real_runs is not None else default_real_runs()
    mdir = Path(models_dir) if models_dir is not None else default_models_dir()
    surrogates = {n: Surrogate.load(mdir, n) for n in names}
    with tempfile.TemporaryDirectory(prefix="surrogate-eval-") as tmp:
        ddir = Path(dataset_dir) if dataset_dir is not None else Path(tmp)
        stats = sweep(n_samples, seed, ddir, profiles=tuple(names), workers=workers, backend=backend,
                      quiet=quiet)
        twin_rows = predictions_frame(surrogates, load_dataset(ddir))
    speed = timing(surrogates[names[0]], timing_instance(names[0]))
    out: dict[str, Any] = {"twin": score_predictions(twin_rows), "speed": speed, "sweep": stats.to_dict(),
                           "models": {n: s.meta for n, s in surrogates.items()}}
    if keep_rows:
        out["twin_rows"] = twin_rows
    if real_path is not None:
        real_rows = real_predictions_frame(surrogates, real_path)
        ok = real_rows[~real_rows["oom"] & np.isfinite(real_rows["throughput_tok_s"].astype(float))]
        out["real"] = score_predictions(ok)
        out["real"]["oom_agreement"] = float((real_rows["oom"] == real_rows["pred_oom"]).mean())
        if keep_rows:
            out["real_rows"] = real_rows
    return out


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The headline figures of an :func:`evaluate` report as one flat mapping."""
    out = {k: report["twin"][k] for k in ("throughput_smape_pct", "throughput_smape_std_pct",
                                          "starvation_macro_f1")}
    out.update({k: report["speed"][k] for k in ("predict_us_per_row", "predict_ms_single")})
    if "real" in report:
        keys = ("throughput_smape_pct", "throughput_smape_std_pct", "starvation_macro_f1", "oom_agreement")
        out.update({f"real_{k}": report["real"][k] for k in keys})
    out["sweep_runs_per_s_per_core"] = report["sweep"]["runs_per_s_per_core"]
    return out
