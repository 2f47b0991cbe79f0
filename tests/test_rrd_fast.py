"""collector.rrd_fast (librrd through ctypes) against the rrdtool binding, on real files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import rrdtool

from collector import rrd_fast
from collector.rrd import read_series
from collector.rrd_fast import Chunk, Fetched, FetchError, Librrd
from model import Finding
from model.rrd_schema import GUEST_9, GUEST_OLD
from tests.rrd_helpers import create_rrd, layout_of, minutes, rrd_path, write_series
from tests.test_rrd import DAY, GIB, HOUR, NOW, guest_rows


def test_librrd_loads_where_the_setup_installed_it() -> None:
    assert rrd_fast.load_librrd() is not None


@pytest.fixture
def librrd() -> Librrd:
    library = rrd_fast.load_librrd()
    assert library is not None
    return library


def binding_fetch(path: Path, cf: str, start: int, end: int, resolution: int) -> Fetched:
    window = ["-r", str(resolution), "-s", str(start), "-e", str(end)]
    (first, _last, step), names, rows = rrdtool.fetch(str(path), cf, *window)
    values = np.array(rows, dtype=float).reshape(len(rows), len(names))
    return Fetched(first + step, step, tuple(names), values)


def binding_error(path: Path, cf: str, start: int, end: int, resolution: int) -> str:
    window = ["-r", str(resolution), "-s", str(start), "-e", str(end)]
    with pytest.raises(rrdtool.OperationalError) as raised:
        rrdtool.fetch(str(path), cf, *window)
    return str(raised.value)


def assert_same(fast: Fetched | FetchError, slow: Fetched) -> None:
    assert isinstance(fast, Fetched)
    assert (fast.first_time, fast.step, fast.ds) == (slow.first_time, slow.step, slow.ds)
    assert fast.values.shape == slow.values.shape
    np.testing.assert_array_equal(fast.values, slow.values)  # NaN where unknown, on both


def truncate(source: Path, target: Path, size: int) -> Path:
    shutil.copy(source, target)
    with target.open("r+b") as handle:
        handle.truncate(size)
    return target


@pytest.fixture
def mixed_root(tmp_path: Path) -> Path:
    """Every situation read_series handles: generations, gaps, damage, staleness."""
    times = minutes(NOW - 3 * HOUR, NOW)
    good = write_series(tmp_path, "guest", "100", times, guest_rows(times))
    write_series(tmp_path, "guest", "101", times, guest_rows(times, cpu=None, mem=None))
    stale = minutes(NOW - 3 * HOUR, NOW - HOUR)
    write_series(tmp_path, "guest", "102", stale, guest_rows(stale))
    write_series(tmp_path, "guest", "103", times, {})
    old_times = minutes(NOW - 8 * HOUR, NOW - 2 * HOUR)
    new_times = minutes(NOW - 2 * HOUR + 60, NOW)
    write_series(tmp_path, "guest", "104", old_times, guest_rows(old_times, mem=GIB), "pve2")
    write_series(tmp_path, "guest", "104", new_times, guest_rows(new_times, mem=5 * GIB))
    recent_old = minutes(NOW - HOUR, NOW)
    write_series(tmp_path, "guest", "105", recent_old, guest_rows(recent_old, cpu=0.5), "pve2")
    write_series(tmp_path, "guest", "106", times, guest_rows(times), "pve2")
    write_series(tmp_path, "guest", "106", new_times, guest_rows(new_times, disk=GIB))
    truncate(good, rrd_path(tmp_path, "guest", "107"), good.stat().st_size // 2)
    rrd_path(tmp_path, "guest", "108").write_text("not an rrd\n")
    node = write_series(tmp_path, "node", "x", times, {"maxcpu": 2, "cpu": 0.5, "memtotal": GIB})
    shutil.copy(node, rrd_path(tmp_path, "guest", "109"))
    alien = create_rrd(tmp_path / "alien.rrd", layout_of("storage"), NOW - HOUR)
    shutil.copy(alien, rrd_path(tmp_path, "guest", "110"))
    only_cpu = [{"cpu": 0.5} for _ in times]  # cpu known, maxcpu not: no cores, no value
    write_series(tmp_path, "guest", "111", times, only_cpu)
    return tmp_path


def without_librrd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rrd_fast, "load_librrd", lambda: None)


SLOW_PATH = Finding(
    "rrd-slow-path",
    "librrd",
    "librrd could not be loaded through ctypes (tried rrd, librrd.so.8); files are read "
    "through the slower rrdtool binding",
    "info",
)


@pytest.mark.parametrize(
    ("cf", "age", "resolution"),
    [
        ("AVERAGE", HOUR, None),
        ("MAX", HOUR, None),
        ("AVERAGE", 90 * 60, None),  # old-only ids come from their 30-minute archive
        ("AVERAGE", 6 * HOUR, None),
        ("MAX", 2 * DAY, 1800),
        ("AVERAGE", 10 * 60, 60),
    ],
)
def test_fast_and_binding_paths_give_identical_reads(
    mixed_root: Path, monkeypatch: pytest.MonkeyPatch, cf, age, resolution
) -> None:
    fast = read_series(mixed_root, "guest", None, NOW - age, NOW, cf=cf, resolution=resolution)
    without_librrd(monkeypatch)
    slow = read_series(mixed_root, "guest", None, NOW - age, NOW, cf=cf, resolution=resolution)

    assert fast.frame.equals(slow.frame)  # same values, nulls (not NaN), times, dtypes
    assert fast.frame["cpu"].is_nan().sum() == 0
    assert fast.found_ids == slow.found_ids
    assert slow.findings[0] == SLOW_PATH
    assert fast.findings == slow.findings[1:]
    kinds = {(f.kind, f.where.rsplit("/", 1)[-1]) for f in fast.findings}
    assert {("rrd-unreadable", "107"), ("rrd-unreadable", "108")} <= kinds
    assert {("rrd-schema", "109"), ("rrd-schema", "110"), ("rrd-all-unknown", "guest 111")} <= kinds


def test_fallback_reads_everything_and_says_so_once(
    mixed_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_librrd(monkeypatch)
    fetched: list[str] = []
    real_fetch = rrdtool.fetch

    def counting_fetch(path: str, *args: str):
        fetched.append(path)
        return real_fetch(path, *args)

    monkeypatch.setattr(rrdtool, "fetch", counting_fetch)
    read = read_series(mixed_root, "guest", None, NOW - HOUR, NOW)

    assert [f for f in read.findings if f.kind == "rrd-slow-path"] == [SLOW_PATH]
    assert len(fetched) == 14  # 12 current files, the old files of 105 and 106 (104: untouched)
    assert read.found_ids == {"100", "101", "102", "103", "104", "105", "106", "109", "111"}


def test_unloadable_library_gives_none() -> None:
    assert rrd_fast._load(("no-such-rrd-library-xyz", "libno-such-rrd.so.99")) is None


def test_no_slow_path_finding_without_files(tmp_path: Path, monkeypatch) -> None:
    without_librrd(monkeypatch)
    assert read_series(tmp_path, "node", None, NOW - HOUR, NOW).findings == []


@pytest.mark.parametrize(
    ("cf", "start", "end", "resolution"),
    [
        ("AVERAGE", NOW - HOUR, NOW, 60),
        ("MAX", NOW - HOUR + 17, NOW - 5, 60),
        ("AVERAGE", NOW - 3 * DAY, NOW, 1800),
        ("AVERAGE", NOW - HOUR, NOW, 7),  # librrd picks the nearest archive
        ("MAX", NOW, NOW, 60),
        ("AVERAGE", NOW - 400 * DAY, NOW - 300 * DAY, 60),  # before the file: all unknown
    ],
)
def test_raw_fetch_matches_the_binding(tmp_path: Path, librrd: Librrd, cf, start, end, resolution):
    times = minutes(NOW - 3 * DAY - HOUR, NOW - 10 * 60)
    rows = guest_rows(times, mem=None)
    for index in range(0, len(rows), 7):
        rows[index] = {}
    path = write_series(tmp_path, "guest", "100", times, rows)
    old = write_series(tmp_path, "guest", "100", times[-100:], rows[-100:], "pve2")

    for file in (path, old):
        assert_same(
            librrd.fetch(str(file), cf, start, end, resolution),
            binding_fetch(file, cf, start, end, resolution),
        )


@pytest.mark.parametrize(
    ("start", "end", "resolution", "message"),
    [
        (NOW, NOW - 60, 60, None),  # as the binding says
        (100, NOW, 60, "the first entry to fetch should be after 1980"),  # the C check
        (NOW - HOUR, NOW, 0, "step must be >= 1 second"),
    ],
)
def test_window_errors(tmp_path: Path, librrd: Librrd, start, end, resolution, message):
    path = write_series(tmp_path, "guest", "100", minutes(NOW - HOUR, NOW), {"cpu": 0.1})

    result = librrd.fetch(str(path), "AVERAGE", start, end, resolution)

    expected = message or binding_error(path, "AVERAGE", start, end, resolution)
    assert result == FetchError(expected)


def test_windows_the_binding_parses_as_dates_keep_the_binding(
    mixed_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The binding hands "-s 100" to rrd_parsetime ("did you really mean month 100?").
    fast = read_series(mixed_root, "guest", ["100"], 100, 400, resolution=60, now=NOW)
    without_librrd(monkeypatch)
    slow = read_series(mixed_root, "guest", ["100"], 100, 400, resolution=60, now=NOW)

    assert fast.findings == slow.findings
    assert [f.message for f in fast.findings] == [
        "cannot read RRD: start time: did you really mean month 60?"
    ]


def test_damaged_files_give_the_binding_errors_and_never_crash(tmp_path: Path) -> None:
    times = minutes(NOW - HOUR, NOW)
    good = write_series(tmp_path, "guest", "100", times, guest_rows(times))
    size = good.stat().st_size
    sizes = [0, 1, 100, 700, 2000, 4000, size // 2, size - 4096, size - 8, size - 1]
    damaged = [truncate(good, tmp_path / f"cut-{cut}", cut) for cut in sizes]
    damaged += [tmp_path / "missing", tmp_path]
    (tmp_path / "text").write_text("not an rrd\n")
    damaged.append(tmp_path / "text")
    expected = [binding_error(path, "AVERAGE", NOW - HOUR, NOW, 60) for path in damaged]
    # In a child process: a crash in librrd must fail this test, not kill the test run.
    script = (
        "import sys\n"
        "from collector.rrd_fast import load_librrd\n"
        "library = load_librrd()\n"
        f"for result in library.fetch_chunk(sys.argv[1:], 'AVERAGE', {NOW - HOUR}, {NOW}, 60)"
        ".results:\n"
        "    print(result.message)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, *map(str, damaged)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent.parent,
    )

    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == expected
    assert any("is too small" in message for message in expected)


def test_threads_keep_their_own_errors_and_order(tmp_path: Path, librrd: Librrd) -> None:
    times = minutes(NOW - HOUR, NOW)
    good = write_series(tmp_path, "guest", "100", times, guest_rows(times))
    paths: list[str] = []
    for index in range(120):
        if index % 3 == 0:
            paths.append(str(tmp_path / f"missing-{index}"))
        elif index % 3 == 1:
            cut = truncate(good, tmp_path / f"cut-{index}", good.stat().st_size - 8 * index)
            paths.append(str(cut))
        else:
            paths.append(str(good))
    expected = librrd.fetch_many(paths, "AVERAGE", NOW - HOUR, NOW, 60, workers=1)

    for _ in range(5):
        chunks = librrd.fetch_many(paths, "AVERAGE", NOW - HOUR, NOW, 60, workers=4, chunk_size=1)
        results = [result for chunk in chunks for result in chunk.results]
        assert len(results) == len(paths)
        for path, result, single in zip(paths, results, expected[0].results, strict=True):
            if isinstance(result, FetchError):
                assert path in result.message  # librrd's messages name the file
                assert result == single
            else:
                assert path == str(good)
                assert_same(result, binding_fetch(good, "AVERAGE", NOW - HOUR, NOW, 60))


def test_chunks_stack_files_on_one_grid(tmp_path: Path, librrd: Librrd) -> None:
    times = minutes(NOW - HOUR, NOW)
    paths = [
        str(write_series(tmp_path, "guest", str(100 + index), times, guest_rows(times, cpu=index)))
        for index in range(5)
    ]
    old = write_series(tmp_path, "guest", "200", times, guest_rows(times), "pve2")

    chunks = librrd.fetch_many(paths, "AVERAGE", NOW - HOUR, NOW, 60, workers=2, chunk_size=3)
    mixed = librrd.fetch_chunk([paths[0], str(old)], "AVERAGE", NOW - HOUR, NOW, 60)
    broken = librrd.fetch_chunk([paths[0], str(tmp_path / "nope")], "AVERAGE", NOW - HOUR, NOW, 60)

    assert [len(chunk.results) for chunk in chunks] == [3, 2]
    for chunk in chunks:
        assert chunk.stacked is not None
        assert chunk.stacked.shape == (len(chunk.results), 61, len(GUEST_9.ds))
        for index, result in enumerate(chunk.results):
            assert isinstance(result, Fetched)
            assert np.shares_memory(result.values, chunk.stacked)
            np.testing.assert_array_equal(result.values, chunk.stacked[index])
    cpu = GUEST_9.ds.index("cpu")
    assert [c.stacked[0, 0, cpu] for c in chunks if c.stacked is not None] == [0.0, 3.0]
    assert mixed.stacked is None
    assert [r.ds for r in mixed.results if isinstance(r, Fetched)] == [GUEST_9.ds, GUEST_OLD.ds]
    assert broken.stacked is None
    assert isinstance(broken.results[0], Fetched)
    assert isinstance(broken.results[1], FetchError)
    assert librrd.fetch_many([], "AVERAGE", NOW - HOUR, NOW, 60) == []


def test_fetch_many_splits_work_over_threads(tmp_path: Path, librrd: Librrd) -> None:
    times = minutes(NOW - HOUR, NOW)
    path = str(write_series(tmp_path, "guest", "100", times, guest_rows(times)))

    chunks = librrd.fetch_many([path] * 10, "AVERAGE", NOW - HOUR, NOW, 60, workers=4)

    assert [len(chunk.results) for chunk in chunks] == [3, 3, 3, 1]
    assert all(isinstance(chunk, Chunk) and chunk.stacked is not None for chunk in chunks)
    assert 1 <= rrd_fast.default_workers() <= 4


def test_columns_give_a_narrow_frame_with_the_same_values_and_findings(mixed_root: Path) -> None:
    full = read_series(mixed_root, "guest", None, NOW - HOUR, NOW)
    narrow = read_series(mixed_root, "guest", None, NOW - HOUR, NOW, columns=["mem", "cpu"])
    nothing = read_series(mixed_root, "guest", None, NOW - HOUR, NOW, columns=[])

    assert narrow.frame.columns == ["id", "time", "cpu", "mem"]  # layout order
    assert narrow.frame.equals(full.frame.select("id", "time", "cpu", "mem"))
    assert narrow.frame["cpu"].drop_nulls().max() == pytest.approx(4 * 0.5)  # cores of 105
    assert nothing.frame.equals(full.frame.select("id", "time"))
    # Unknown and stale are judged on every DS, not on the selected ones.
    assert narrow.findings == full.findings == nothing.findings
    assert ("rrd-all-unknown", "guest 101") not in {(f.kind, f.where) for f in narrow.findings}
    assert narrow.found_ids == full.found_ids


def test_columns_on_the_binding_path_and_when_empty(
    mixed_root: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    fast = read_series(mixed_root, "guest", None, NOW - 3 * HOUR, NOW, columns=["maxmem"])
    empty = read_series(
        tmp_path_factory.mktemp("empty"), "node", None, NOW - HOUR, NOW, columns=["cpu"]
    )
    without_librrd(monkeypatch)
    slow = read_series(mixed_root, "guest", None, NOW - 3 * HOUR, NOW, columns=["maxmem"])

    assert fast.frame.equals(slow.frame)
    assert fast.findings == slow.findings[1:]
    assert empty.frame.schema == pl.Schema({"id": pl.Utf8, "time": pl.Int64, "cpu": pl.Float64})
    with pytest.raises(ValueError, match="not guest data sources: memtotal"):
        read_series(mixed_root, "guest", None, NOW - HOUR, NOW, columns=["cpu", "memtotal"])
    with pytest.raises(TypeError):
        read_series(mixed_root, "guest", None, NOW - HOUR, NOW, columns="cpu")


def test_rrdcached_address_in_the_environment_keeps_the_binding(
    mixed_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = read_series(mixed_root, "guest", None, NOW - HOUR, NOW)

    def refuse(*args: object, **kwargs: object) -> list[Chunk]:
        raise AssertionError("rrd_fetch_r cannot read through rrdcached")

    monkeypatch.setattr(Librrd, "fetch_many", refuse)
    # No daemon listens there: librrd then reads the files itself, as the binding does.
    monkeypatch.setenv("RRDCACHED_ADDRESS", f"unix:{mixed_root / 'no-such.sock'}")
    read = read_series(mixed_root, "guest", None, NOW - HOUR, NOW)

    assert read.frame.equals(expected.frame)
    assert read.findings == expected.findings


def test_names_freed_one_by_one_without_rrd_free_ptrs(tmp_path: Path, librrd: Librrd) -> None:
    times = minutes(NOW - HOUR, NOW)
    path = write_series(tmp_path, "guest", "100", times, guest_rows(times))
    plain = Librrd(librrd.name)
    plain._free_ptrs = None  # rrd_freemem on every name, then on the array

    for _ in range(3):
        assert_same(
            plain.fetch(str(path), "AVERAGE", NOW - HOUR, NOW, 60),
            binding_fetch(path, "AVERAGE", NOW - HOUR, NOW, 60),
        )
