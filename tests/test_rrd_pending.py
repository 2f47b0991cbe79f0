"""Fetches started now and finished (or abandoned) later: rrd_fast.submit_files (PendingChunks),
rrd.start_read (PendingRead), and build_snapshot abandoning its guest read when /etc/pve is
missing. An abandoned fetch must leave no memfd open and the process pool usable."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector import rrd_fast
from collector.pvecfg.tree import PveTreeNotFoundError
from collector.rrd import read_series, start_read
from collector.rrd_fast import Librrd, Selection
from collector.snapshot_builder import CollectOptions, build_snapshot
from model.rrd_schema import GUEST_9
from tests.rrd_helpers import minutes, rrd_path, write_series
from tests.test_rrd import HOUR, NOW, guest_rows
from tests.test_rrd_fast import (
    assert_same_results,
    open_memfds,
    results_of,
    use_processes,
    use_threads,
)

WINDOW = ("AVERAGE", NOW - HOUR, NOW, 60)
GOOD_IDS = {"100", "101", "102", "103", "104", "105"}
BIG_GUESTS = 600


@pytest.fixture
def fresh_pool() -> Iterator[None]:
    """No pool before the test (so one is forked with its patches), none left after it."""
    rrd_fast.shutdown_pool()
    yield
    rrd_fast.shutdown_pool()


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good guest files (one only in the old generation), a corrupt one and a truncated one."""
    root = tmp_path_factory.mktemp("rrd")
    times = minutes(NOW - 2 * HOUR, NOW)
    good = write_series(root, "guest", "100", times, guest_rows(times))
    write_series(root, "guest", "101", times, guest_rows(times, cpu=0.5, mem=None))
    for ident in ("102", "103", "104"):
        shutil.copy(good, rrd_path(root, "guest", ident))
    write_series(root, "guest", "105", times, guest_rows(times, cpu=0.75), "pve2")
    rrd_path(root, "guest", "106").write_text("not an rrd\n")
    truncated = rrd_path(root, "guest", "107")
    shutil.copy(good, truncated)
    with truncated.open("r+b") as handle:
        handle.truncate(good.stat().st_size // 2)
    return root


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``BIG_GUESTS`` guest files (links to one file): enough for the process pool."""
    root = tmp_path_factory.mktemp("big")
    times = minutes(NOW - HOUR, NOW)
    first = write_series(root, "guest", "1000", times, guest_rows(times))
    for vmid in range(1001, 1000 + BIG_GUESTS):
        target = rrd_path(root, "guest", str(vmid))
        try:
            os.link(first, target)
        except OSError:
            shutil.copy(first, target)
    return root


def library() -> Librrd:
    loaded = rrd_fast.load_librrd()
    assert loaded is not None
    return loaded


def guest_paths(root: Path) -> list[str]:
    directory = root / GUEST_9.directory
    return [str(directory / name) for name in sorted(os.listdir(directory))]


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- PendingChunks ---------------------------------------------------------------------------


@pytest.mark.parametrize("selection", [None, Selection(("cpu", "mem"), ("maxcpu", "mem"))])
def test_submitted_chunks_equal_fetch_files_and_are_taken_once(
    small_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool, selection
) -> None:
    use_processes(monkeypatch, workers=2)
    paths = guest_paths(small_root)
    librrd = library()

    pending = librrd.submit_files(paths, *WINDOW, selection=selection, mode="processes")
    chunks = pending.chunks()

    assert rrd_fast._pool is not None  # the submit did go to the pool
    assert [len(chunk.entries) for chunk in chunks] == [4, 3]  # one part per worker
    fetched = librrd.fetch_files(paths, *WINDOW, selection=selection, mode="processes")
    assert_same_results(results_of(chunks), results_of(fetched))
    serial = librrd.fetch_files(paths, *WINDOW, selection=selection, mode="serial")
    assert_same_results(results_of(chunks), results_of(serial))
    kinds = {type(result).__name__ for result in results_of(chunks)}
    assert kinds == {"Fetched", "FetchError"}  # the corrupt and truncated files are in it
    with pytest.raises(RuntimeError):
        pending.chunks()
    assert open_memfds() == []


def test_abandon_closes_every_memfd_and_the_pool_stays_usable(
    small_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    use_processes(monkeypatch, workers=2)
    paths = guest_paths(small_root)
    librrd = library()
    expected = librrd.fetch_files(paths, *WINDOW, mode="processes")  # forks the pool
    pool = rrd_fast._pool
    assert pool is not None
    before = fd_count()
    # More parts than the pool has workers: some tasks wait in the pool (cancellable).
    monkeypatch.setattr(rrd_fast, "process_workers", lambda: 4)

    pending = librrd.submit_files(paths, *WINDOW, mode="processes")
    assert len(open_memfds()) == 4  # one sink per part, held while the fetch runs
    pending.abandon()

    assert fd_count() == before
    assert open_memfds() == []
    with pytest.raises(RuntimeError):
        pending.chunks()
    pending.abandon()  # a second abandon does nothing
    assert rrd_fast._pool is pool  # not discarded as broken
    again = librrd.fetch_files(paths, *WINDOW, mode="processes")
    assert_same_results(results_of(again), results_of(expected))
    assert open_memfds() == []


def test_abandon_after_chunks_does_nothing(
    small_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    use_processes(monkeypatch, workers=2)
    paths = guest_paths(small_root)
    pending = library().submit_files(paths, *WINDOW, mode="processes")
    chunks = pending.chunks()

    pending.abandon()

    assert len(results_of(chunks)) == len(paths)
    assert open_memfds() == []


def test_abandon_on_threads_is_harmless_and_fetches_nothing(
    small_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    paths = guest_paths(small_root)
    librrd = library()
    expected = librrd.fetch_files(paths, *WINDOW, mode="serial")
    calls: list[int] = []
    real = Librrd.fetch_chunk

    def counting(self, chunk_paths, *args, **kwargs):
        calls.append(len(chunk_paths))
        return real(self, chunk_paths, *args, **kwargs)

    monkeypatch.setattr(Librrd, "fetch_chunk", counting)
    before = fd_count()

    pending = librrd.submit_files(paths, *WINDOW, mode="threads")
    pending.abandon()

    assert calls == []  # a fetch on threads runs only when its chunks are asked for
    assert fd_count() == before
    assert rrd_fast._pool is None
    with pytest.raises(RuntimeError):
        pending.chunks()
    threads = librrd.fetch_files(paths, *WINDOW, mode="threads")
    assert_same_results(results_of(threads), results_of(expected))
    assert sum(calls) == len(paths)


def many_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file of a pool fetch its own part (up to ``PARTS_PER_WORKER`` per worker)."""
    monkeypatch.setattr(rrd_fast, "MIN_PART_FILES", 1)


def fetched_in_parts(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], Librrd, list[rrd_fast.Chunk]]:
    """The guest paths of ``root``, librrd and their chunks, fetched once in many parts on a
    2-worker pool (which that fetch forks)."""
    use_processes(monkeypatch, workers=2)
    many_parts(monkeypatch)
    paths = guest_paths(root)
    librrd = library()
    return paths, librrd, librrd.fetch_files(paths, *WINDOW, mode="processes")


def test_a_pool_fetch_is_cut_into_parts_handed_over_one_by_one(
    small_root: Path, big_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    use_processes(monkeypatch, workers=2)
    librrd = library()
    big = guest_paths(big_root)
    # At least MIN_PART_FILES files a part, at most PARTS_PER_WORKER parts a worker.
    sizes = [len(c.entries) for c in librrd.fetch_files(big, *WINDOW, mode="processes")]
    assert sizes == [300, 300]  # 600 files: two parts of at least 256
    many_parts(monkeypatch)
    paths = guest_paths(small_root)
    expected = librrd.fetch_files(paths, *WINDOW, mode="serial")

    pending = librrd.submit_files(paths, *WINDOW, mode="processes")
    each = pending.each()
    first = next(each)

    assert len(first.entries) == 1  # 7 files, 2 workers x 4 parts: 7 parts of one file
    rest = list(each)
    assert len(rest) == 6
    assert_same_results(results_of([first, *rest]), results_of(expected))
    assert open_memfds() == []  # the iterator settled the fetch at its end
    with pytest.raises(RuntimeError):
        pending.each()
    pending.abandon()  # nothing left to abandon


def test_stopping_early_and_abandoning_closes_every_memfd(
    small_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    paths, librrd, expected = fetched_in_parts(small_root, monkeypatch)
    pool = rrd_fast._pool
    before = fd_count()

    pending = librrd.submit_files(paths, *WINDOW, mode="processes")
    each = pending.each()
    taken = [next(each), next(each)]
    pending.abandon()  # as PendingRead does when its caller fails half-way

    assert fd_count() == before
    assert open_memfds() == []
    each.close()  # the iterator's own end finds the fetch settled already
    assert fd_count() == before
    assert_same_results(results_of(taken), results_of(expected)[:2])
    assert rrd_fast._pool is pool
    again = librrd.fetch_files(paths, *WINDOW, mode="processes")
    assert_same_results(results_of(again), results_of(expected))


def test_an_iterator_dropped_half_way_settles_its_fetch(
    small_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    paths, librrd, _ = fetched_in_parts(small_root, monkeypatch)
    before = fd_count()

    each = librrd.submit_files(paths, *WINDOW, mode="processes").each()
    next(each)
    del each  # closing the generator runs its end: the rest is waited for, memfds closed

    assert fd_count() == before
    assert open_memfds() == []


# --- PendingRead -----------------------------------------------------------------------------


def read_arguments(root: Path) -> tuple[Path, str, None, int, int]:
    return (root, "guest", None, NOW - HOUR, NOW)


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_started_read_equals_read_series_and_is_taken_once(
    small_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool, mode
) -> None:
    use_processes(monkeypatch) if mode == "processes" else use_threads(monkeypatch)
    arguments = read_arguments(small_root)
    expected = read_series(*arguments, columns=["cpu", "mem"])

    pending = start_read(*arguments, columns=["cpu", "mem"])
    read = pending.result()

    assert (rrd_fast._pool is not None) == (mode == "processes")
    assert read.frame.equals(expected.frame)
    assert read.findings == expected.findings
    assert read.found_ids == expected.found_ids
    assert read.found_ids == GOOD_IDS
    unreadable = {Path(f.where).name for f in read.findings if f.kind == "rrd-unreadable"}
    assert unreadable == {"106", "107"}
    assert read.frame.height > 0
    with pytest.raises(RuntimeError):
        pending.result()
    assert open_memfds() == []


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_an_abandoned_read_leaves_no_descriptor_and_cannot_be_finished(
    small_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool, mode
) -> None:
    use_processes(monkeypatch) if mode == "processes" else use_threads(monkeypatch)
    arguments = read_arguments(small_root)
    expected = read_series(*arguments)  # forks the pool (processes) before the count
    before = fd_count()

    pending = start_read(*arguments)
    if mode == "processes":  # both generations' fetches hold their sinks meanwhile
        assert len(open_memfds()) == 3  # current: two parts; old (one id): one
    pending.abandon()

    assert fd_count() == before
    assert open_memfds() == []
    with pytest.raises(RuntimeError):
        pending.result()
    pending.abandon()  # a second abandon does nothing
    again = read_series(*arguments)
    assert again.frame.equals(expected.frame)
    assert again.findings == expected.findings


# --- build_snapshot --------------------------------------------------------------------------


def record_sinks(monkeypatch: pytest.MonkeyPatch) -> list[rrd_fast.Sink | None]:
    """The memfd sinks made from now on (one per pool part of a fetch)."""
    sinks: list[rrd_fast.Sink | None] = []
    real_sink = rrd_fast._new_sink

    def recording_sink() -> rrd_fast.Sink | None:
        sinks.append(real_sink())
        return sinks[-1]

    monkeypatch.setattr(rrd_fast, "_new_sink", recording_sink)
    return sinks


def test_a_missing_pve_root_fails_before_any_fetch_starts(
    big_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    monkeypatch.setattr(rrd_fast, "process_workers", lambda: 2)
    library().fetch_files(guest_paths(big_root)[:1], *WINDOW, mode="processes")  # forks the pool
    sinks = record_sinks(monkeypatch)
    before = fd_count()

    with pytest.raises(PveTreeNotFoundError, match="does not exist"):
        build_snapshot(tmp_path / "nope", big_root, CollectOptions(now=NOW))

    assert sinks == []
    assert fd_count() == before


def test_a_failing_config_read_abandons_the_guest_read_on_the_pool(
    big_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    from collector import snapshot_builder

    assert rrd_fast.PROCESS_MIN_FILES <= BIG_GUESTS  # the default threshold sends it to the pool
    monkeypatch.setattr(rrd_fast, "process_workers", lambda: 2)
    library().fetch_files(guest_paths(big_root)[:1], *WINDOW, mode="processes")  # forks the pool
    sinks = record_sinks(monkeypatch)
    (tmp_path / "pve").mkdir()
    before = fd_count()

    def broken_tree(*_: object, **__: object) -> None:
        raise OSError("pmxcfs went away")

    monkeypatch.setattr(snapshot_builder, "read_tree", broken_tree)
    with pytest.raises(OSError, match="pmxcfs went away"):
        build_snapshot(tmp_path / "pve", big_root, CollectOptions(now=NOW))

    assert len(sinks) == 2  # the guest read went to the pool: one sink per worker
    assert all(sink is not None for sink in sinks)
    assert fd_count() == before
    assert open_memfds() == []


def test_a_failure_after_the_configs_still_abandons_the_guest_read(
    big_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    """Regression: only a failing read_tree used to abandon the started guest read; a
    failure later in the build (here the status dump) left its memfds open."""
    from collector import snapshot_builder

    monkeypatch.setattr(rrd_fast, "process_workers", lambda: 2)
    library().fetch_files(guest_paths(big_root)[:1], *WINDOW, mode="processes")
    (tmp_path / "pve").mkdir()
    before = fd_count()

    def broken_dump(*_: object) -> None:
        raise RuntimeError("status dump parser broke")

    monkeypatch.setattr(snapshot_builder, "_guest_status_from_dump", broken_dump)
    with pytest.raises(RuntimeError, match="status dump parser broke"):
        build_snapshot(tmp_path / "pve", big_root, CollectOptions(now=NOW))

    assert fd_count() == before
    assert open_memfds() == []


def test_workers_forked_during_a_paused_collect_collect_their_own_garbage(
    big_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    """Regression: a pool first forked inside build_snapshot (collector paused) left the
    workers' garbage collector disabled for their whole life."""
    import gc

    from collector.gc_pause import gc_paused

    monkeypatch.setattr(rrd_fast, "process_workers", lambda: 2)
    librrd = library()
    with gc_paused():
        librrd.fetch_files(guest_paths(big_root)[:4], *WINDOW, mode="processes")
    pool = rrd_fast._pool_for(librrd.name)
    assert pool is not None
    assert gc.isenabled()
    states = [pool.submit(gc.isenabled).result(timeout=30) for _ in range(4)]
    assert states == [True] * 4


def test_pool_workers_run_niced_below_the_collecting_process(
    big_root: Path, monkeypatch: pytest.MonkeyPatch, fresh_pool
) -> None:
    """The workers give way to the process that parses the configs meanwhile."""
    monkeypatch.setattr(rrd_fast, "process_workers", lambda: 2)
    librrd = library()
    librrd.fetch_files(guest_paths(big_root)[:4], *WINDOW, mode="processes")
    pool = rrd_fast._pool_for(librrd.name)
    assert pool is not None
    mine = os.nice(0)
    expected = min(19, mine + rrd_fast.WORKER_NICENESS)
    assert [pool.submit(os.nice, 0).result(timeout=30) for _ in range(4)] == [expected] * 4
    assert os.nice(0) == mine
