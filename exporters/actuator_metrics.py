"""Migration counters the actuator increments, exported per guest type.

Kept apart from the round counters because a different component (the actuator) drives
them, possibly from its own thread. ``qemu`` and ``lxc`` always exist, at 0 until used, so
``rate()`` and ``increase()`` work from the first scrape.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal, get_args

MigrationOutcome = Literal["started", "succeeded", "failed"]
MIGRATION_OUTCOMES: tuple[MigrationOutcome, ...] = get_args(MigrationOutcome)
GUEST_TYPES = ("qemu", "lxc")


@dataclass(slots=True)
class MigrationCounters:
    """Counts of migrations started, succeeded and failed, by guest type."""

    _counts: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for guest_type in GUEST_TYPES:
            for outcome in MIGRATION_OUTCOMES:
                self._counts.setdefault((outcome, guest_type), 0)

    def record(self, guest_type: str, outcome: MigrationOutcome) -> None:
        """Count one event; raises ValueError for an unknown type or outcome."""
        if guest_type not in GUEST_TYPES:
            raise ValueError(f"unknown guest type {guest_type!r}, expected one of {GUEST_TYPES}")
        if outcome not in MIGRATION_OUTCOMES:
            raise ValueError(f"unknown migration outcome {outcome!r}")
        with self._lock:
            self._counts[(outcome, guest_type)] += 1

    def view(self) -> dict[tuple[str, str], int]:
        """A copy of the counts keyed (outcome, guest type)."""
        with self._lock:
            return dict(self._counts)
