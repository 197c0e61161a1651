"""Numba kernels: group feature rows and oblivious-tree evaluation (CatBoost models exported to arrays).

Both are hot paths of placement (thousands of calls); a plain-numpy version pays ~3 µs per array operation,
which is more than a whole feature row here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Column order must match surrogate.features.FEATURE_NAMES (checked by a test).
RANK_BINS = (8.0, 16.0, 32.0, 64.0)
N_COLS = 51


@njit(cache=True)
def _kv_tokens(slots: float, rank: float, mem: np.ndarray, tab: np.ndarray) -> float:
    kv = mem[0] - mem[1] * slots * rank - mem[2] * slots
    for t in range(tab.shape[0]):
        if tab[t, 0] == slots and tab[t, 1] == rank:
            kv = tab[t, 2]  # NaN = measured OOM
            break
    return kv + mem[3]


@njit(cache=True)
def group_features(rates_all: np.ndarray, ranks_all: np.ndarray, idx: np.ndarray, sizes: np.ndarray,
                   slots_g: np.ndarray, cpu_g: np.ndarray, rmax_g: np.ndarray, ctx: np.ndarray,
                   step: np.ndarray, mem: np.ndarray, tab: np.ndarray, active_window_s: float) -> np.ndarray:
    """Feature rows; ``cpu_g``/``rmax_g`` < 0 mean "group size" / "largest rank in the group"."""
    n_groups = sizes.shape[0]
    X = np.empty((n_groups, N_COLS))
    start = 0
    (model_code, in_mean, in_std, out_mean, out_std, arr_code, arr_cv, len_code, duration,
     mnbt, mns, mml) = (ctx[0], ctx[1], ctx[2], ctx[3], ctx[4], ctx[5], ctx[6], ctx[7], ctx[8],
                        ctx[9], ctx[10], ctx[11])
    for g in range(n_groups):
        m = sizes[g]
        n = float(m)
        r = np.empty(m)
        r_sum = 0.0
        r_sq = 0.0
        r_max = -np.inf
        r_min = np.inf
        active = 0.0
        active1 = 0.0
        active60 = 0.0
        k_sum = 0.0
        k_sq = 0.0
        k_max = 0.0
        k_rate = 0.0
        c8 = 0.0
        c16 = 0.0
        c32 = 0.0
        c64 = 0.0
        for j in range(m):
            a = idx[start + j]
            rate = rates_all[a]
            k = float(ranks_all[a])
            r[j] = rate
            r_sum += rate
            r_sq += rate * rate
            r_max = max(r_max, rate)
            r_min = min(r_min, rate)
            active += 1.0 - np.exp(-rate * active_window_s)
            active1 += 1.0 - np.exp(-rate)
            active60 += 1.0 - np.exp(-rate * 60.0)
            k_sum += k
            k_sq += k * k
            k_max = max(k_max, k)
            k_rate += k * rate
            if k == 8.0:
                c8 += 1
            elif k == 16.0:
                c16 += 1
            elif k == 32.0:
                c32 += 1
            elif k == 64.0:
                c64 += 1
        start += m
        slots = slots_g[g]
        cpu = cpu_g[g] if cpu_g[g] >= 0 else n
        rmax = rmax_g[g] if rmax_g[g] >= 0 else k_max
        r.sort()
        top = 0.0
        kk = int(min(max(slots, 0.0), n))
        for j in range(m - kk, m):
            top += r[j]
        top_share = top / r_sum if r_sum > 0 else 1.0
        r_mean = r_sum / n
        r_std = np.sqrt(max(r_sq / n - r_mean * r_mean, 0.0))
        k_mean = k_sum / n
        k_std = np.sqrt(max(k_sq / n - k_mean * k_mean, 0.0))
        tokens = in_mean + out_mean
        offered = r_sum * tokens
        kv = _kv_tokens(slots, rmax, mem, tab)
        # analytic saturation throughput (see surrogate.features.capacity_estimate)
        mo = max(out_mean, 1.0)
        mean_ctx = in_mean + mo / 2
        kv0 = 0.0 if np.isnan(kv) else kv
        b = max(min(mns, max(kv0, 1.0) / mean_ctx), 1.0)
        in_batch = min(slots, n)
        lora = 1.0 + step[4] * in_batch + (step[5] * rmax if in_batch > 0 else 0.0)
        step_ms = ((step[0] + step[1] * b + step[2] * b * in_mean / mo + step[3] * b * mean_ctx / 1000.0)
                   * lora + step[8] * in_batch * rmax + step[6] + step[7] * b)
        cap = b * (in_mean + mo) / mo / max(step_ms, 1e-6) * 1000.0
        row = X[g]
        row[0] = n
        row[1] = slots
        row[2] = rmax
        row[3] = cpu
        row[4] = min(slots, n) / n
        row[5] = min(cpu, n) / n
        row[6] = r_sum
        row[7] = r_mean
        row[8] = r_std
        row[9] = r_max
        row[10] = r_min
        row[11] = r_std / r_mean if r_mean > 0 else 0.0
        row[12] = r_sum * r_sum / r_sq if r_sq > 0 else n
        row[13] = top_share
        row[14] = r_sum * (1.0 - top_share)
        row[15] = active
        row[16] = active / max(slots, 1.0)
        row[17] = k_mean
        row[18] = k_std
        row[19] = k_max
        row[20] = k_rate / r_sum if r_sum > 0 else k_mean
        row[21] = c8
        row[22] = c16
        row[23] = c32
        row[24] = c64
        row[25] = n - c8 - c16 - c32 - c64
        row[26] = in_mean
        row[27] = in_std
        row[28] = out_mean
        row[29] = out_std
        row[30] = tokens
        row[31] = arr_code
        row[32] = arr_cv
        row[33] = len_code
        row[34] = offered
        row[35] = kv
        row[36] = kv / (in_mean + out_mean / 2)
        row[37] = cap
        row[38] = offered / cap
        row[39] = duration
        row[40] = mnbt
        row[41] = mns
        row[42] = mml
        row[43] = model_code
        # v2: slot contention at other horizons, and the capacity estimate limited by the slots
        cap_slots = cap * min(1.0, slots / max(active, 1e-9))
        row[44] = active1
        row[45] = active60
        row[46] = active1 / max(slots, 1.0)
        row[47] = active60 / max(slots, 1.0)
        row[48] = r_sum / max(active, 1e-9)
        row[49] = cap_slots
        row[50] = offered / max(cap_slots, 1e-9)
    return X


@njit(cache=True)
def eval_trees(X: np.ndarray, feat: np.ndarray, border: np.ndarray, leaf: np.ndarray, depth: np.ndarray,
               split_off: np.ndarray, leaf_off: np.ndarray, scale: float, bias: float) -> np.ndarray:
    """Raw sums of oblivious trees: bit d of a leaf index = (x[feat] > border) of the tree's split d."""
    n = X.shape[0]
    out = np.empty(n)
    n_trees = depth.shape[0]
    for i in range(n):
        s = 0.0
        for t in range(n_trees):
            o = split_off[t]
            li = 0
            for d in range(depth[t]):
                if X[i, feat[o + d]] > border[o + d]:
                    li |= 1 << d
            s += leaf[leaf_off[t] + li]
        out[i] = scale * s + bias
    return out


@njit(cache=True)
def eval_trees_columns(XT: np.ndarray, feat: np.ndarray, border: np.ndarray, leaf: np.ndarray,
                       depth: np.ndarray, split_off: np.ndarray, leaf_off: np.ndarray, scale: float,
                       bias: float) -> np.ndarray:
    """:func:`eval_trees` for many rows, tree-major over a feature-major array ``XT`` (features × rows):
    the inner loops run over contiguous rows and vectorise."""
    n = XT.shape[1]
    out = np.zeros(n)
    li = np.empty(n, dtype=np.int64)
    for t in range(depth.shape[0]):
        li[:] = 0
        o = split_off[t]
        for d in range(depth[t]):
            col = XT[feat[o + d]]
            b = border[o + d]
            for i in range(n):
                li[i] |= np.int64(col[i] > b) << d
        base = leaf_off[t]
        for i in range(n):
            out[i] += leaf[base + li[i]]
    for i in range(n):
        out[i] = scale * out[i] + bias
    return out
