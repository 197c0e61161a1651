"""Fitting twin profiles to measured runs: run records, the step and memory fits, replay, and the
real-serving harness (vLLM, an optional extra)."""
