"""Scores of the surrogates: the papers' SMAPE (defined once, in :func:`twin.metrics.smape_paper`) and the
macro-F1 of the starvation classifier."""

from __future__ import annotations

import numpy as np

from twin.metrics import smape_paper

__all__ = ["f1_true", "macro_f1", "smape_paper"]


def f1_true(actual: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of the positive (True) class, e.g. "meets the SLO" (1.0 when neither has a True)."""
    a = np.asarray(actual, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    tp = int((a & p).sum())
    fp = int((~a & p).sum())
    fn = int((a & ~p).sum())
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def macro_f1(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean of the F1 scores of the two classes (a class absent from both counts as F1 = 1)."""
    a = np.asarray(actual, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    scores = []
    for cls in (True, False):
        tp = int(((a == cls) & (p == cls)).sum())
        fp = int(((a != cls) & (p == cls)).sum())
        fn = int(((a == cls) & (p != cls)).sum())
        scores.append(1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))
