"""Round counters and the round-duration histogram, kept by hand for the custom collector.

The exporter's collector builds every metric family afresh per scrape, so the counters
cannot be prometheus-client ``Counter`` objects registered elsewhere; they are plain numbers
behind a lock, read as one consistent :class:`RoundStatsView`.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from dataclasses import dataclass, field

ROUND_DURATION_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""Upper bounds (seconds) of the round-duration histogram; +Inf is implied."""


@dataclass(frozen=True, slots=True)
class RoundStatsView:
    rounds_total: int
    failures_total: int
    bucket_bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]
    """Cumulative count per bound, then the +Inf bucket (== observations)."""
    duration_sum: float
    last_success_at: float | None


@dataclass(slots=True)
class RoundStats:
    """How many rounds ran, how many failed, how long they took."""

    bounds: tuple[float, ...] = ROUND_DURATION_BUCKETS
    _rounds: int = 0
    _failures: int = 0
    _per_bucket: list[int] = field(default_factory=list)
    _duration_sum: float = 0.0
    _last_success_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)) or not self.bounds:
            raise ValueError("histogram bounds must be distinct and increasing")
        self._per_bucket = [0] * (len(self.bounds) + 1)

    def record(self, ok: bool, duration_s: float, finished_at: float | None = None) -> None:
        """Count a round; a negative or non-finite duration is counted as 0 s."""
        duration = duration_s if math.isfinite(duration_s) and duration_s > 0 else 0.0
        slot = bisect.bisect_left(self.bounds, duration)
        with self._lock:
            self._rounds += 1
            self._per_bucket[slot] += 1
            self._duration_sum += duration
            if ok:
                self._last_success_at = time.time() if finished_at is None else finished_at
            else:
                self._failures += 1

    def view(self) -> RoundStatsView:
        with self._lock:
            per_bucket = list(self._per_bucket)
            rounds, failures = self._rounds, self._failures
            duration_sum, last_success = self._duration_sum, self._last_success_at
        cumulative: list[int] = []
        running = 0
        for count in per_bucket:
            running += count
            cumulative.append(running)
        return RoundStatsView(
            rounds_total=rounds,
            failures_total=failures,
            bucket_bounds=self.bounds,
            bucket_counts=tuple(cumulative),
            duration_sum=duration_sum,
            last_success_at=last_success,
        )
