"""Small compiled helpers of the twin's step loop (:mod:`twin._numba.core`): adapter slot/host-cache loads,
the running-request passes, the set of adapters with running requests, per-adapter arrival lists."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _lru_victim(resident, last_used, in_batch_stamp, step, protect_batch):
    """The least recently used resident adapter (-1 if none); with ``protect_batch``, one that is not in this
    step's batch (``in_batch_stamp[b] == step`` marks the batch)."""
    victim = -1
    best = np.int64(1) << 62
    for b in range(resident.shape[0]):
        if resident[b] and last_used[b] < best and not (protect_batch and in_batch_stamp[b] == step):
            best = last_used[b]
            victim = b
    return victim


@njit(cache=True, inline="always")
def _activate(a, stamp, step, rank, gpu_res, gpu_last, cpu_res, cpu_last, in_batch_stamp, protect_batch,
              counts, max_loras, max_cpu, p):
    """Make adapter ``a`` GPU-resident (host cache first: a miss loads it from disk), evicting least recently
    used adapters where full (see :func:`_lru_victim`); stamp both uses with ``stamp``; return the load time
    (ms)."""
    ms = 0.0
    if not cpu_res[a]:  # host-cache miss: load from disk, evicting the LRU registered adapter
        if counts[1] >= max_cpu:
            victim = _lru_victim(cpu_res, cpu_last, in_batch_stamp, step, protect_batch)
            cpu_res[victim] = False
            counts[1] -= 1
            if gpu_res[victim]:
                gpu_res[victim] = False
                counts[0] -= 1
        cpu_res[a] = True
        counts[1] += 1
        counts[3] += 1
        ms += p[11]
    cpu_last[a] = stamp
    if not gpu_res[a]:
        if counts[0] >= max_loras:
            victim = _lru_victim(gpu_res, gpu_last, in_batch_stamp, step, protect_batch)
            gpu_res[victim] = False
            counts[0] -= 1
        gpu_res[a] = True
        counts[0] += 1
        counts[2] += 1
        ms += p[9] + p[10] * rank[a]
    gpu_last[a] = stamp
    return ms


@njit(cache=True)
def _load_adapters(batch, nb, step, rank, gpu_res, gpu_last, cpu_res, cpu_last, in_batch_stamp,
                   counts, max_loras, max_cpu, p):
    """Make every adapter of the batch GPU-resident (LRU slots, host LRU cache), never evicting an adapter of
    this batch; return the load time (ms)."""
    ms = 0.0
    for k in range(nb):
        ms += _activate(batch[k], step, step, rank, gpu_res, gpu_last, cpu_res, cpu_last, in_batch_stamp,
                        True, counts, max_loras, max_cpu, p)
    return ms


@njit(cache=True)
def _load_adapters_hashed(batch, nb, step, rank, gpu_res, gpu_last, cpu_res, cpu_last, hkey, counts,
                          max_loras, max_cpu, p):
    """vLLM 0.8.5's ``LRUCacheWorkerLoRAManager._apply_adapters``: the batch's adapters are activated in the
    iteration order of a Python set (:data:`hkey`, a seeded permutation standing for the hash order of the
    adapter names); each activation touches the adapter in the host cache and in the GPU slots, and an
    adapter that is not resident evicts the least recently used one — possibly an adapter of this very
    batch that has not been touched yet in this step, which is then loaded again when its turn comes.

    The LRU stamp of an adapter touched in step s is ``s·2^20 + hkey[a]``: the touches of one step happen
    in increasing ``hkey`` order, so the stamps order them exactly as the sequential loop does. Returns the
    load time (ms)."""
    base = step << 20
    missing = 0
    for k in range(nb):
        if not gpu_res[batch[k]]:
            missing += 1
    if missing == 0:                    # nothing to load: every touch is a stamp in hash order
        for k in range(nb):
            a = batch[k]
            cpu_last[a] = base + hkey[a]
            gpu_last[a] = base + hkey[a]
        return 0.0
    order = batch[:nb].copy()           # insertion sort by hash key (only in steps that load)
    for k in range(1, nb):
        a = order[k]
        j = k - 1
        while j >= 0 and hkey[order[j]] > hkey[a]:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = a
    ms = 0.0
    for k in range(nb):
        a = order[k]
        ms += _activate(a, base + hkey[a], step, rank, gpu_res, gpu_last, cpu_res, cpu_last, hkey, False,
                        counts, max_loras, max_cpu, p)
    return ms


@njit(cache=True)
def _advance_running(i, nrun, budget, free, bs, s_id, s_pin, s_ntok, s_end, s_comp, s_blk, ev_first, ev_fin,
                     n_first, n_fin):
    """Schedule running slots i, i+1, ... while budget is left, applying their outputs; stop early at a slot
    whose KV blocks do not fit (returned ``need`` > 0) so that the caller can preempt. Kept small so that the
    hot loop stays in registers."""
    n_pre = 0
    ctx = 0
    n_itl = 0
    while i < nrun and budget > 0:
        if s_end[i] < 0:                # a hole left by a finished request
            i += 1
            continue
        ntok = s_ntok[i]
        comp = s_comp[i]
        new = ntok - comp
        if new > budget:
            new = budget
        tot = comp + new
        blk = s_blk[i]
        if tot > blk * bs:
            need = (tot + bs - 1) // bs - blk
            if need > free:
                return i, budget, free, n_pre, ctx, n_itl, n_first, n_fin, need
            free -= need
            s_blk[i] = blk + need
        s_comp[i] = tot
        if tot == ntok:
            if new == 1 and ntok > s_pin[i]:
                n_itl += 1              # a plain decode: one inter-token latency
            else:
                n_pre += new
            ntok += 1
            s_ntok[i] = ntok
            if ntok == s_pin[i] + 1:
                ev_first[n_first] = s_id[i]
                n_first += 1
            if ntok == s_end[i]:
                ev_fin[n_fin] = i
                n_fin += 1
        else:
            n_pre += new
        ctx += tot
        budget -= new
        i += 1
    return i, budget, free, n_pre, ctx, n_itl, n_first, n_fin, 0


@njit(cache=True)
def _all_running(nrun, budget, free, bs, bshift, s_id, s_pin, s_ntok, s_end, s_comp, s_blk, ev_first, ev_fin):
    """Schedule every running slot with all its new tokens if the budget and the free KV blocks allow it (then
    no request is preempted and the order does not matter); otherwise change nothing and return i = 0."""
    demand = 0
    need = 0
    for v in range(nrun):
        ntok = s_ntok[v]
        demand += ntok - s_comp[v]
        extra = ((ntok + bs - 1) >> bshift) - s_blk[v]
        need += max(extra, 0)
    if demand > budget or need > free:
        return 0, budget, free, 0, 0, 0, 0, 0
    n_itl = 0
    ctx = 0
    n_first = 0
    n_fin = 0
    for v in range(nrun):
        if s_end[v] < 0:                # a hole (ntok = comp = blk = 0: no demand, no blocks)
            continue
        ntok = s_ntok[v]
        new = ntok - s_comp[v]
        n_itl += 1 if (new == 1 and ntok > s_pin[v]) else 0
        ctx += ntok
        s_blk[v] = max(s_blk[v], (ntok + bs - 1) >> bshift)
        s_comp[v] = ntok
        ntok += 1
        s_ntok[v] = ntok
        if ntok == s_pin[v] + 1:
            ev_first[n_first] = s_id[v]
            n_first += 1
        if ntok == s_end[v]:
            ev_fin[n_fin] = v
            n_fin += 1
    return nrun, budget - demand, free - need, demand - n_itl, ctx, n_itl, n_first, n_fin


@njit(cache=True)
def _active_add(a, run_cnt, act, act_pos):
    if run_cnt[a] == 0:
        act[0] += 1
        act[act[0]] = a
        act_pos[a] = act[0]
    run_cnt[a] += 1


@njit(cache=True)
def _active_remove(a, run_cnt, act, act_pos):
    run_cnt[a] -= 1
    if run_cnt[a] == 0:
        k = act_pos[a]
        last = act[act[0]]
        act[k] = last
        act_pos[last] = k
        act[0] -= 1


@njit(cache=True)
def _adapter_lists(adp, n_adapters):
    """Counting sort by adapter: order[ad_start[a]:ad_end[a]] are adapter a's requests in arrival order."""
    n = adp.shape[0]
    ad_start = np.zeros(n_adapters, np.int64)
    ad_end = np.zeros(n_adapters, np.int64)
    for i in range(n):
        ad_end[adp[i]] += 1
    s = 0
    for a in range(n_adapters):
        c = ad_end[a]
        ad_start[a] = s
        s += c
        ad_end[a] = s
    fill = ad_start.copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        a = adp[i]
        order[fill[a]] = i
        fill[a] += 1
    return order, ad_start, ad_end


# ---- the metrics scraper's frontend stalls (StepModel.metrics_scrape_*; see twin._numba.core) ----

@njit(cache=True, inline="always")
def _count_step(a, cnt, delta, keys, h, m):
    """Add ``delta`` (±1) to adapter ``a``'s count; when the count crosses zero, toggle its key in the set
    hash ``h`` (the XOR of the keys of the adapters whose count is positive) and move the set's size ``m``."""
    cnt[a] += delta
    if (delta > 0 and cnt[a] == 1) or (delta < 0 and cnt[a] == 0):
        h ^= keys[a]
        m += delta
    return h, m


@njit(cache=True)
def _series_insert(tab, n_in, h):
    """Insert the 64-bit value ``h`` into the open-addressing set ``tab`` (0 = empty slot) holding ``n_in``
    values; return the (possibly grown) table and the new count. Counts the distinct label sets the
    Prometheus gauge has been given."""
    if h == 0:
        h = 1
    mask = tab.shape[0] - 1
    i = (h ^ (h >> 31)) & mask
    while tab[i] != 0:
        if tab[i] == h:
            return tab, n_in
        i = (i + 1) & mask
    tab[i] = h
    n_in += 1
    if 2 * n_in > tab.shape[0]:  # keep it at most half full
        new = np.zeros(2 * tab.shape[0], np.int64)
        m2 = new.shape[0] - 1
        for v in tab:
            if v != 0:
                j = (v ^ (v >> 31)) & m2
                while new[j] != 0:
                    j = (j + 1) & m2
                new[j] = v
        tab = new
    return tab, n_in


@njit(cache=True, inline="always")
def _scrapes_until(x, p, n_series, n_names, next_sc, st_a, st_b, sc_stats):
    """Start every scrape due by time ``x``: a scrape starting at ``next_sc`` blocks the frontend for
    ``p16 + p17·n_series/1000 + p18·n_names/1000`` ms (the label sets held so far and the adapter names
    they list); the next one starts ``p15`` s after it ends. Returns the next start and the last window
    [st_a, st_b); ``sc_stats`` accumulates count, stall s, series, names."""
    while next_sc <= x:
        s = (p[16] + p[17] * n_series / 1000.0 + p[18] * n_names / 1000.0) / 1000.0
        st_a = next_sc
        st_b = next_sc + s
        next_sc = st_b + p[15]
        sc_stats[0] += 1.0
        sc_stats[1] += s
        sc_stats[2] += n_series
        sc_stats[3] += n_names
    return next_sc, st_a, st_b
