"""A deterministic stand-in for ``twin.simulate`` used by the surrogate tests (importable by pool workers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FakeResult:
    throughput_tok_s: float
    offered_tok_s: float
    expected_offered_tok_s: float
    starved: bool
    oom: bool
    completed: int
    arrived: int
    wall_s: float

    def to_dict(self, per_adapter: bool = True) -> dict[str, Any]:
        return asdict(self)


def fake_simulate(instance: Any, *, max_loras: int, max_cpu_loras: int | None = None,
                  max_lora_rank: int | None = None, seed: int = 0, **_: Any) -> FakeResult:
    """Throughput = min(offered, a capacity that falls with few slots per adapter); no randomness."""
    offered = instance.total_rate_rps * 420.0
    n = instance.n_adapters
    capacity = 9000.0 * min(1.0, (max_loras / n) ** 0.5) * (1.0 - 0.001 * (max_lora_rank or 8))
    thr = min(offered, capacity) * (1.0 - 0.01 * ((seed % 7) / 7.0))
    arrived = int(instance.total_rate_rps * instance.workload.duration_s)
    return FakeResult(thr, offered, offered, thr < 0.9 * offered, False, arrived, arrived, 0.0)


class CrashAfter:
    """A simulator that works ``limit`` times, then raises KeyboardInterrupt (a crash mid-sweep)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.calls = 0

    def __call__(self, instance: Any, **kwargs: Any) -> FakeResult:
        if self.limit is not None and self.calls >= self.limit:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        return fake_simulate(instance, **kwargs)
