"""surrogate: CatBoost models of per-GPU throughput and starvation, trained on twin sweeps."""

__all__: list[str] = []
