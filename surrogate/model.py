"""scikit-learn-style CatBoost estimators of one GPU's throughput and starvation.

Both take feature rows of :mod:`surrogate.features` (settings in ``__init__``, ``fit`` returns self, learned
state in trailing-underscore attributes). Predictions go through the exported trees (:mod:`surrogate._trees`),
identical to CatBoost's own and ~50x faster per call. ``save(path)`` writes CatBoost's binary model at
``path`` and a JSON sidecar at ``path + ".json"`` (feature schema, dataset hash, profile version, metrics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from surrogate._trees import Trees, export_trees
from surrogate.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, N_FEATURES, feature_index, offered_tok_s
from twin.errors import InputError
from twin.files import atomic_write_text

TARGETS = ("log_capped", "log_ref", "log_fraction", "fraction", "log")
LOSSES = ("MAE", "RMSE")
CAPPED_MULTIPLE = 25.0  # log_capped: the reference saturates at 25x the slot-limited capacity estimate
_FLOOR = 1e-3  # smallest served fraction / tok/s kept apart in log space
_CAP_SLOTS = feature_index("capacity_slots_est_tok_s")


def _choice(value: str, choices: tuple[str, ...], field: str) -> str:
    """``value`` when it is one of ``choices``, else a one-line InputError naming the field."""
    if value not in choices:
        raise InputError(f"must be one of {list(choices)}", field=field, value=value)
    return value


def _check_X(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise InputError(f"expected feature rows with {N_FEATURES} columns, got shape {X.shape}", field="X")
    return X


class _CatBoostEstimator:
    """Shared fit/save/load plumbing."""

    _kind = "base"

    def __init__(self, *, iterations: int = 1000, depth: int = 6, learning_rate: float = 0.08,
                 l2_leaf_reg: float = 3.0, random_seed: int = 0, thread_count: int = 1) -> None:
        self.iterations = iterations
        self.depth = depth
        self.learning_rate = learning_rate
        self.l2_leaf_reg = l2_leaf_reg
        self.random_seed = random_seed
        self.thread_count = thread_count
        self.meta_: dict[str, Any] = {}
        self.model_: Any = None
        self.trees_: Trees | None = None

    def _params(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "depth": self.depth, "learning_rate": self.learning_rate,
                "l2_leaf_reg": self.l2_leaf_reg, "random_seed": self.random_seed,
                "thread_count": self.thread_count, "verbose": 0, "allow_writing_files": False}

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("iterations", "depth", "learning_rate", "l2_leaf_reg",
                                              "random_seed", "thread_count")}

    def _fitted(self) -> Trees:
        trees = getattr(self, "trees_", None)
        if trees is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return trees

    def _sidecar(self) -> dict[str, Any]:
        return {"kind": self._kind, "params": self.get_params(),
                "feature_schema": {"version": FEATURE_SCHEMA_VERSION, "names": list(FEATURE_NAMES)},
                **self._extra_state(), "meta": self.meta_}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def save(self, path: str | Path) -> None:
        """Write the CatBoost model at ``path`` and the JSON sidecar at ``path + '.json'`` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        self.model_.save_model(str(tmp))
        tmp.replace(path)
        atomic_write_text(Path(f"{path}.json"), json.dumps(self._sidecar(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Read a model written by :meth:`save`; refuses a different feature schema."""
        path = Path(path)
        try:
            side = json.loads(Path(f"{path}.json").read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read model sidecar ({exc})", source=f"{path}.json") from None
        if side.get("kind") != cls._kind:
            raise InputError(f"not a {cls._kind} model", source=f"{path}.json", field="kind",
                             value=side.get("kind"))
        schema = side.get("feature_schema", {})
        if schema.get("version") != FEATURE_SCHEMA_VERSION or schema.get("names") != list(FEATURE_NAMES):
            raise InputError(f"feature schema version {schema.get('version')} does not match this code's "
                             f"{FEATURE_SCHEMA_VERSION}; retrain the model", source=f"{path}.json",
                             field="feature_schema.version", value=schema.get("version"))
        est = cls(**side["params"])
        est.model_ = est._new_model()
        try:
            est.model_.load_model(str(path))
        except Exception as exc:  # CatBoostError: unreadable file
            raise InputError(f"cannot read CatBoost model ({exc})", source=str(path)) from None
        est._restore(side)
        est.meta_ = dict(side.get("meta", {}))
        est.trees_ = export_trees(est.model_)
        return est

    def _restore(self, side: dict[str, Any]) -> None:
        pass

    def _new_model(self) -> Any:
        raise NotImplementedError


class _Regressor(_CatBoostEstimator):
    """A CatBoost regressor of one ``target`` (one of the subclass's ``_targets``) with loss ``loss``."""

    _targets: tuple[str, ...] = ()

    def __init__(self, *, target: str, loss: str = "MAE", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = _choice(target, self._targets, "target")
        self.loss = _choice(loss, LOSSES, "loss")

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "target": self.target, "loss": self.loss}

    def _new_model(self) -> Any:
        from catboost import CatBoostRegressor

        return CatBoostRegressor(**self._params(), loss_function=self.loss)


class ThroughputModel(_Regressor):
    """Per-GPU throughput (tok/s) regressor.

    ``target``: what CatBoost learns — ``log_capped`` (the default: log of throughput / min(expected offered
    load, 25 × slot-limited capacity estimate): the log served fraction wherever the sweeps sample, errors
    relative like SMAPE; beyond the sampled overload the prediction saturates with the capacity instead of
    growing with the offered load), ``log_ref`` (the same with 1 × the capacity estimate), ``log_fraction``
    (log of throughput / expected offered load), ``fraction`` (the served fraction) or ``log`` (log tok/s).

    ``loss``: CatBoost's loss on that target. ``MAE`` (the default) on a log target is the L1 norm of the log
    ratio, which is what SMAPE measures for small errors (|a − b|/(a + b) ≈ |log(a/b)|/2), and it predicts
    the median where the twin's outcome is bimodal (few slots, heavy overload); ``RMSE`` predicts the mean.
    """

    _kind = "throughput"
    _targets = TARGETS

    def __init__(self, *, target: str = "log_capped", loss: str = "MAE", **kwargs: Any) -> None:
        super().__init__(target=target, loss=loss, **kwargs)

    def _ref(self, X: np.ndarray) -> np.ndarray:
        mult = CAPPED_MULTIPLE if self.target == "log_capped" else 1.0
        return np.maximum(np.minimum(offered_tok_s(X), mult * X[:, _CAP_SLOTS]), _FLOOR)

    def _encode(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        off = np.maximum(offered_tok_s(X), _FLOOR)
        if self.target in ("log_ref", "log_capped"):
            return np.log(np.maximum(y, _FLOOR) / self._ref(X))
        if self.target == "fraction":
            return y / off
        if self.target == "log":
            return np.log(np.maximum(y, _FLOOR))
        return np.log(np.maximum(y / off, _FLOOR))

    def _decode(self, X: np.ndarray, z: np.ndarray) -> np.ndarray:
        off = offered_tok_s(X)
        if self.target in ("log_ref", "log_capped"):
            return np.exp(z) * self._ref(X)
        if self.target == "fraction":
            return np.maximum(z, 0.0) * off
        if self.target == "log":
            return np.exp(z)
        return np.exp(z) * off

    def fit(self, X: np.ndarray, y: np.ndarray, *, eval_set: tuple[np.ndarray, np.ndarray] | None = None
            ) -> ThroughputModel:
        """Fit on feature rows and measured throughput (tok/s)."""
        X = _check_X(X)
        y = np.asarray(y, dtype=np.float64)
        self.model_ = self._new_model()
        ev = None if eval_set is None else (_check_X(eval_set[0]), self._encode(_check_X(eval_set[0]),
                                                                                np.asarray(eval_set[1])))
        self.model_.fit(X, self._encode(X, y), eval_set=ev)
        self.trees_ = export_trees(self.model_)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted throughput (tok/s), never negative."""
        X = _check_X(X)
        return np.maximum(self._decode(X, self._fitted().raw(X)), 0.0)


class StarvationModel(_CatBoostEstimator):
    """Per-GPU starvation classifier (starved ⇔ throughput < 0.9 × offered load)."""

    _kind = "starvation"

    def __init__(self, *, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "threshold": self.threshold}

    def _new_model(self) -> Any:
        from catboost import CatBoostClassifier

        return CatBoostClassifier(**self._params(), loss_function="Logloss")

    def fit(self, X: np.ndarray, y: np.ndarray) -> StarvationModel:
        """Fit on feature rows and starvation labels (bool)."""
        X = _check_X(X)
        y = np.asarray(y).astype(bool)
        self.model_ = self._new_model()
        if y.all() or not y.any():  # one class only: CatBoost refuses; keep a constant model
            self.constant_: float | None = float(y[0]) if y.size else 0.0
            self.model_ = None
            self.trees_ = None
        else:
            self.constant_ = None
            self.model_.fit(X, y.astype(int))
            self.trees_ = export_trees(self.model_)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of starvation per row (1-D)."""
        X = _check_X(X)
        if getattr(self, "constant_", None) is not None:
            return np.full(X.shape[0], float(self.constant_))  # type: ignore[arg-type]
        return np.asarray(1.0 / (1.0 + np.exp(-self._fitted().raw(X))))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Starved (bool) per row."""
        return self.predict_proba(X) >= self.threshold

    def _extra_state(self) -> dict[str, Any]:
        return {"constant": getattr(self, "constant_", None)}

    def save(self, path: str | Path) -> None:
        if self.model_ is None:
            raise RuntimeError("a constant StarvationModel (one class in training) cannot be saved")
        super().save(path)

    def _restore(self, side: dict[str, Any]) -> None:
        c = side.get("constant")
        self.constant_ = None if c is None else float(c)


LATENCY_TARGETS = ("ttft_p50_s", "ttft_p95_s", "ttft_p99_s", "tpot_p50_s", "tpot_p95_s", "tpot_p99_s")
LATENCY_INPUTS = ("features", "stacked")
LATENCY_BASES = ("none", "queue")
_LATENCY_FLOOR_S = 1e-4  # 0.1 ms: the smallest latency kept apart in log space
_RHO_MAX = 0.995  # the queueing prior's utilisation is clipped below 1 (beyond it the trees take over)
_TOKENS = feature_index("tokens_per_request")
_INPUT = feature_index("input_mean")
_CAP = feature_index("capacity_est_tok_s")
_LOAD_SLOTS = feature_index("load_ratio_slots")
_ARRIVAL_CV = feature_index("arrival_cv")


def queue_prior_s(X: np.ndarray) -> np.ndarray:
    """A queueing-theory prior of a TTFT percentile (seconds) per feature row: the prefill time of a mean
    prompt plus Kingman's M/G/1 mean wait ``(1 + ca²)/2 · ρ/(1 − ρ) · S`` with ρ the slot-limited load ratio
    (clipped below 1), S the time the GPU spends per request at its slot-limited capacity estimate and ca the
    arrival coefficient of variation (1 for Poisson). Not a prediction: the ``queue`` base of
    :class:`LatencyModel`, which the trees correct in log space."""
    X = _check_X(X)
    rho = np.clip(X[:, _LOAD_SLOTS], 0.0, _RHO_MAX)
    service = X[:, _TOKENS] / np.maximum(X[:, _CAP_SLOTS], 1e-9)
    cv = X[:, _ARRIVAL_CV]
    ca2 = np.where(cv > 0, cv * cv, 1.0)
    wait = service * (1.0 + ca2) / 2.0 * rho / (1.0 - rho)
    return np.asarray(X[:, _INPUT] / np.maximum(X[:, _CAP], 1e-9) + wait + 1e-6)


def stacked_columns(X: np.ndarray, throughput_tok_s: np.ndarray, starved_probability: np.ndarray
                    ) -> np.ndarray:
    """The ``stacked`` inputs of a :class:`LatencyModel` beside the feature rows: the starvation model's
    log-odds and the throughput model's log served fraction (how close to saturation the bundle's own
    throughput models put the row — the queueing regime a small capacity error swings)."""
    q = np.clip(np.asarray(starved_probability, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    served = np.maximum(np.asarray(throughput_tok_s, dtype=np.float64), _FLOOR) / np.maximum(
        offered_tok_s(X), _FLOOR)
    return np.column_stack([np.log(q / (1.0 - q)), np.log(served)])


class LatencyModel(_Regressor):
    """One latency percentile of one GPU (seconds): ``target`` one of :data:`LATENCY_TARGETS` (the twin's
    censored TTFT and TPOT percentiles, :mod:`twin.metrics`). CatBoost learns log(seconds) with ``loss``
    (MAE, the default: the L1 norm of the log ratio, what SMAPE measures); predictions are exp of it.

    ``inputs``: ``features`` (the feature rows) or ``stacked`` (the feature rows and
    :func:`stacked_columns` of the bundle's throughput and starvation predictions, passed as ``stack``).
    ``base``: ``none`` or ``queue`` (the trees learn the log ratio to :func:`queue_prior_s`)."""

    _kind = "latency"
    _targets = LATENCY_TARGETS

    def __init__(self, *, target: str = "ttft_p99_s", loss: str = "MAE", inputs: str = "features",
                 base: str = "none", **kwargs: Any) -> None:
        super().__init__(target=target, loss=loss, **kwargs)
        self.inputs = _choice(inputs, LATENCY_INPUTS, "inputs")
        self.base = _choice(base, LATENCY_BASES, "base")

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "inputs": self.inputs, "base": self.base}

    @property
    def stacked(self) -> bool:
        """Whether predictions need the bundle's throughput and starvation predictions (``stack``)."""
        return self.inputs == "stacked"

    def _design(self, X: np.ndarray, stack: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        X = _check_X(X)
        offset = np.log(queue_prior_s(X)) if self.base == "queue" else np.zeros(X.shape[0])
        if not self.stacked:
            return X, offset
        if stack is None or np.shape(stack) != (X.shape[0], 2):
            raise InputError(f"a stacked latency model needs stack columns of shape ({X.shape[0]}, 2), got "
                             f"{None if stack is None else np.shape(stack)}", field="stack")
        return np.hstack([X, np.asarray(stack, dtype=np.float64)]), offset

    def fit(self, X: np.ndarray, y: np.ndarray, stack: np.ndarray | None = None) -> LatencyModel:
        """Fit on feature rows and measured latencies (seconds; NaN rows are left out); ``stack``: the
        :func:`stacked_columns` of the rows for ``inputs="stacked"``."""
        from catboost import Pool

        Z, offset = self._design(X, stack)
        y = np.asarray(y, dtype=np.float64)
        ok = np.isfinite(y)
        self.model_ = self._new_model()
        target = np.log(np.maximum(y[ok], _LATENCY_FLOOR_S))
        self.model_.fit(Pool(Z[ok], target, baseline=offset[ok] if self.base != "none" else None))
        self.trees_ = export_trees(self.model_)
        self.n_features_in_ = Z.shape[1]
        return self

    def predict(self, X: np.ndarray, stack: np.ndarray | None = None) -> np.ndarray:
        """Predicted latency (seconds)."""
        Z, offset = self._design(X, stack)
        return np.asarray(np.exp(self._fitted().raw(Z) + offset))
