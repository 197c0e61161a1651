"""CatBoost oblivious trees as flat arrays, evaluated by a numba kernel.

CatBoost's own ``predict`` costs ~0.5 ms per call whatever the batch size (Pool construction); placement
asks one row at a time, so the trees are exported once (CatBoost's JSON format) and evaluated here. The
result equals CatBoost's raw prediction up to float rounding (a test checks it).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from surrogate._numba import eval_trees, eval_trees_columns

_COLUMN_MIN_ROWS = 32  # from this many rows on, the tree-major (vectorised) kernel is faster


@dataclass(frozen=True, eq=False)
class Trees:
    """Oblivious trees: split feature/border per level, leaf values per tree, scale and bias."""

    feat: np.ndarray
    border: np.ndarray
    leaf: np.ndarray
    depth: np.ndarray
    split_off: np.ndarray
    leaf_off: np.ndarray
    scale: float
    bias: float
    n_features: int

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Raw model output (regression value or log-odds) for rows of X."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] < self.n_features:
            raise ValueError(f"expected a 2-D array with {self.n_features} columns, got shape {X.shape}")
        if X.shape[0] >= _COLUMN_MIN_ROWS:
            XT = np.ascontiguousarray(X.T)
            return eval_trees_columns(XT, self.feat, self.border, self.leaf, self.depth, self.split_off,
                                      self.leaf_off, self.scale, self.bias)
        return eval_trees(X, self.feat, self.border, self.leaf, self.depth, self.split_off, self.leaf_off,
                          self.scale, self.bias)


def export_trees(model: Any) -> Trees:
    """Flatten a fitted CatBoost model (numeric features only, single output)."""
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        model.save_model(path, format="json")
        with open(path) as fh:
            data = json.load(fh)
    finally:
        os.unlink(path)
    floats = data["features_info"].get("float_features", [])
    flat_index = {f["feature_index"]: f.get("flat_feature_index", f["feature_index"]) for f in floats}
    if data["features_info"].get("categorical_features"):
        raise ValueError("categorical features are not supported by the tree exporter")
    feat: list[int] = []
    border: list[float] = []
    leaf: list[float] = []
    depth: list[int] = []
    split_off: list[int] = []
    leaf_off: list[int] = []
    for tree in data["oblivious_trees"]:
        split_off.append(len(feat))
        leaf_off.append(len(leaf))
        splits = tree.get("splits", [])
        depth.append(len(splits))
        for sp in splits:
            if sp.get("split_type", "FloatFeature") != "FloatFeature":
                raise ValueError(f"unsupported split type {sp.get('split_type')}")
            feat.append(flat_index[sp["float_feature_index"]])
            border.append(float(sp["border"]))
        values = tree["leaf_values"]
        if len(values) != 2 ** len(splits):
            raise ValueError("multi-output models are not supported by the tree exporter")
        leaf.extend(float(v) for v in values)
    sb = data.get("scale_and_bias", [1.0, [0.0]])
    bias = sb[1][0] if isinstance(sb[1], list) else sb[1]
    n_features = max(flat_index.values(), default=-1) + 1
    return Trees(
        feat=np.asarray(feat, dtype=np.int64), border=np.asarray(border, dtype=np.float64),
        leaf=np.asarray(leaf, dtype=np.float64), depth=np.asarray(depth, dtype=np.int64),
        split_off=np.asarray(split_off, dtype=np.int64), leaf_off=np.asarray(leaf_off, dtype=np.int64),
        scale=float(sb[0]), bias=float(bias), n_features=n_features,
    )
