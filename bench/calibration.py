"""How fast the shared reference machine runs Python right now: a calibration for the figures.

The vCPUs of the reference machine change speed by up to 2x from one minute to the next with
nothing else running, so benchmark figures are comparable only at a similar calibration; the
benchmarks print it beside their results.
"""

from __future__ import annotations

import time


def python_speed_ms() -> float:
    """Time of a fixed piece of pure-Python text work (20,000 ``key: value`` lines split,
    stripped and stored), in milliseconds: smaller is faster."""
    lines = [f"key{i % 40}: value {i}" for i in range(20_000)]
    started = time.perf_counter()
    table: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        table[key] = value.strip()
    return (time.perf_counter() - started) * 1000
