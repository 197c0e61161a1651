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

    forward = (p0 + p1*S + p2*P + p3*C/1000) * (1 + p4*A + p5*R*[A > 0])
    step    = forward + p6 + p7*B + p8*W + sum over adapter loads (p9 + p10*rank + p11*[host-cache miss])

S scheduled sequences, P prefill tokens (all new tokens of sequences that are not a plain decode), C context
tokens read (sum over scheduled sequences of computed + new tokens), A distinct adapters in the batch,
R = max_lora_rank, B running and W waiting requests after scheduling.
"""

from __future__ import annotations

import numpy as np
from numba import njit

FRESH = 0      # arrived (or not yet) and never admitted
RUNNING = 1
PREEMPTED = 2  # back in the waiting queue after a preemption
FINISHED = 3

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
N_STATS = 7


@njit(cache=True)
def _load_adapters(batch, nb, step, rank, gpu_res, gpu_last, cpu_res, cpu_last, in_batch_stamp,
                   counts, max_loras, max_cpu, p):
    """Make every adapter of the batch GPU-resident (LRU slots, host LRU cache); return the load time (ms)."""
    ms = 0.0
    for k in range(nb):
        a = batch[k]
        if not cpu_res[a]:  # host-cache miss: load from disk, evicting the LRU adapter not in this batch
            if counts[1] >= max_cpu:
                victim = -1
                best = np.int64(1) << 62
                for b in range(cpu_res.shape[0]):
                    if cpu_res[b] and in_batch_stamp[b] != step and cpu_last[b] < best:
                        best = cpu_last[b]
                        victim = b
                cpu_res[victim] = False
                counts[1] -= 1
                if gpu_res[victim]:
                    gpu_res[victim] = False
                    counts[0] -= 1
            cpu_res[a] = True
            counts[1] += 1
            counts[3] += 1
            ms += p[11]
        cpu_last[a] = step
        if not gpu_res[a]:
            if counts[0] >= max_loras:
                victim = -1
                best = np.int64(1) << 62
                for b in range(gpu_res.shape[0]):
                    if gpu_res[b] and in_batch_stamp[b] != step and gpu_last[b] < best:
                        best = gpu_last[b]
                        victim = b
                gpu_res[victim] = False
                counts[0] -= 1
            gpu_res[a] = True
            counts[0] += 1
            counts[2] += 1
            ms += p[9] + p[10] * rank[a]
        gpu_last[a] = step
    return ms


@njit(cache=True)
def run_core(arr, adp, pin, pout, rank, n_adapters, max_loras, max_cpu, max_lora_rank, budget_max,
             max_seqs, kv_blocks, block_size, p, duration, ts_dt, preload_cpu):
    """Simulate [0, duration); return per-request times, counters, the ITL histogram and a time series."""
    n = arr.shape[0]
    status = np.zeros(n, np.int8)
    gen = np.zeros(n, np.int64)        # output tokens generated so far (kept across preemptions)
    comp = np.zeros(n, np.int64)       # num_computed_tokens
    blocks = np.zeros(n, np.int64)     # KV blocks held
    first_t = np.full(n, np.inf)
    fin_t = np.full(n, np.inf)

    # per-adapter arrival lists: order[ad_start[a]:ad_end[a]] are a's requests in arrival order
    order = np.argsort(adp, kind="mergesort")
    ad_start = np.zeros(n_adapters, np.int64)
    ad_end = np.zeros(n_adapters, np.int64)
    cnt = np.zeros(n_adapters, np.int64)
    for i in range(n):
        cnt[adp[i]] += 1
    s = 0
    for a in range(n_adapters):
        ad_start[a] = s
        s += cnt[a]
        ad_end[a] = s
    ad_ptr = ad_start.copy()           # next never-admitted request of each adapter

    run = np.empty(max_seqs + 1, np.int64)
    nrun = 0
    pstack = np.empty(16, np.int64)    # preempted waiting requests; the queue front is pstack[npre-1]
    npre = 0
    gptr = 0                           # first possibly-fresh request in arrival order
    narr = 0                           # requests with arrival <= t
    nfin = 0

    sched = np.empty(max_seqs + 1, np.int64)
    snew = np.empty(max_seqs + 1, np.int64)
    sdec = np.empty(max_seqs + 1, np.bool_)
    aset = np.empty(n_adapters, np.int64)
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

    free = kv_blocks
    t = 0.0
    step = 0
    while True:
        while narr < n and arr[narr] <= t:
            narr += 1
        if t >= duration:
            break
        nwait = narr - nrun - nfin
        if nrun == 0 and nwait == 0:
            if narr >= n or arr[narr] >= duration:
                break
            t = arr[narr]
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
        ns = 0
        na = 0
        preempted = False
        # ---- 1. running requests ----
        i = 0
        while i < nrun and budget > 0:
            r = run[i]
            num_tokens = pin[r] + gen[r]
            new = min(num_tokens - comp[r], budget)
            ok = True
            while True:
                need = (comp[r] + new + block_size - 1) // block_size - blocks[r]
                if need <= free:
                    free -= need
                    blocks[r] += need
                    break
                v = run[nrun - 1]
                nrun -= 1
                free += blocks[v]
                blocks[v] = 0
                comp[v] = 0
                status[v] = PREEMPTED
                if npre == pstack.shape[0]:
                    bigger = np.empty(2 * npre, np.int64)
                    bigger[:npre] = pstack[:npre]
                    pstack = bigger
                pstack[npre] = v
                npre += 1
                stats[ST_PREEMPTIONS] += 1
                preempted = True
                if v == r:
                    ok = False
                    break
            if not ok:
                break
            sched[ns] = r
            snew[ns] = new
            sdec[ns] = gen[r] > 0 and comp[r] == num_tokens - 1
            ns += 1
            a = adp[r]
            if in_set[a] != step:
                in_set[a] = step
                aset[na] = a
                na += 1
            budget -= new
            i += 1
        # ---- 2. waiting queue (FCFS with the max_loras skip) ----
        if not preempted:
            j = npre - 1          # cursor in the preempted part
            removed_pre = False
            while budget > 0 and nrun < max_seqs:
                r = -1
                while j >= 0:     # preempted requests come first
                    c = pstack[j]
                    j -= 1
                    if na < max_loras or in_set[adp[c]] == step:
                        r = c
                        break
                if r < 0:
                    if na < max_loras:   # unrestricted: the oldest never-admitted request
                        while gptr < narr and status[gptr] != FRESH:
                            gptr += 1
                        if gptr < narr:
                            r = gptr
                    else:                # restricted to the step's adapters: oldest head among them
                        best = narr
                        for k in range(na):
                            a = aset[k]
                            q = ad_ptr[a]
                            if q < ad_end[a] and order[q] < best:
                                best = order[q]
                        if best < narr:
                            r = best
                if r < 0:
                    break
                num_tokens = pin[r] + gen[r]
                new = min(num_tokens, budget)
                need = (new + block_size - 1) // block_size
                if need > free:
                    break
                if status[r] == PREEMPTED:
                    removed_pre = True
                else:
                    ad_ptr[adp[r]] += 1
                status[r] = RUNNING
                free -= need
                blocks[r] = need
                comp[r] = 0
                run[nrun] = r
                nrun += 1
                sched[ns] = r
                snew[ns] = new
                sdec[ns] = False
                ns += 1
                a = adp[r]
                if in_set[a] != step:
                    in_set[a] = step
                    aset[na] = a
                    na += 1
                budget -= new
            if removed_pre:
                k2 = 0
                for k in range(npre):
                    if status[pstack[k]] == PREEMPTED:
                        pstack[k2] = pstack[k]
                        k2 += 1
                npre = k2
        if ns == 0:
            if preempted:
                continue          # the preempted requests are re-admitted in the next step
            stats[ST_STALLED] = 1  # a lone request that can never fit: stop rather than spin
            break
        # ---- 3. step time ----
        n_pre_tok = 0
        ctx = 0
        for k in range(ns):
            r = sched[k]
            ctx += comp[r] + snew[k]
            if not sdec[k]:
                n_pre_tok += snew[k]
        load_ms = _load_adapters(aset, na, step, rank, gpu_res, gpu_last, cpu_res, cpu_last, in_set,
                                 counts, max_loras, max_cpu, p)
        lora = 1.0 + p[4] * na + (p[5] * max_lora_rank if na > 0 else 0.0)
        fwd = (p[0] + p[1] * ns + p[2] * n_pre_tok + p[3] * ctx / 1000.0) * lora
        nwait = narr - nrun - nfin
        dt = (fwd + p[6] + p[7] * nrun + p[8] * nwait + load_ms) / 1000.0
        t_end = t + dt
        stats[ST_BUSY_S] += dt
        # ---- 4. outputs ----
        n_itl = 0
        any_fin = False
        for k in range(ns):
            r = sched[k]
            comp[r] += snew[k]
            if comp[r] == pin[r] + gen[r]:
                gen[r] += 1
                if gen[r] == 1:
                    first_t[r] = t_end
                elif sdec[k]:
                    n_itl += 1
                if gen[r] >= pout[r]:
                    status[r] = FINISHED
                    fin_t[r] = t_end
                    free += blocks[r]
                    blocks[r] = 0
                    nfin += 1
                    any_fin = True
                    if t_end <= duration:
                        done_tokens += pin[r] + pout[r]
        if n_itl > 0:
            b = int((np.log10(dt) - ITL_LO) / (ITL_HI - ITL_LO) * ITL_BINS)
            b = min(max(b, 0), ITL_BINS - 1)
            itl_hist[b] += n_itl
        if any_fin:
            k2 = 0
            for k in range(nrun):
                if status[run[k]] == RUNNING:
                    run[k2] = run[k]
                    k2 += 1
            nrun = k2
        t = t_end
    stats[ST_STEPS] = step
    stats[ST_GPU_LOADS] = counts[2]
    stats[ST_DISK_LOADS] = counts[3]
    stats[ST_END_T] = t
    return first_t, fin_t, gen, status, stats, itl_hist, ts[:ts_i]
