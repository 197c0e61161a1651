"""surrogate: CatBoost models of per-GPU throughput and starvation, trained on twin sweeps.

>>> import surrogate
>>> s = surrogate.load_default("llama-3.1-8b-instruct", "h100-64gb")   # shipped models
>>> s.predict(instance, max_loras=32)                                    # doctest: +SKIP
Prediction(throughput_tok_s=..., starved=False, starved_probability=..., oom=False, ...)

Modules: :mod:`~surrogate.features` (the one feature schema), :mod:`~surrogate.dataset` (twin sweeps),
:mod:`~surrogate.model` (estimators), :mod:`~surrogate.bundle` (per-profile surrogate, shipped models),
:mod:`~surrogate.train`, :mod:`~surrogate.evaluate`.
"""

from surrogate.bundle import (
    BatchPrediction,
    Prediction,
    StaleSurrogateWarning,
    Surrogate,
    default_models_dir,
    load_default,
    load_surrogate,
)
from surrogate.dataset import DEFAULT_PROFILES, SweepStats, load_dataset, sweep
from surrogate.evaluate import evaluate
from surrogate.features import (
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    N_FEATURES,
    features,
    features_for_groups,
)
from surrogate.metrics import macro_f1
from surrogate.model import StarvationModel, ThroughputModel
from surrogate.train import train

SurrogatePair = Surrogate  # the name used in the design notes

__all__ = [
    "DEFAULT_PROFILES",
    "FEATURE_NAMES",
    "FEATURE_SCHEMA_VERSION",
    "N_FEATURES",
    "BatchPrediction",
    "Prediction",
    "StaleSurrogateWarning",
    "StarvationModel",
    "Surrogate",
    "SurrogatePair",
    "SweepStats",
    "ThroughputModel",
    "default_models_dir",
    "evaluate",
    "features",
    "features_for_groups",
    "load_dataset",
    "load_default",
    "load_surrogate",
    "macro_f1",
    "sweep",
    "train",
]
