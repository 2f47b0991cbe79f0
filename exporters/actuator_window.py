"""Time windows for the actuator: when (local wall-clock time) moves may be started.

A window is ``"HH:MM-HH:MM"`` (start inclusive, end exclusive, ``24:00`` allowed as an end);
a window whose end is earlier than its start crosses midnight (``"22:00-06:00"`` is 22:00 to
06:00 the next morning). No windows at all means "any time". Only the *start* of a move is
gated: a migration started inside a window is allowed to finish after it closes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
DAY_SECONDS = 24 * 3600


def _seconds(hours: str, minutes: str, text: str, *, end: bool) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and (m != 0 or not end)):
        raise ValueError(f"invalid time in window {text!r}")
    return h * 3600 + m * 60


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """One daily window, as seconds since local midnight."""

    start: int
    end: int
    text: str

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        """Parse ``"HH:MM-HH:MM"``; raises ValueError for bad syntax or an empty window."""
        match = _WINDOW.match(text)
        if match is None:
            raise ValueError(f"invalid time window {text!r}, expected HH:MM-HH:MM")
        start = _seconds(match[1], match[2], text, end=False)
        end = _seconds(match[3], match[4], text, end=True)
        if start == end:
            raise ValueError(f"empty time window {text!r} (use 00:00-24:00 for all day)")
        return cls(start, end, text.strip())

    def contains(self, moment: datetime) -> bool:
        """Whether the wall-clock time of ``moment`` lies inside this window."""
        t = moment.hour * 3600 + moment.minute * 60 + moment.second
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


def parse_windows(texts: Iterable[str]) -> tuple[TimeWindow, ...]:
    """Parse every window; raises ValueError naming the first bad one."""
    return tuple(TimeWindow.parse(text) for text in texts)


def within_windows(windows: Iterable[TimeWindow], moment: datetime) -> bool:
    """True when ``moment`` lies in any window, or when there are no windows."""
    windows = tuple(windows)
    return not windows or any(w.contains(moment) for w in windows)
