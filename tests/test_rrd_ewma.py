"""PendingRead.ewma: a read reduced to its EWMA view without making the long frame.

It must give, to the bit, what ``characteristic(read.frame, columns, "ewma")`` gives on the
frame of ``PendingRead.result()``, with the same findings and found ids, whatever the fetch
path (process pool, threads, the rrdtool binding) and whatever the files hold (bad files,
unknown and stale series, off-grid files, old-generation files to join).
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from collector import rrd, rrd_fast
from collector.rrd import SeriesView, start_read
from collector.smoothing import characteristic, ewma_parts, frame_of_parts
from collector.snapshot_builder import CollectOptions, build_snapshot
from simulator.cluster import SimulatedCluster, simulate_cluster
from tests.rrd_helpers import create_rrd, layout_of, minutes, rrd_path, write_series
from tests.test_rrd import HOUR, NOW, guest_rows
from tests.test_rrd_fast import use_processes, use_threads

HALF_LIFE = 600.0


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good, truncated, non-RRD, foreign (a node file), all-unknown, stale and wrong-schema
    guest files, and a guest whose mem is unknown while its cpu is known."""
    root = tmp_path_factory.mktemp("bad")
    times = minutes(NOW - 2 * HOUR, NOW)
    good = write_series(root, "guest", "100", times, guest_rows(times, cpu=0.3))
    truncated = rrd_path(root, "guest", "101")
    shutil.copy(good, truncated)
    with truncated.open("r+b") as handle:
        handle.truncate(truncated.stat().st_size // 2)
    rrd_path(root, "guest", "102").write_text("not an rrd\n")
    write_series(root, "node", "x", times, {"maxcpu": 2, "cpu": 0.5})
    shutil.copy(rrd_path(root, "node", "x"), rrd_path(root, "guest", "103"))
    write_series(root, "guest", "104", times, {})
    stale = minutes(NOW - 2 * HOUR, NOW - 30 * 60)
    write_series(root, "guest", "105", stale, guest_rows(stale, cpu=0.6))
    alien = root / "alien.rrd"
    create_rrd(alien, layout_of("storage"), NOW - HOUR)
    shutil.copy(alien, rrd_path(root, "guest", "106"))
    write_series(root, "guest", "107", times, guest_rows(times, cpu=0.5, mem=None))
    gappy = [t for t in times if (t // 60) % 7 not in (0, 1, 2)]
    write_series(root, "guest", "108", gappy, guest_rows(gappy, cpu=0.9))
    return root


@pytest.fixture(scope="module")
def old_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Guests with both generations (rows to join), one with only an old file."""
    root = tmp_path_factory.mktemp("old")
    times = minutes(NOW - 2 * HOUR, NOW)
    early, late = times[: len(times) // 2], times[len(times) // 2 :]
    write_series(root, "guest", "200", early, guest_rows(early, cpu=0.2), "pve2")
    write_series(root, "guest", "200", late, guest_rows(late, cpu=0.4))
    write_series(root, "guest", "201", times, guest_rows(times, cpu=0.7), "pve2")
    write_series(root, "guest", "202", times, guest_rows(times, cpu=0.1))
    return root


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCluster:
    return simulate_cluster(tmp_path_factory.mktemp("sim") / "c", 3, 40, days=0.25, seed=11)


def expected_view(root: Path, **options: object) -> SeriesView:
    """What ewma() must give: the long frame's EWMA characteristic."""
    read = start_read(root, "guest", **options).result()  # type: ignore[arg-type]
    columns = [name for name in read.frame.columns if name not in ("id", "time")]
    frame = characteristic(read.frame, columns, "ewma", half_life_s=HALF_LIFE)
    return SeriesView(frame, read.findings, read.found_ids)


def assert_same_view(actual: SeriesView, expected: SeriesView) -> None:
    assert_frame_equal(actual.frame, expected.frame, check_exact=True)
    assert actual.findings == expected.findings
    assert actual.found_ids == expected.found_ids


def ewma_frame(
    ids: list[str],
    times: np.ndarray,
    sizes: np.ndarray,
    columns: dict[str, np.ndarray],
    *,
    half_life_s: float = 600,
) -> pl.DataFrame:
    """The ``ewma`` view of flat rows in one part."""
    part = ewma_parts(ids, times, sizes, columns, half_life_s=half_life_s)
    return frame_of_parts([part], list(columns))


READS = [
    {"ids": None, "start": NOW - HOUR, "end": NOW, "columns": ["cpu", "mem"]},
    {"ids": None, "start": NOW - HOUR, "end": NOW},  # every DS of the layout
    {"ids": ["100", "104", "105", "999"], "start": NOW - 10 * 60, "end": NOW},
    {"ids": None, "start": NOW - 3 * HOUR, "end": NOW, "cf": "MAX", "columns": ["mem"]},
    {"ids": None, "start": NOW - 2 * 86400, "end": NOW, "resolution": 1800},
]


@pytest.mark.parametrize("fetch", ["processes", "parts", "threads", "binding"])
@pytest.mark.parametrize("read", range(len(READS)))
def test_ewma_equals_the_characteristic_of_the_frame(
    bad_root: Path, monkeypatch: pytest.MonkeyPatch, fetch: str, read: int
) -> None:
    if fetch in ("processes", "parts"):
        use_processes(monkeypatch)
        if fetch == "parts":  # a part per file: the EWMA is made part by part
            monkeypatch.setattr(rrd_fast, "MIN_PART_FILES", 1)
    elif fetch == "threads":
        use_threads(monkeypatch)
    else:
        monkeypatch.setattr(rrd_fast, "load_librrd", lambda: None)
    options = {"now": NOW, **READS[read]}

    actual = start_read(bad_root, "guest", **options).ewma(HALF_LIFE)  # type: ignore[arg-type]

    expected = expected_view(bad_root, **options)
    assert_same_view(actual, expected)
    assert actual.frame.height > 0
    if fetch == "binding":
        assert any(f.kind == "rrd-slow-path" for f in actual.findings)


def test_the_fast_path_never_makes_the_long_frame(
    bad_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"ids": None, "now": NOW, "start": NOW - HOUR, "end": NOW, "columns": ["cpu", "mem"]}
    expected = expected_view(bad_root, **options)  # type: ignore[arg-type]

    def no_frame(*args: object) -> pl.DataFrame:
        raise AssertionError("the long frame was made")

    monkeypatch.setattr(rrd, "_frame_of", no_frame)
    actual = start_read(bad_root, "guest", **options).ewma(HALF_LIFE)  # type: ignore[arg-type]

    assert_same_view(actual, expected)
    kinds = {f.kind for f in actual.findings}
    assert {"rrd-unreadable", "rrd-schema", "rrd-all-unknown", "rrd-stale"} <= kinds
    by_id = dict(zip(actual.frame["id"], actual.frame["mem"], strict=True))
    assert by_id["107"] is None  # mem unknown throughout: null, not 0
    assert by_id["104"] is None


def test_old_generation_rows_are_joined_before_the_ewma(old_root: Path) -> None:
    options = {"ids": None, "now": NOW, "start": NOW - 2 * HOUR, "end": NOW, "columns": ["cpu"]}

    actual = start_read(old_root, "guest", **options).ewma(HALF_LIFE)  # type: ignore[arg-type]

    assert_same_view(actual, expected_view(old_root, **options))
    cpu = dict(zip(actual.frame["id"], actual.frame["cpu"], strict=True))
    assert set(cpu) == {"200", "201", "202"}
    assert 0.2 * 4 < cpu["200"] < 0.4 * 4  # both generations' rows count, the newest most
    assert cpu["201"] == pytest.approx(0.7 * 4)


def test_an_empty_read_gives_an_empty_view(tmp_path: Path) -> None:
    options = {"ids": None, "now": NOW, "start": NOW - HOUR, "end": NOW}

    actual = start_read(tmp_path, "guest", **options).ewma(HALF_LIFE)  # type: ignore[arg-type]

    assert actual.frame.height == 0
    assert_same_view(actual, expected_view(tmp_path, **options))


def test_ewma_is_taken_once_and_instead_of_the_result(bad_root: Path) -> None:
    pending = start_read(bad_root, "guest", None, NOW - HOUR, NOW, now=NOW)
    pending.ewma(HALF_LIFE)
    with pytest.raises(RuntimeError):
        pending.ewma(HALF_LIFE)
    with pytest.raises(RuntimeError):
        pending.result()
    pending.abandon()  # nothing left to abandon


def test_ewma_parts_equal_characteristic_on_irregular_gappy_series() -> None:
    rng = np.random.default_rng(5)
    ids, times, cpu, mem, sizes = [], [], [], [], []
    for index in range(40):
        size = int(rng.integers(1, 30))
        steps = rng.choice([60, 60, 60, 120, 7, 3600], size=size)
        series_times = 1_700_000_000 + np.cumsum(steps)
        values = rng.uniform(0, 8, size=(size, 2))
        values[rng.uniform(size=(size, 2)) < 0.3] = np.nan
        if index == 3:
            values[:] = np.nan  # nothing known
        if index == 4 and size > 1:  # the newest known value 10^6 s before the newest row:
            series_times[-1] = series_times[-2] + 1_000_000  # its shared decay underflows
            values[-1] = np.nan
        ids.append(f"g{index:03d}")
        times.append(series_times)
        cpu.append(values[:, 0])
        mem.append(values[:, 1])
        sizes.append(size)
    flat_times = np.concatenate(times).astype(np.int64)
    columns = {"cpu": np.concatenate(cpu), "mem": np.concatenate(mem)}
    frame = pl.DataFrame(
        {
            "id": np.repeat(ids, sizes),
            "time": flat_times,
            "cpu": pl.Series(columns["cpu"], nan_to_null=True),
            "mem": pl.Series(columns["mem"], nan_to_null=True),
        }
    )

    for half_life in (1.0, 600.0):
        actual = ewma_frame(
            ids, flat_times, np.array(sizes, np.int64), columns, half_life_s=half_life
        )
        expected = characteristic(frame, ["cpu", "mem"], "ewma", half_life_s=half_life)
        assert_frame_equal(actual, expected, check_exact=True)
        # The same ids in three parts, made into one frame at the end.
        bounds = [0, 7, 25, len(ids)]
        row_bounds = np.concatenate([[0], np.cumsum(sizes)])
        parts = []
        for low, high in itertools.pairwise(bounds):
            rows = slice(int(row_bounds[low]), int(row_bounds[high]))
            part_columns = {name: values[rows] for name, values in columns.items()}
            part_sizes = np.array(sizes[low:high], np.int64)
            parts.append(
                ewma_parts(
                    ids[low:high], flat_times[rows], part_sizes, part_columns, half_life_s=half_life
                )
            )
        assert_frame_equal(frame_of_parts(parts, ["cpu", "mem"]), expected, check_exact=True)
    assert actual.filter(pl.col("id") == "g003")["cpu"].to_list() == [None]
    empty = characteristic(frame.clear(), ["cpu", "mem"], "ewma")
    assert_frame_equal(frame_of_parts([], ["cpu", "mem"]), empty, check_exact=True)


def test_ewma_parts_refuse_rows_they_cannot_group() -> None:
    times = np.array([1, 2, 3, 4], np.int64)
    values = {"cpu": np.ones(4)}
    two = np.array([2, 2], np.int64)
    with pytest.raises(ValueError, match="distinct"):
        ewma_frame(["a", "a"], times, two, values)
    with pytest.raises(ValueError, match="time order"):
        ewma_frame(["a", "b"], np.array([2, 1, 3, 4], np.int64), two, values)
    with pytest.raises(ValueError, match="disagree"):
        ewma_frame(["a", "b"], times, np.array([2, 1], np.int64), values)
    with pytest.raises(ValueError, match="positive"):
        ewma_frame(["a", "b"], times, two, values, half_life_s=0)
    # A new id may start earlier than the previous one ended.
    ok = ewma_frame(["a", "b"], np.array([5, 6, 1, 2], np.int64), two, values)
    assert ok["cpu"].to_list() == [1.0, 1.0]


def test_the_snapshot_takes_guest_usage_from_the_ewma_read(
    sim: SimulatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_processes(monkeypatch)
    monkeypatch.setattr(rrd_fast, "MIN_PART_FILES", 4)  # 40 guests in 8 parts
    made: list[str] = []
    frame_of = rrd._frame_of

    def spy(kind, blocks, columns):  # type: ignore[no-untyped-def]
        made.append(kind)
        return frame_of(kind, blocks, columns)

    monkeypatch.setattr(rrd, "_frame_of", spy)
    options = CollectOptions(now=sim.now, usage="ewma", half_life_s=900)

    snapshot = build_snapshot(sim.etc_root, sim.rrd_root, options)

    assert "guest" not in made  # nodes and storages still go through frames
    read = start_read(sim.rrd_root, "guest", None, sim.now - 3600, sim.now, now=sim.now)
    frame = read.result().frame
    view = characteristic(frame, ["cpu", "mem"], "ewma", half_life_s=900)
    cpu = dict(zip(view["id"], view["cpu"], strict=True))
    mem = dict(zip(view["id"], view["mem"], strict=True))
    running = [guest for guest in snapshot.guests if guest.status == "running"]
    assert running
    for guest in snapshot.guests:
        assert guest.cpu == cpu.get(str(guest.vmid))
        assert guest.mem == mem.get(str(guest.vmid))
    assert os.environ.get("RRDCACHED_ADDRESS", "") == ""
