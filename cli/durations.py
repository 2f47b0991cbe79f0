"""Durations written the way admins write them: ``90``, ``30s``, ``10m``, ``1h``, ``2d``, ``1w``."""

from __future__ import annotations

import re

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError naming the text when it is not a duration."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90, 30s, 10m, 1h, 2d)")
    return float(match.group(1)) * _UNITS[match.group(2)]
