"""Time windows: parsing, plain windows, windows crossing midnight."""

from __future__ import annotations

from datetime import datetime

import pytest

from exporters.actuator_window import TimeWindow, parse_windows, within_windows


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, 25, hour, minute, second)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (at(21, 59, 59), False),
        (at(22, 0), True),
        (at(23, 59, 59), True),
        (at(0, 0), True),
        (at(3, 30), True),
        (at(5, 59, 59), True),
        (at(6, 0), False),
        (at(12, 0), False),
    ],
)
def test_window_crossing_midnight(moment, inside):
    assert TimeWindow.parse("22:00-06:00").contains(moment) is inside


@pytest.mark.parametrize(
    ("moment", "inside"),
    [(at(8, 59), False), (at(9, 0), True), (at(16, 59, 59), True), (at(17, 0), False)],
)
def test_window_within_one_day(moment, inside):
    assert TimeWindow.parse("09:00-17:00").contains(moment) is inside


def test_whole_day_window_and_24_00_end():
    assert TimeWindow.parse("00:00-24:00").contains(at(23, 59, 59))
    assert TimeWindow.parse("00:00-24:00").contains(at(0, 0))
    late = TimeWindow.parse("20:00-24:00")
    assert late.contains(at(23, 0))
    assert not late.contains(at(0, 30))


def test_several_windows_and_no_window():
    windows = parse_windows(["01:00-02:00", " 13:00 - 14:00 "])
    assert within_windows(windows, at(1, 30))
    assert within_windows(windows, at(13, 0))
    assert not within_windows(windows, at(12, 0))
    assert within_windows((), at(12, 0))


def test_timezone_aware_moment_uses_its_wall_clock():
    from datetime import timedelta, timezone

    moment = datetime(2026, 11, 25, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert TimeWindow.parse("22:00-06:00").contains(moment)


@pytest.mark.parametrize(
    "text", ["", "22:00", "22-06", "25:00-06:00", "22:60-06:00", "24:00-06:00", "06:00-06:00",
             "24:30-06:00", "22:00-24:01"],
)  # fmt: skip
def test_invalid_windows_are_refused(text):
    with pytest.raises(ValueError, match="window"):
        TimeWindow.parse(text)
