"""A summary of an instance: counts by rank, rate statistics, offered load (what ``placer show`` prints)."""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.lengths import SHAREGPT_PROMPT_MEAN, sharegpt_output_mean
from twin.spec import Instance, Lengths
from twin.traces import load_trace


def mean_lengths(lengths: Lengths, model: str, output_scale: float = 1.0) -> tuple[float, float]:
    """Expected (prompt, output) tokens per request for a length distribution (normal: before clipping).

    ``output_scale`` is the profile's EOS shortfall (:attr:`twin.profile.Profile.output_scale`): the ShareGPT
    law's outputs are reference lengths, and the model stops that much earlier on average, as in the twin.
    """
    if lengths.kind == "sharegpt":
        return SHAREGPT_PROMPT_MEAN, sharegpt_output_mean(model, output_scale)
    if lengths.kind == "trace":
        tr = load_trace(str(lengths.trace))
        return float(tr.input_tokens.mean()), float(tr.output_tokens.mean())
    return float(lengths.input_mean or 0.0), float(lengths.output_mean or 0.0)


def instance_summary(instance: Instance) -> dict[str, Any]:
    """Counts and rates by rank, rate statistics, expected lengths and offered load (tok/s) of ``instance``.

    offered_tok_s = total rate × (mean prompt + mean output tokens), the papers' offered load in expectation,
    with the generated output lengths of the instance's (model, GPU) profile (what the twin offers).
    """
    import warnings

    from twin.catalogue import load_profile

    with warnings.catch_warnings():  # an uncalibrated profile is flagged by the commands that simulate
        warnings.simplefilter("ignore")
        output_scale = load_profile(instance.model, instance.gpu).output_scale
    ranks, rates = instance.ranks, instance.rates
    by_rank = {int(r): {"adapters": int((ranks == r).sum()), "rate_rps": float(rates[ranks == r].sum())}
               for r in np.unique(ranks)}
    w = instance.workload
    mean_in, mean_out = mean_lengths(w.lengths, instance.model, output_scale)
    total = float(rates.sum())
    lengths = w.lengths.kind if w.lengths.kind != "trace" else f"trace {w.lengths.trace}"
    return {
        "name": instance.name, "model": instance.model, "gpu": instance.gpu,
        "adapters": instance.n_adapters, "by_rank": by_rank,
        "rate_rps": {"total": total, "min": float(rates.min()), "median": float(np.median(rates)),
                     "mean": float(rates.mean()), "max": float(rates.max())},
        "arrival": w.arrival, "duration_s": float(w.duration_s), "lengths": lengths,
        "mean_input_tokens": mean_in, "mean_output_tokens": mean_out,
        "expected_requests": total * float(w.duration_s),
        "offered_tok_s": total * (mean_in + mean_out),
        "slo": instance.slo.to_dict(), "criterion": instance.slo.describe(),
    }
