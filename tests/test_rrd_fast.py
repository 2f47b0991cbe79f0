"""collector.rrd_fast (librrd through ctypes) against the rrdtool binding, on real files."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import rrdtool

from collector import rrd_fast
from collector.rrd import SeriesRead, read_series
from collector.rrd_fast import Chunk, Fetched, FetchError, FetchResult, Librrd
from model import Finding
from model.rrd_schema import GUEST_9, GUEST_OLD
from tests.rrd_helpers import create_rrd, layout_of, minutes, rrd_path, write_series
from tests.test_rrd import DAY, GIB, HOUR, NOW, guest_rows


def test_librrd_loads_where_the_setup_installed_it() -> None:
    assert rrd_fast.load_librrd() is not None


def test_the_batch_extension_is_built_by_the_setup() -> None:
    assert rrd_fast._batch_module() is not None


@pytest.fixture(params=["batch", "ctypes"])
def librrd(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Librrd:
    """librrd with its fetch loop in collector._rrdbatch, and without it (ctypes only)."""
    library = rrd_fast.load_librrd()
    assert library is not None
    if request.param == "ctypes":  # also for pool workers forked from here on
        monkeypatch.setattr(rrd_fast, "_batch_module", lambda: None)
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


# --- Selection, chunks across processes, the process pool ---------------------------------


@pytest.fixture
def fresh_pool():
    """No pool before the test (so one is forked with its patches), none left after it."""
    rrd_fast.shutdown_pool()
    yield
    rrd_fast.shutdown_pool()


def use_processes(monkeypatch: pytest.MonkeyPatch, workers: int = 2) -> None:
    """Every librrd read goes to a pool of ``workers`` processes, whatever the CPU count."""
    monkeypatch.setattr(rrd_fast, "PROCESS_MIN_FILES", 1)
    monkeypatch.setattr(rrd_fast, "process_workers", lambda: workers)


def use_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rrd_fast, "PROCESS_MIN_FILES", 10**9)


def read_all(root: Path, **options) -> list[SeriesRead]:
    """Several reads of ``root`` that between them take every path of read_series."""
    return [
        read_series(root, "guest", None, NOW - HOUR, NOW, **options),
        read_series(root, "guest", None, NOW - 3 * HOUR, NOW, cf="MAX", columns=["cpu", "mem"]),
        read_series(root, "guest", None, NOW - 2 * DAY, NOW, resolution=1800, columns=["mem"]),
        read_series(root, "node", None, NOW - HOUR, NOW, columns=["cpu"]),
    ]


def assert_same_reads(left: list[SeriesRead], right: list[SeriesRead]) -> None:
    for one, other in zip(left, right, strict=True):
        assert one.frame.equals(other.frame)
        assert one.findings == other.findings
        assert one.found_ids == other.found_ids


def mixed_paths(root: Path) -> list[str]:
    """Good files, unreadable ones, another grid (pre-9) and foreign DS lists, interleaved."""
    names = sorted(p.name for p in (root / GUEST_9.directory).iterdir())
    paths = [str(root / GUEST_9.directory / name) for name in names]
    paths.insert(3, str(root / GUEST_OLD.directory / "106"))
    paths.insert(5, str(root / "missing"))
    return paths


def librrd_name() -> str:
    library = rrd_fast.load_librrd()
    assert library is not None
    return library.name


def results_of(chunks: list[Chunk]) -> list[Fetched | FetchError]:
    return [result for chunk in chunks for result in chunk.results]


def assert_same_results(left: list[FetchResult], right: list[FetchResult]) -> None:
    assert len(left) == len(right)
    for one, other in zip(left, right, strict=True):
        assert type(one) is type(other)
        if isinstance(one, FetchError) or isinstance(other, FetchError):
            assert one == other
            continue
        assert (one.first_time, one.step, one.ds, one.columns) == (
            other.first_time,
            other.step,
            other.ds,
            other.columns,
        )
        np.testing.assert_array_equal(one.values, other.values)
        if one.known is None:
            assert other.known is None
        else:
            np.testing.assert_array_equal(one.known, other.known)


def test_selection_narrows_by_name_and_judges_known_rows() -> None:
    selection = rrd_fast.Selection(("mem", "cpu", "pressurecpusome"), ("maxcpu", "mem"))
    nan = np.nan
    values = np.array([[[4.0, 0.5, 9.0]], [[nan, 0.5, nan]], [[nan, nan, nan]]])

    narrow, known = selection.narrow(("maxcpu", "cpu", "mem"), values)

    np.testing.assert_array_equal(
        narrow, [[[9.0, 0.5, nan]], [[nan, 0.5, nan]], [[nan, nan, nan]]]
    )  # a DS the file lacks is all NaN
    assert known.tolist() == [[True], [False], [False]]  # cpu alone does not make it known
    _, none_known = rrd_fast.Selection(("cpu",), ("netin",)).narrow(("cpu",), values[:, :, :1])
    assert none_known.tolist() == [[False], [False], [False]]


@pytest.mark.parametrize("selection", [None, rrd_fast.Selection(("cpu", "mem"), ("maxcpu",))])
def test_chunks_pickle_their_grid_once_and_come_back_identical(
    mixed_root: Path, librrd: Librrd, selection
) -> None:
    import pickle

    paths = mixed_paths(mixed_root)
    chunk = librrd.fetch_chunk(paths, "AVERAGE", NOW - HOUR, NOW, 60, selection)
    many = librrd.fetch_chunk(paths[:1] * 200, "AVERAGE", NOW - HOUR, NOW, 60, selection)

    back = pickle.loads(pickle.dumps(chunk))
    assert_same_results(back.results, chunk.results)
    assert back.on_grid is not None
    assert chunk.on_grid is not None
    assert back.on_grid.tolist() == chunk.on_grid.tolist()
    assert back.grid is not None
    for result, on in zip(back.results, back.on_grid, strict=True):
        assert not on or np.shares_memory(result.values, back.grid)
    assert chunk.stacked is None  # not every file is on the grid
    # 200 files on one grid: one array, not 200 (a per-file pickle would be ~3x larger).
    assert many.grid is not None
    assert len(pickle.dumps(many)) < many.grid.nbytes * 1.1 + 20_000


@pytest.mark.parametrize("selection", [None, rrd_fast.Selection(("mem", "cpu"), ("mem",))])
def test_every_fetch_mode_gives_the_same_results(
    mixed_root: Path, librrd: Librrd, monkeypatch, fresh_pool, selection
) -> None:
    use_processes(monkeypatch, workers=3)
    paths = mixed_paths(mixed_root)
    window = ("AVERAGE", NOW - HOUR, NOW, 60)

    serial = librrd.fetch_files(paths, *window, selection=selection, mode="serial")
    threads = librrd.fetch_files(paths, *window, selection=selection, mode="threads")
    processes = librrd.fetch_files(paths, *window, selection=selection, mode="processes")

    assert [len(chunk.results) for chunk in processes] == [5, 5, 3]  # one part per worker
    assert len(serial) == 1
    assert_same_results(results_of(threads), results_of(serial))
    assert_same_results(results_of(processes), results_of(serial))
    kinds = {type(result).__name__ for result in results_of(processes)}
    assert kinds == {"Fetched", "FetchError"}
    assert librrd.fetch_files([], *window, mode="processes") == []


def test_read_series_on_the_pool_equals_threads_and_the_binding(
    mixed_root: Path, monkeypatch, fresh_pool
) -> None:
    use_threads(monkeypatch)
    on_threads = read_all(mixed_root)
    use_processes(monkeypatch)
    on_processes = read_all(mixed_root)
    pool = rrd_fast._pool
    without_librrd(monkeypatch)
    on_binding = read_all(mixed_root)

    assert pool is not None  # the reads above did go through the pool
    assert_same_reads(on_processes, on_threads)
    for fast, slow in zip(on_processes, on_binding, strict=True):
        assert fast.frame.equals(slow.frame)
        assert fast.findings == slow.findings[1:]  # the binding's rrd-slow-path first


def test_small_reads_stay_in_process(mixed_root: Path, fresh_pool) -> None:
    assert rrd_fast.PROCESS_MIN_FILES >= 100

    read_series(mixed_root, "guest", None, NOW - HOUR, NOW)

    assert rrd_fast._pool is None


def kill_worker_after_one_file(monkeypatch: pytest.MonkeyPatch, marker: str) -> None:
    """A pool worker whose part holds ``marker`` reads one file, then is killed."""
    parent = os.getpid()
    real = Librrd.fetch_chunk

    def dying(self, paths, *args, **kwargs):
        if os.getpid() != parent and any(path.endswith(marker) for path in paths):
            real(self, paths[:1], *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, paths, *args, **kwargs)

    monkeypatch.setattr(Librrd, "fetch_chunk", dying)


def test_a_worker_killed_mid_read_still_gives_the_whole_read(
    mixed_root: Path, monkeypatch, fresh_pool, caplog
) -> None:
    use_threads(monkeypatch)
    expected = read_all(mixed_root)
    use_processes(monkeypatch)
    kill_worker_after_one_file(monkeypatch, "/108")
    broken = rrd_fast._pool_for(librrd_name())

    with caplog.at_level(logging.WARNING, logger="collector.rrd_fast"):
        survived = read_series(mixed_root, "guest", None, NOW - HOUR, NOW)
    warnings = caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="collector.rrd_fast"):
        next_read = read_series(mixed_root, "node", None, NOW - HOUR, NOW, columns=["cpu"])

    assert_same_reads([survived, next_read], [expected[0], expected[3]])
    assert "process pool broken" in warnings
    assert caplog.text == ""  # the next read has a new pool, which works
    assert rrd_fast._pool is not None
    assert rrd_fast._pool is not broken


def test_a_worker_exception_is_fetched_again_here(
    mixed_root: Path, monkeypatch, fresh_pool, caplog
) -> None:
    use_threads(monkeypatch)
    expected = read_all(mixed_root)
    use_processes(monkeypatch)
    parent = os.getpid()
    real = Librrd.fetch_chunk

    def failing(self, paths, *args, **kwargs):
        if os.getpid() != parent:
            raise MemoryError("worker out of memory")
        return real(self, paths, *args, **kwargs)

    monkeypatch.setattr(Librrd, "fetch_chunk", failing)

    with caplog.at_level(logging.WARNING, logger="collector.rrd_fast"):
        reads = read_all(mixed_root)
    pool = rrd_fast._pool

    assert_same_reads(reads, expected)
    assert "worker out of memory" in caplog.text
    assert pool is not None  # a worker that raised leaves the pool usable
    assert pool is rrd_fast._pool


def test_no_pool_means_threads(mixed_root: Path, monkeypatch, fresh_pool, caplog) -> None:
    use_threads(monkeypatch)
    expected = read_all(mixed_root)
    use_processes(monkeypatch)

    class NoFork:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(rrd_fast, "ProcessPoolExecutor", NoFork)
    with caplog.at_level(logging.WARNING, logger="collector.rrd_fast"):
        reads = read_all(mixed_root)

    assert_same_reads(reads, expected)
    assert "process pool unavailable" in caplog.text
    assert rrd_fast._pool is None


def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    script = (
        "import os\n"
        "from collector import rrd_fast\n"
        "pool = rrd_fast._pool_for(rrd_fast.load_librrd().name)\n"
        "pids = {pool.submit(os.getpid).result() for _ in range(8)}\n"
        "print(' '.join(map(str, pids)), flush=True)\n"
        "os._exit(0)\n"  # no clean shutdown: the workers must not outlive it
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    pids = [int(pid) for pid in child.stdout.split()]

    assert pids
    for pid in pids:  # killed by the kernel once the parent is gone (PR_SET_PDEATHSIG)
        while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
            time.sleep(0.01)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_a_multiprocessing_child_using_the_pool_exits() -> None:
    # multiprocessing joins a child's non-daemonic children before it exits: the pool's
    # workers are daemonic, so the child ends instead of waiting for them forever.
    script = (
        "import multiprocessing, os\n"
        "from collector import rrd_fast\n"
        "def child():\n"
        "    pool = rrd_fast._pool_for(rrd_fast.load_librrd().name)\n"
        "    pool.submit(os.getpid).result()\n"
        "process = multiprocessing.get_context('fork').Process(target=child)\n"
        "process.start()\n"
        "process.join()\n"
        "print(process.exitcode)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,  # a hang guard, not a timing assertion
        cwd=Path(__file__).parent.parent,
    )

    assert child.stdout.split() == ["0"]


@pytest.mark.parametrize("sink_opens", [True, False])
def test_worker_arrays_come_through_a_memfd_or_else_the_pickle(
    mixed_root: Path, monkeypatch, fresh_pool, sink_opens
) -> None:
    use_threads(monkeypatch)
    expected = read_all(mixed_root)
    use_processes(monkeypatch)
    if not sink_opens:  # e.g. no /proc: the worker pickles its arrays instead

        def refuse(sink):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(rrd_fast, "_open_sink", refuse)
    replies: list[str] = []
    real = rrd_fast._received

    def recording(reply, sink):
        replies.append(type(reply).__name__)
        return real(reply, sink)

    monkeypatch.setattr(rrd_fast, "_received", recording)

    reads = read_all(mixed_root)

    assert_same_reads(reads, expected)
    assert set(replies) == ({"_Shipped"} if sink_opens else {"Chunk"})
    assert open_memfds() == []  # every memfd closed


def open_memfds() -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return [target for target in targets if "memfd" in target]


@pytest.mark.parametrize("selection", [None, rrd_fast.Selection(("cpu", "mem"), ("maxcpu",))])
def test_the_batch_loop_gives_the_chunks_of_the_ctypes_loop(
    mixed_root: Path, selection: rrd_fast.Selection | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Errors, another grid (pre-9), a file too large for the grid's slot (a node file, more
    DS) between files on the grid, blocks of the selection's scratch array: all alike."""
    monkeypatch.setattr(rrd_fast, "_SCRATCH_FILES", 4)
    paths = mixed_paths(mixed_root)
    node = next((mixed_root / "pve-node-9.0").iterdir(), None)
    assert node is not None
    paths.insert(2, str(node))
    paths = [str(mixed_root / "missing-first"), *paths, paths[-1], str(node)]
    library = rrd_fast.load_librrd()
    assert library is not None
    batch = Librrd(library.name, batch=True)
    plain = Librrd(library.name, batch=False)
    window = ("AVERAGE", NOW - HOUR, NOW, 60)

    fast = batch.fetch_chunk(paths, *window, selection)
    slow = plain.fetch_chunk(paths, *window, selection)

    assert_same_results(fast.results, slow.results)
    assert fast.on_grid is not None
    assert slow.on_grid is not None
    assert fast.on_grid.tolist() == slow.on_grid.tolist()
    assert isinstance(fast.results[0], FetchError)
    assert not fast.on_grid[3]  # the node file: fetched alone, after the blocks
    unreadable = [str(mixed_root / "missing"), str(mixed_root / "gone")]
    assert (
        batch.fetch_chunk(unreadable, *window).results
        == plain.fetch_chunk(unreadable, *window).results
    )


def test_the_batch_extension_checks_its_buffers(mixed_root: Path) -> None:
    batch = rrd_fast._batch_module()
    assert batch is not None
    path = os.fsencode(mixed_paths(mixed_root)[0])
    meta = np.zeros((1, 5), np.int64)
    window = (b"AVERAGE", NOW - HOUR, NOW, 60)
    with pytest.raises(TypeError, match="path 0 is not bytes"):
        batch.fetch_into([path.decode()], *window, np.empty(10), 0, meta)
    with pytest.raises(ValueError, match="values holds 8 bytes"):
        batch.fetch_into([path], *window, np.empty(1), 10, meta)
    with pytest.raises(ValueError, match="meta holds"):
        batch.fetch_into([path], *window, np.empty(1000), 10, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="slot must be >= 0"):
        batch.fetch_into([path], *window, np.empty(1), -1, meta)
    names, errors = batch.fetch_into(
        [path, b"/no/such/file"], *window, np.empty(0), 0, meta.repeat(2, 0)
    )
    assert [index for index, _ in names] == [0]
    assert errors[0][0] == 1
    assert b"/no/such/file" in errors[0][1]
