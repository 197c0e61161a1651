"""The event loop of the twin: one vLLM V1 server, step by step, over plain arrays (compiled with numba).

This module is internal: :mod:`twin.engine` prepares the arrays and reads the outputs. Every engine step does
what vLLM V1's ``Scheduler.schedule`` (0.8.x) does:

1. **Running requests first**, in admission order, while token budget is left: each is given
   ``min(num_tokens - num_computed_tokens, budget)`` new tokens (1 for a decoding request, a chunk for a
   prefilling one). If its KV blocks cannot be allocated, the most recently admitted running request is
   preempted (recompute: its KV is freed, its computed-token count reset, its generated tokens kept) and put
   at the FRONT of the waiting queue; this repeats until the allocation fits or the request preempted itself.
2. **Waiting queue**, only when nothing was preempted in this step: scanned FCFS while budget is left and
   fewer than ``max_num_seqs`` requests run. A request whose adapter is not in the step's adapter set is
   skipped (and stays in place) once that set holds ``max_loras`` adapters; the first request whose KV
   blocks do not fit ends the scan.

The waiting queue is always "preempted requests (most recently preempted first), then never-admitted requests
in arrival order"; the second part is kept as one pointer per adapter into the adapter's own arrival list, so
a scan restricted to the step's adapter set costs O(max_loras) per admitted request, not O(queue length).

Step time (ms), with the :class:`twin.profile.StepModel` parameters ``p``::

    forward = (p0 + p1*S + p2*P + p3*C/1000) * (1 + p4*A + p5*R*[A > 0]) + p12*A*R + p14*A*A
    step    = forward + p6 + p7*B + p8*W + sum over adapter loads (p9 + p10*rank + p11*[host-cache miss])

p13 (``in_batch_eviction``) selects how the loads happen (see :func:`run_core`). p15–p19
(``metrics_scrape_*``) add a metrics scraper that stalls the frontend, not the step (see :func:`run_core`).

S scheduled sequences, P prefill tokens (all new tokens of sequences that are not a plain decode), C context
tokens read (sum over scheduled sequences of computed + new tokens), A distinct adapters in the batch,
R = max_lora_rank, B running and W waiting requests after scheduling.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from twin._numba.kernels import (
    _active_add,
    _active_remove,
    _adapter_lists,
    _advance_running,
    _all_running,
    _count_step,
    _load_adapters,
    _load_adapters_hashed,
    _scrapes_until,
    _series_insert,
)

FRESH = 0      # arrived (or not yet) and never admitted
RUNNING = 1
PREEMPTED = 2  # back in the waiting queue after a preemption
FINISHED = 3
DROPPED = 4    # refused by a client at its connection limit (never sent)

# histogram of inter-token latencies: log-spaced bins over [1e-4 s, 1e3 s)
ITL_BINS = 2800
ITL_LO = -4.0
ITL_HI = 3.0

# counters returned in ``stats``
ST_STEPS = 0
ST_PREEMPTIONS = 1
ST_GPU_LOADS = 2
ST_DISK_LOADS = 3
ST_STALLED = 4
ST_BUSY_S = 5
ST_END_T = 6
ST_DROPPED = 7
ST_FORWARD_S = 8  # the steps' forward passes alone (the GPU's share of busy_s; twin.replicas)
ST_SCRAPES = 9      # metrics scrapes started in the window (frontend stalls)
ST_STALL_S = 10     # their total duration (s)
ST_SERIES_SUM = 11  # sum over scrapes of the label sets held (mean = ST_SERIES_SUM / ST_SCRAPES)
ST_NAMES_SUM = 12   # sum over scrapes of the adapter names those label sets list
N_STATS = 13
HOLES = 64  # finished requests' slots tolerated before the running list is squeezed


@njit(cache=True, inline="always")
def _itl_bin(dt):
    """The ITL histogram bin of a gap of ``dt`` seconds (clamped to the histogram's range)."""
    b = int((np.log10(max(dt, 1e-9)) - ITL_LO) / (ITL_HI - ITL_LO) * ITL_BINS)
    return min(max(b, 0), ITL_BINS - 1)


@njit(cache=True)
def run_core(arr, adp, pin, pout, rank, n_adapters, max_loras, max_cpu, max_lora_rank, budget_max,
             max_seqs, kv_blocks, block_size, p, duration, ts_dt, preload_cpu, fast_path=True,
             max_inflight=np.int64(1) << 62, drop=False, hkey=np.empty(0, np.int64),
             zkey=np.empty(0, np.int64)):
    """Simulate [0, duration); return per-request times, counters, the ITL histogram and a time series.

    The running requests live in "slots" (arrays indexed by position in the running list, in admission
    order) so that the per-step loops read contiguous memory; a request's state is copied out on preemption.
    A finished request leaves a hole (s_end = -1, no tokens, no blocks) that the passes skip; holes are
    squeezed out when more than HOLES accumulate, and never left at the tail (the preemption victim).

    With ``p[13]`` (``StepModel.in_batch_eviction``) set, adapters are activated in the order ``hkey`` (one
    key per adapter, a permutation) and the GPU slots / host cache evict the least recently used adapter even
    when it belongs to the current batch (vLLM 0.8.5); otherwise never an adapter of the current batch.

    With ``p[15]`` > 0 (``StepModel.metrics_scrape_interval_s``) a metrics scraper stalls the frontend (the
    API server's event loop; the engine keeps stepping): each step with outputs gives vLLM's
    ``lora_requests_info`` gauge the label set (adapters with running requests, adapters with waiting
    requests), a new time series when that pair is new (hashed with ``zkey``: keys [0, n) running,
    [n, 2n) waiting); a scrape renders every series held, ``p16 + p17·series/1000 + p18·names/1000`` ms
    (names: the adapter names all those label sets list), and starts ``p15`` s after the previous one
    ended. During a stall arrivals wait (they reach the engine at its end), first
    tokens are delivered at its end, and a request's tokens of the stall reach the client as one chunk: one
    inter-token gap from the last delivery before the stall to its end.
    """
    n = arr.shape[0]
    bs = block_size
    hashed = p[13] != 0.0
    bshift = -1                        # log2(block_size) if a power of two (enables the fast path)
    for k in range(31):
        if fast_path and (1 << k) == bs:
            bshift = k
    status = np.zeros(n, np.int8)
    gen = np.zeros(n, np.int64)        # output tokens generated so far (kept across preemptions)
    first_t = np.full(n, np.inf)
    fin_t = np.full(n, np.inf)

    order, ad_start, ad_end = _adapter_lists(adp, n_adapters)
    ad_ptr = ad_start.copy()           # next never-admitted request of each adapter

    m = max_seqs + HOLES + 1
    s_id = np.empty(m, np.int64)       # request id
    s_pin = np.empty(m, np.int64)      # prompt tokens
    s_ntok = np.empty(m, np.int64)     # num_tokens = prompt + generated
    s_end = np.empty(m, np.int64)      # prompt + max output: finished when num_tokens reaches it
    s_comp = np.empty(m, np.int64)     # num_computed_tokens
    s_blk = np.empty(m, np.int64)      # KV blocks held
    s_adp = np.empty(m, np.int64)
    ev_first = np.empty(m, np.int64)   # requests whose first token comes at the end of this step
    ev_fin = np.empty(m, np.int64)     # slots whose request finishes at the end of this step
    nrun = 0                           # running requests
    nslot = 0                          # slots in use: running requests and holes
    # Preempted waiting requests, most recent first: a global stack (pstack/pskey, the queue front at the top,
    # stale entries dropped lazily) and one linked list per adapter (p_head -> p_next), keyed by pkey.
    pstack = np.empty(n + 1, np.int64)   # (stale entries are compacted away when it is full)
    pskey = np.empty(n + 1, np.int64)
    npre = 0
    pkey = np.zeros(n, np.int64)
    p_next = np.empty(n, np.int64)
    p_head = np.full(n_adapters, -1, np.int64)
    pcount = 0
    gptr = 0                           # first possibly-fresh request in arrival order
    narr = 0                           # requests that reached the client (arrival <= t)
    ndrop = 0
    nfin = 0

    aset = np.empty(n_adapters, np.int64)   # the step's adapter set (in_set[a] == step marks members)
    run_cnt = np.zeros(n_adapters, np.int64)  # running requests per adapter
    act = np.zeros(n_adapters + 1, np.int64)  # act[0] = count, act[1:] = adapters with running requests
    act_pos = np.zeros(n_adapters, np.int64)
    in_set = np.full(n_adapters, -1, np.int64)
    gpu_res = np.zeros(n_adapters, np.bool_)
    gpu_last = np.zeros(n_adapters, np.int64)
    cpu_res = np.zeros(n_adapters, np.bool_)
    cpu_last = np.zeros(n_adapters, np.int64)
    counts = np.zeros(4, np.int64)     # gpu resident, cpu resident, gpu loads, disk loads
    for a in range(min(preload_cpu, n_adapters)):
        cpu_res[a] = True
        counts[1] += 1

    itl_hist = np.zeros(ITL_BINS, np.float64)
    n_ts = int(np.ceil(duration / ts_dt)) if ts_dt > 0 else 0
    ts = np.full((n_ts, 5), np.nan)    # t, running, waiting, kv blocks used, completed tokens so far
    ts_i = 0
    done_tokens = 0.0
    stats = np.zeros(N_STATS, np.float64)
    sc_on = p[15] > 0.0
    next_sc = p[15] if sc_on else np.inf   # the first scrape one interval after start-up
    st_a = -1.0                            # the last stall window [st_a, st_b)
    st_b = -1.0
    sc_stats = np.zeros(4, np.float64)
    wait_cnt = np.zeros(n_adapters if sc_on else 0, np.int64)  # waiting requests per adapter (frontend view)
    h_wait = np.int64(0)
    m_wait = 0                             # adapters with waiting requests
    n_names = 0                            # adapter names listed by the distinct label sets
    seen = np.full(n_adapters if sc_on else 0, -1, np.int64)
    tab = np.zeros(1 << 12 if sc_on else 1, np.int64)          # the distinct label sets (hashes)
    n_series = 0
    last_deliv = 0.0                       # end of the last step delivered outside a stall
    pend_n = 0                             # requests whose tokens wait for the current stall's end
    pend_from = 0.0
    pend_to = 0.0

    free = kv_blocks
    t = 0.0
    step = 0
    while True:
        while narr < n and arr[narr] <= t:
            if sc_on:                  # the frontend does not take requests during a stall
                next_sc, st_a, st_b = _scrapes_until(arr[narr], p, n_series, n_names, next_sc, st_a, st_b,
                                                     sc_stats)
                if st_a <= arr[narr] < st_b and t < st_b:
                    break
            if narr - ndrop - nfin >= max_inflight:  # the client is at its connection limit:
                if not drop or arr[narr] >= duration:
                    break              # hold the rest back (sent later, in order; none after the window)
                status[narr] = DROPPED  # or refuse it
                ndrop += 1
            elif sc_on:
                h_wait, m_wait = _count_step(adp[narr], wait_cnt, 1, zkey[n_adapters:], h_wait, m_wait)
            narr += 1
        if t >= duration:
            break
        nwait = narr - ndrop - nrun - nfin
        if nrun == 0 and nwait == 0:
            if narr >= n or arr[narr] >= duration:
                break
            tn = arr[narr]
            if sc_on:                  # an arrival held by a stall reaches the engine at its end
                next_sc, st_a, st_b = _scrapes_until(tn, p, n_series, n_names, next_sc, st_a, st_b, sc_stats)
                if st_a <= tn < st_b:
                    tn = st_b
            t = max(t, tn)
            continue
        while ts_i < n_ts and ts_i * ts_dt <= t:
            ts[ts_i, 0] = ts_i * ts_dt
            ts[ts_i, 1] = nrun
            ts[ts_i, 2] = nwait
            ts[ts_i, 3] = kv_blocks - free
            ts[ts_i, 4] = done_tokens
            ts_i += 1
        step += 1
        budget = budget_max
        na = 0
        n_pre_tok = 0
        ctx = 0
        n_itl = 0
        n_first = 0
        n_fin = 0
        preempted = False
        # ---- 1. running requests (outputs applied at once; nothing later in the step reads them) ----
        i = 0
        if bshift >= 0 and nrun > 0:
            # fast path: when every running request gets all its new tokens and all their KV blocks fit,
            # vLLM's in-order pass schedules them all and preempts nothing; two tight passes do the same
            i, budget, free, n_pre_tok, ctx, n_itl, n_first, n_fin = _all_running(
                nslot, budget, free, bs, bshift, s_id, s_pin, s_ntok, s_end, s_comp, s_blk, ev_first, ev_fin)
        while i < nslot or nslot == 0:
            i, budget, free, d_pre, d_ctx, d_itl, n_first, n_fin, need = _advance_running(
                i, nslot, budget, free, bs, s_id, s_pin, s_ntok, s_end, s_comp, s_blk, ev_first, ev_fin,
                n_first, n_fin)
            n_pre_tok += d_pre
            ctx += d_ctx
            n_itl += d_itl
            if need == 0:
                break
            while need > free:          # preempt the most recently admitted request (never a hole)
                v = nslot - 1
                r = s_id[v]
                nrun -= 1
                nslot -= 1
                while nslot > 0 and s_end[nslot - 1] < 0:
                    nslot -= 1
                free += s_blk[v]
                gen[r] = s_ntok[v] - s_pin[v]
                status[r] = PREEMPTED
                if sc_on:
                    h_wait, m_wait = _count_step(s_adp[v], wait_cnt, 1, zkey[n_adapters:], h_wait, m_wait)
                if npre == pstack.shape[0]:
                    k2 = 0
                    for k in range(npre):
                        c = pstack[k]
                        if status[c] == PREEMPTED and pkey[c] == pskey[k]:
                            pstack[k2] = c
                            pskey[k2] = pskey[k]
                            k2 += 1
                    npre = k2
                pcount += 1
                pkey[r] = pcount
                pstack[npre] = r
                pskey[npre] = pcount
                npre += 1
                a = s_adp[v]
                p_next[r] = p_head[a]
                p_head[a] = r
                _active_remove(a, run_cnt, act, act_pos)
                stats[ST_PREEMPTIONS] += 1
                preempted = True
                if v == i:
                    break
            if i >= nslot:              # the request preempted itself
                break
        # the step's adapter set: all running adapters, or those of the scheduled prefix if budget ran out
        if i >= nslot:
            for k in range(act[0]):
                a = act[k + 1]
                in_set[a] = step
                aset[k] = a
            na = act[0]
            ns = nrun
        else:
            ns = 0
            for k in range(i):
                if s_end[k] < 0:
                    continue
                ns += 1
                a = s_adp[k]
                if in_set[a] != step:
                    in_set[a] = step
                    aset[na] = a
                    na += 1
        # ---- 2. waiting queue (FCFS with the max_loras skip) ----
        if not preempted:
            j = npre - 1          # cursor in the global preempted stack
            while budget > 0 and nrun < max_seqs:
                r = -1
                if na < max_loras:
                    # unrestricted: the queue front = the most recently preempted, else the oldest arrival
                    while j >= 0:
                        c = pstack[j]
                        if status[c] == PREEMPTED and pkey[c] == pskey[j]:
                            r = c
                            break
                        j -= 1
                    if r < 0:
                        while gptr < narr and status[gptr] != FRESH:
                            gptr += 1
                        if gptr < narr:
                            r = gptr
                else:
                    # restricted to the step's adapters: their latest preempted, else their oldest arrival
                    bestp = -1
                    best = narr
                    for k in range(na):
                        a = aset[k]
                        c = p_head[a]
                        if c >= 0:
                            if bestp < 0 or pkey[c] > pkey[bestp]:
                                bestp = c
                        elif bestp < 0:
                            q = ad_ptr[a]
                            while q < ad_end[a] and status[order[q]] == DROPPED:
                                q += 1
                            ad_ptr[a] = q
                            if q < ad_end[a] and order[q] < best:
                                best = order[q]
                    if bestp >= 0:
                        r = bestp
                    elif best < narr:
                        r = best
                if r < 0:
                    break
                ntok = pin[r] + gen[r]
                new = min(ntok, budget)
                need = (new + bs - 1) // bs
                if need > free:
                    break
                if status[r] == PREEMPTED:
                    p_head[adp[r]] = p_next[r]   # always the head of its adapter's list
                else:
                    a = adp[r]
                    while status[order[ad_ptr[a]]] == DROPPED:
                        ad_ptr[a] += 1
                    ad_ptr[a] += 1
                status[r] = RUNNING
                if sc_on:
                    h_wait, m_wait = _count_step(adp[r], wait_cnt, -1, zkey[n_adapters:], h_wait, m_wait)
                free -= need
                v = nslot
                nslot += 1
                nrun += 1
                ns += 1
                s_id[v] = r
                s_pin[v] = pin[r]
                s_ntok[v] = ntok
                s_end[v] = pin[r] + pout[r]
                s_blk[v] = need
                a = adp[r]
                s_adp[v] = a
                _active_add(a, run_cnt, act, act_pos)
                n_pre_tok += new
                ctx += new
                s_comp[v] = new
                if new == ntok:
                    ntok += 1
                    s_ntok[v] = ntok
                    if ntok == pin[r] + 1:
                        ev_first[n_first] = r
                        n_first += 1
                    if ntok == s_end[v]:
                        ev_fin[n_fin] = v
                        n_fin += 1
                if in_set[a] != step:
                    in_set[a] = step
                    aset[na] = a
                    na += 1
                budget -= new
            while npre > 0 and not (status[pstack[npre - 1]] == PREEMPTED
                                    and pkey[pstack[npre - 1]] == pskey[npre - 1]):
                npre -= 1
        if ns == 0:
            if preempted:
                continue          # the preempted requests are re-admitted in the next step
            stats[ST_STALLED] = 1  # a lone request that can never fit: stop rather than spin
            break
        # ---- 3. step time ----
        if hashed:
            load_ms = _load_adapters_hashed(aset, na, step, rank, gpu_res, gpu_last, cpu_res, cpu_last, hkey,
                                            counts, max_loras, max_cpu, p)
        else:
            load_ms = _load_adapters(aset, na, step, rank, gpu_res, gpu_last, cpu_res, cpu_last, in_set,
                                     counts, max_loras, max_cpu, p)
        lora = 1.0 + p[4] * na + (p[5] * max_lora_rank if na > 0 else 0.0)
        fwd = ((p[0] + p[1] * ns + p[2] * n_pre_tok + p[3] * ctx / 1000.0) * lora + p[12] * na * max_lora_rank
               + p[14] * na * na)
        nwait = narr - ndrop - nrun - nfin
        dt = (fwd + p[6] + p[7] * nrun + p[8] * nwait + load_ms) / 1000.0
        t_end = t + dt
        stats[ST_BUSY_S] += dt
        stats[ST_FORWARD_S] += fwd / 1000.0
        if drop:  # arrivals during the step meet the client before this step's requests finish
            while narr < n and arr[narr] < min(t_end, duration):  # the window's arrivals only
                if sc_on:
                    next_sc, st_a, st_b = _scrapes_until(arr[narr], p, n_series, n_names, next_sc, st_a, st_b,
                                                         sc_stats)
                    if st_a <= arr[narr] < st_b:
                        break
                if narr - ndrop - nfin >= max_inflight:
                    status[narr] = DROPPED
                    ndrop += 1
                elif sc_on:
                    h_wait, m_wait = _count_step(adp[narr], wait_cnt, 1, zkey[n_adapters:], h_wait, m_wait)
                narr += 1
        # ---- 4. outputs: first tokens and finished requests at the step's end ----
        deliver = t_end
        if sc_on:
            next_sc, st_a, st_b = _scrapes_until(t_end, p, n_series, n_names, next_sc, st_a, st_b,
                                                 sc_stats)
            if st_a <= t_end < st_b and p[19] != 0.0:
                deliver = st_b
        for k in range(n_first):
            first_t[ev_first[k]] = deliver
        for k in range(n_fin):
            v = ev_fin[k]
            r = s_id[v]
            status[r] = FINISHED
            fin_t[r] = t_end
            gen[r] = s_ntok[v] - s_pin[v]
            free += s_blk[v]
            _active_remove(s_adp[v], run_cnt, act, act_pos)
            nfin += 1
            nrun -= 1
            if t_end <= duration:
                done_tokens += s_ntok[v]
            s_blk[v] = 0               # leave a hole
            s_end[v] = -1
            s_ntok[v] = 0
            s_comp[v] = 0
        if sc_on:
            if n_itl + n_first > 0:    # the gauge's label set of this step (after its finishes)
                h = h_wait
                m = m_wait + act[0]
                for k in range(act[0]):
                    h ^= zkey[act[k + 1]]
                q = narr               # requests sent during the step are waiting in the frontend
                while q < n and arr[q] < t_end:
                    a = adp[q]
                    if wait_cnt[a] == 0 and seen[a] != step:
                        seen[a] = step
                        h ^= zkey[n_adapters + a]
                        m += 1
                    q += 1
                n_before = n_series
                tab, n_series = _series_insert(tab, n_series, h)
                if n_series > n_before:
                    n_names += m
            if deliver > t_end:        # inside a stall: the tokens wait for its end
                if n_itl > 0:
                    if pend_n == 0:
                        pend_from = last_deliv
                    pend_n = max(pend_n, n_itl)
                    pend_to = deliver
                n_itl = 0
            else:
                if pend_n > 0:         # one gap per request across the last stall
                    itl_hist[_itl_bin(pend_to - pend_from)] += pend_n
                    pend_n = 0
                last_deliv = t_end
        if n_itl > 0:
            itl_hist[_itl_bin(dt)] += n_itl
        while nslot > 0 and s_end[nslot - 1] < 0:
            nslot -= 1
        if nslot - nrun > HOLES:
            k2 = 0
            for v in range(nslot):
                if s_end[v] >= 0:
                    if k2 != v:
                        s_id[k2] = s_id[v]
                        s_pin[k2] = s_pin[v]
                        s_ntok[k2] = s_ntok[v]
                        s_end[k2] = s_end[v]
                        s_comp[k2] = s_comp[v]
                        s_blk[k2] = s_blk[v]
                        s_adp[k2] = s_adp[v]
                    k2 += 1
            nslot = k2
        t = t_end
    for v in range(nslot):
        if s_end[v] >= 0:
            gen[s_id[v]] = s_ntok[v] - s_pin[v]
    stats[ST_STEPS] = step
    stats[ST_GPU_LOADS] = counts[2]
    stats[ST_DISK_LOADS] = counts[3]
    stats[ST_END_T] = t
    stats[ST_DROPPED] = ndrop
    if pend_n > 0:
        itl_hist[_itl_bin(pend_to - pend_from)] += pend_n
    stats[ST_SCRAPES] = sc_stats[0]
    stats[ST_STALL_S] = sc_stats[1]
    stats[ST_SERIES_SUM] = sc_stats[2]
    stats[ST_NAMES_SUM] = sc_stats[3]
    return first_t, fin_t, gen, status, stats, itl_hist, ts[:ts_i]
