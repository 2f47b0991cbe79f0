"""collector.rrd against files written by the rrdtool command line (tests/rrd_helpers.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from collector import rrd_fast
from collector.rrd import _STEP_COLUMN as STEP_COLUMN
from collector.rrd import _join_generations as join_generations
from collector.rrd import choose_resolution, list_ids, read_series
from collector.series import conform, frame_schema
from model.rrd_schema import GUEST_9, GUEST_OLD, NODE_9, NODE_OLD, STORAGE_9
from tests.rrd_helpers import create_rrd, layout_of, minutes, rrd_path, write_series

NOW = 1_767_225_600  # 2026-01-01 00:00 UTC: a multiple of every archive resolution but weeks
GIB = 1024**3
HOUR = 3600
DAY = 86400


def guest_rows(times: list[int], **fixed: float | None) -> list[dict[str, float | None]]:
    """A running 4-vCPU guest at 25 % cpu; network counters rise 6000 B and 3000 B a minute."""
    base: dict[str, float | None] = {
        "maxcpu": 4,
        "cpu": 0.25,
        "maxmem": 8 * GIB,
        "mem": 2 * GIB,
        "maxdisk": 32 * GIB,
        "disk": 0,
        "memhost": 3 * GIB,
        "pressurecpusome": 1.5,
    }
    base.update(fixed)
    rows = []
    for index, _ in enumerate(times):
        row = dict(base)
        row["netin"] = 6000 * index
        row["netout"] = 3000 * index
        row["diskread"] = 0
        row["diskwrite"] = 120 * index
        rows.append(row)
    return rows


def values(frame: pl.DataFrame, ident: str, column: str) -> list[float | None]:
    return frame.filter(pl.col("id") == ident)[column].to_list()


def test_guest_values_cores_bytes_and_rates(tmp_path: Path) -> None:
    times = minutes(NOW - 2 * HOUR, NOW)
    write_series(tmp_path, "guest", "100", times, guest_rows(times))

    read = read_series(tmp_path, "guest", ["100"], NOW - HOUR, NOW)

    frame = read.frame
    assert read.findings == []
    assert read.found_ids == {"100"}
    assert frame.schema == pl.Schema(frame_schema("guest"))
    assert frame.columns[2:] == list(GUEST_9.ds)
    assert frame["time"].to_list() == minutes(NOW - HOUR + 60, NOW)
    assert frame["cpu"].to_list() == pytest.approx([0.25 * 4] * 60)
    assert frame["maxcpu"].to_list() == pytest.approx([4.0] * 60)
    assert frame["mem"].to_list() == pytest.approx([2.0 * GIB] * 60)
    assert frame["memhost"].to_list() == pytest.approx([3.0 * GIB] * 60)
    assert frame["netin"].to_list() == pytest.approx([6000 / 60] * 60)
    assert frame["netout"].to_list() == pytest.approx([3000 / 60] * 60)
    assert frame["diskwrite"].to_list() == pytest.approx([120 / 60] * 60)
    assert frame["diskread"].to_list() == pytest.approx([0.0] * 60)
    assert frame["pressureiofull"].null_count() == 60


def test_stopped_guest_has_nulls_not_zeros(tmp_path: Path) -> None:
    times = minutes(NOW - HOUR, NOW)
    write_series(tmp_path, "guest", "101", times, guest_rows(times, cpu=None, mem=None))

    frame = read_series(tmp_path, "guest", ["101"], NOW - 30 * 60, NOW).frame

    assert frame.height == 30
    assert frame["cpu"].null_count() == 30
    assert frame["mem"].null_count() == 30
    assert frame["maxmem"].to_list() == pytest.approx([8.0 * GIB] * 30)


def test_node_cpu_in_cores_and_storage_ids(tmp_path: Path) -> None:
    times = minutes(NOW - HOUR, NOW)
    node_row = {"maxcpu": 16, "cpu": 0.5, "memtotal": 64 * GIB, "memused": 40 * GIB}
    write_series(tmp_path, "node", "pve1", times, node_row)
    write_series(tmp_path, "storage", "pve1/local", times, {"total": 100 * GIB, "used": 25 * GIB})
    write_series(tmp_path, "storage", "pve2/ceph", times, {"total": 900 * GIB, "used": 1 * GIB})

    nodes = read_series(tmp_path, "node", None, NOW - 10 * 60, NOW).frame
    storages = read_series(tmp_path, "storage", None, NOW - 10 * 60, NOW).frame

    assert nodes.columns[2:] == list(NODE_9.ds)
    assert nodes["cpu"].to_list() == pytest.approx([8.0] * 10)
    assert nodes["memused"].to_list() == pytest.approx([40.0 * GIB] * 10)
    assert storages.columns == ["id", "time", *STORAGE_9.ds]
    assert storages["id"].unique(maintain_order=True).to_list() == ["pve1/local", "pve2/ceph"]
    assert values(storages, "pve1/local", "used") == pytest.approx([25.0 * GIB] * 10)
    assert list_ids(tmp_path, "storage") == {"pve1/local", "pve2/ceph"}


def test_list_ids_covers_both_generations(tmp_path: Path) -> None:
    create_rrd(rrd_path(tmp_path, "guest", "100"), GUEST_9, NOW)
    create_rrd(rrd_path(tmp_path, "guest", "100", "pve2"), GUEST_OLD, NOW)
    create_rrd(rrd_path(tmp_path, "guest", "205", "pve2"), GUEST_OLD, NOW)

    assert list_ids(tmp_path, "guest") == {"100", "205"}
    assert list_ids(tmp_path, "node") == set()


def test_old_and_new_files_join(tmp_path: Path) -> None:
    old_times = minutes(NOW - 2 * HOUR, NOW - 50 * 60)
    new_times = minutes(NOW - HOUR, NOW)
    write_series(tmp_path, "guest", "100", old_times, guest_rows(old_times, mem=1 * GIB), "pve2")
    write_series(tmp_path, "guest", "100", new_times, guest_rows(new_times, mem=5 * GIB))
    old_only = minutes(NOW - HOUR, NOW)
    write_series(tmp_path, "guest", "300", old_only, guest_rows(old_only, cpu=0.5), "pve2")

    read = read_series(tmp_path, "guest", None, NOW - 90 * 60, NOW)

    frame = read.frame
    assert read.findings == []
    assert read.found_ids == {"100", "300"}
    joined = frame.filter(pl.col("id") == "100")
    assert joined["time"].to_list() == minutes(NOW - 90 * 60 + 60, NOW)
    before = joined.filter(pl.col("time") < NOW - HOUR)
    after = joined.filter(pl.col("time") >= NOW - HOUR)
    # Old file alone before the new one starts; the new file wins where both know a value.
    assert before["mem"].to_list() == pytest.approx([1.0 * GIB] * 29)
    assert after["mem"].to_list() == pytest.approx([5.0 * GIB] * 61)
    assert before["cpu"].to_list() == pytest.approx([1.0] * 29)
    # memhost exists only in the 9.0 layout.
    assert before["memhost"].null_count() == 29
    assert after["memhost"].to_list() == pytest.approx([3.0 * GIB] * 61)
    # An old-only id is read as librrd answers: its 70 one-minute rows cannot cover 90
    # minutes, so it comes from the 30-minute archive (the first one under half known).
    assert values(frame, "300", "time") == [NOW - HOUR, NOW - 1800, NOW]
    assert values(frame, "300", "cpu") == [None, pytest.approx(2.0), pytest.approx(2.0)]


def test_coarser_old_rows_are_spread_over_the_new_grid(tmp_path: Path) -> None:
    # The old file stopped 3 h ago: its 70 one-minute rows cannot cover a 5-hour window,
    # so librrd answers from its 30-minute archive, which must land on the 1-minute grid.
    old_times = minutes(NOW - 8 * HOUR, NOW - 3 * HOUR)
    new_times = minutes(NOW - 3 * HOUR + 60, NOW)
    write_series(tmp_path, "guest", "100", old_times, guest_rows(old_times, mem=1 * GIB), "pve2")
    write_series(tmp_path, "guest", "100", new_times, guest_rows(new_times, mem=5 * GIB))

    frame = read_series(tmp_path, "guest", ["100"], NOW - 5 * HOUR, NOW).frame

    assert frame["time"].to_list() == minutes(NOW - 5 * HOUR + 60, NOW)
    old_part = frame.filter(pl.col("time") <= NOW - 3 * HOUR)
    assert old_part.height == 120
    assert old_part["mem"].to_list() == pytest.approx([1.0 * GIB] * 120)
    assert old_part["cpu"].to_list() == pytest.approx([1.0] * 120)
    assert frame.filter(pl.col("time") > NOW - 3 * HOUR)["mem"].to_list() == pytest.approx(
        [5.0 * GIB] * 180
    )


def spiky_node_rows(times: list[int]) -> list[dict[str, float | None]]:
    """10 % cpu, except one minute at 90 % in every half hour."""
    return [
        {"maxcpu": 10, "cpu": 0.9 if time % 1800 == 0 else 0.1, "memtotal": 8 * GIB}
        for time in times
    ]


def test_three_day_window_reads_half_hour_rows_max_versus_average(tmp_path: Path) -> None:
    times = minutes(NOW - 3 * DAY - HOUR, NOW)
    write_series(tmp_path, "node", "pve1", times, spiky_node_rows(times))

    average = read_series(tmp_path, "node", ["pve1"], NOW - 3 * DAY, NOW).frame
    peak = read_series(tmp_path, "node", ["pve1"], NOW - 3 * DAY, NOW, cf="MAX").frame

    assert average["time"].to_list() == list(range(NOW - 3 * DAY + 1800, NOW + 1, 1800))
    assert average["cpu"].to_list() == pytest.approx([(29 * 1.0 + 9.0) / 30] * 144)
    assert peak["cpu"].to_list() == pytest.approx([9.0] * 144)


def test_explicit_resolution_and_day_window(tmp_path: Path) -> None:
    times = minutes(NOW - 2 * HOUR, NOW)
    write_series(tmp_path, "node", "pve1", times, spiky_node_rows(times))

    minute_rows = read_series(tmp_path, "node", ["pve1"], NOW - HOUR, NOW).frame
    half_hours = read_series(tmp_path, "node", ["pve1"], NOW - HOUR, NOW, resolution=1800).frame

    assert minute_rows.height == 60
    assert sorted(set(minute_rows["cpu"].to_list())) == pytest.approx([1.0, 9.0])
    assert half_hours["time"].to_list() == [NOW - 1800, NOW]
    assert half_hours["cpu"].to_list() == pytest.approx([(29 * 1.0 + 9.0) / 30] * 2)


@pytest.mark.parametrize(
    ("layout", "age", "expected"),
    [
        (NODE_9, HOUR, 60),
        (NODE_9, 3 * DAY, 1800),
        (NODE_9, 60 * DAY, 21600),
        (NODE_9, 2 * 365 * DAY, 604800),
        (NODE_OLD, HOUR, 60),
        (NODE_OLD, 2 * HOUR, 1800),
        (NODE_OLD, 3 * DAY, 10800),
        (NODE_OLD, 20 * DAY, 43200),
        (NODE_OLD, 100 * DAY, 604800),
    ],
)
def test_archive_choice(layout, age, expected) -> None:
    assert choose_resolution(layout, NOW - age, NOW) == expected


def test_bad_inputs_become_findings_and_the_rest_is_read(tmp_path: Path) -> None:
    times = minutes(NOW - HOUR, NOW)
    good = write_series(tmp_path, "guest", "100", times, guest_rows(times))
    truncated = rrd_path(tmp_path, "guest", "101")
    shutil.copy(good, truncated)
    with truncated.open("r+b") as handle:
        handle.truncate(truncated.stat().st_size // 2)
    text = rrd_path(tmp_path, "guest", "102")
    text.write_text("not an rrd\n")
    foreign = rrd_path(tmp_path, "guest", "103")
    node_times = minutes(NOW - HOUR, NOW)
    write_series(tmp_path, "node", "x", node_times, {"maxcpu": 2, "cpu": 0.5})
    shutil.copy(rrd_path(tmp_path, "node", "x"), foreign)
    write_series(tmp_path, "guest", "104", times, {})
    stale_times = minutes(NOW - HOUR, NOW - 30 * 60)
    write_series(tmp_path, "guest", "105", stale_times, guest_rows(stale_times))
    alien = tmp_path / "alien.rrd"
    create_rrd(alien, layout_of("storage"), NOW - HOUR)
    shutil.copy(alien, rrd_path(tmp_path, "guest", "106"))

    ids = ["100", "101", "102", "103", "104", "105", "106", "999"]
    read = read_series(tmp_path, "guest", ids, NOW - 10 * 60, NOW)

    by_kind = {(f.kind, f.where): f for f in read.findings}
    assert set(by_kind) == {
        ("rrd-unreadable", str(truncated)),
        ("rrd-unreadable", str(text)),
        ("rrd-schema", str(foreign)),
        ("rrd-schema", str(rrd_path(tmp_path, "guest", "106"))),
        ("rrd-all-unknown", "guest 104"),
        ("rrd-stale", "guest 105"),
        ("rrd-missing", "guest 999"),
    }
    assert by_kind["rrd-unreadable", str(text)].severity == "error"
    assert by_kind["rrd-schema", str(foreign)].severity == "warning"
    assert "memhost" in by_kind["rrd-schema", str(foreign)].message
    assert by_kind["rrd-schema", str(rrd_path(tmp_path, "guest", "106"))].severity == "error"
    assert read.found_ids == {"100", "103", "104", "105"}
    assert values(read.frame, "100", "cpu") == pytest.approx([1.0] * 10)
    # The node file in the guest directory is read by DS name: cpu and maxcpu match.
    assert values(read.frame, "103", "cpu") == pytest.approx([1.0] * 10)
    assert read.frame.filter(pl.col("id") == "103")["maxmem"].null_count() == 10


def test_historic_window_is_not_stale_and_bad_windows_raise(tmp_path: Path) -> None:
    times = minutes(NOW - 2 * HOUR, NOW - HOUR)
    write_series(tmp_path, "guest", "100", times, guest_rows(times))

    read = read_series(tmp_path, "guest", ["100"], NOW - 2 * HOUR, NOW - HOUR - 600, now=NOW)

    assert read.findings == []
    assert read.frame.height == 50
    with pytest.raises(ValueError, match="before its start"):
        read_series(tmp_path, "guest", None, NOW, NOW - 1)
    with pytest.raises(ValueError, match="resolution"):
        read_series(tmp_path, "guest", None, NOW - 1, NOW, resolution=0)


def test_empty_root_gives_empty_frame(tmp_path: Path) -> None:
    read = read_series(tmp_path, "node", None, NOW - HOUR, NOW)

    assert read.frame.is_empty()
    assert read.frame.schema == pl.Schema(frame_schema("node"))
    assert read.findings == []
    assert read.found_ids == set()


@pytest.mark.parametrize(("cf", "expected"), [("AVERAGE", [15.5, 45.5]), ("MAX", [30.0, 60.0])])
def test_finer_old_rows_are_consolidated_onto_the_new_grid(cf, expected) -> None:
    # Old 1-minute rows 1..60 (as cores) meet a current file read at 30-minute rows.
    current = conform(
        pl.DataFrame({"id": ["100", "100"], "time": [NOW - 1800, NOW], "maxmem": [8.0, 8.0]}),
        "guest",
    ).with_columns(pl.lit(1800, pl.Int64).alias(STEP_COLUMN))
    old_times = minutes(NOW - 1800 - 1740, NOW)
    old = conform(
        pl.DataFrame(
            {"id": ["100"] * 60, "time": old_times, "cpu": [float(i) for i in range(1, 61)]}
        ),
        "guest",
    ).with_columns(pl.lit(60, pl.Int64).alias(STEP_COLUMN))

    joined = join_generations(current, old, "guest", cf).sort("time")

    assert joined["time"].to_list() == [NOW - 1800, NOW]
    assert joined["cpu"].to_list() == pytest.approx(expected)
    assert joined["maxmem"].to_list() == pytest.approx([8.0, 8.0])


def test_superseded_old_files_untouched_in_the_window_are_not_fetched(tmp_path, monkeypatch):
    old_times = minutes(NOW - 5 * HOUR, NOW - 3 * HOUR)
    new_times = minutes(NOW - 3 * HOUR + 60, NOW)
    old_file = write_series(tmp_path, "guest", "100", old_times, guest_rows(old_times), "pve2")
    write_series(tmp_path, "guest", "100", new_times, guest_rows(new_times, mem=5 * GIB))
    lone_old = write_series(tmp_path, "guest", "200", old_times, guest_rows(old_times), "pve2")
    fetched: list[str] = []
    real_fetch_many = rrd_fast.Librrd.fetch_many

    def counting_fetch_many(self, paths, *args, **kwargs):
        fetched.extend(paths)
        return real_fetch_many(self, paths, *args, **kwargs)

    monkeypatch.setattr(rrd_fast.Librrd, "fetch_many", counting_fetch_many)

    with_old = read_series(tmp_path, "guest", None, NOW - HOUR, NOW)
    fetched_with_old = list(fetched)
    fetched.clear()
    for path in (old_file, lone_old):
        os.utime(path, (NOW - 3 * HOUR, NOW - 3 * HOUR))
    skipped = read_series(tmp_path, "guest", None, NOW - HOUR, NOW)

    assert str(old_file) in fetched_with_old
    assert str(old_file) not in fetched
    assert str(lone_old) in fetched
    assert skipped.frame.equals(with_old.frame)
    assert skipped.frame.filter(pl.col("id") == "100")["mem"].to_list() == pytest.approx(
        [5.0 * GIB] * 60
    )
    assert [(f.kind, f.where) for f in skipped.findings] == [("rrd-stale", "guest 200")]
