"""Fetch RRD files through librrd's ``rrd_fetch_r``: threads, or processes for many.

The PyPI ``rrdtool`` binding turns every fetched value into a Python float (or None) in a
tuple per row; for thousands of files that costs more than librrd's own reading. Here the
same librrd function hands over its C array of doubles, which one ``memcpy`` copies into a
numpy buffer (NaN where unknown, as librrd stores it). Files of one chunk that share their
time grid and DS list land in one stacked ``[files, rows, ds]`` array.

The loop over a chunk's files runs in C (``collector/_rrdbatch.c``, built by the project's
install against librrd-dev): one call per chunk instead of six ctypes calls per file, which
cost about as much as librrd's own work. Where the extension is not built, the same loop
runs through ctypes (:class:`Librrd` loads librrd itself either way); both give identical
chunks.

A :class:`Selection` narrows what a fetch hands back to the DS columns a caller needs (by
name, NaN where a file lacks one) plus, per row, whether any DS of a second list is known:
less memory, and a small pickle when the fetch ran in another process.

Threads: ``rrd_fetch_r`` is called through :class:`ctypes.CDLL`, which releases the GIL
for the call, so a small pool fetches files in parallel. The cheap bookkeeping calls
(clearing and reading the error, freeing librrd's memory) go through
:class:`ctypes.PyDLL`, which keeps the GIL: no GIL hand-off between threads per call.

Processes: threads scale badly. Every fetch makes librrd ``mmap``, ``madvise`` (splitting
the mapping) and ``munmap`` the file, and those serialise on the process's memory-map lock
and send TLB-shootdown interrupts to the other CPUs running the process. For reads of many
files (:data:`PROCESS_MIN_FILES`), :meth:`Librrd.fetch_files` cuts the paths into a few
contiguous parts (:data:`PARTS_PER_WORKER`) for a persistent pool of single-threaded processes
(created on first use, ``fork``, one per CPU, niced by :data:`WORKER_NICENESS`; daemonic, and
killed by the kernel when the thread that forked them ends: ``PR_SET_PDEATHSIG``). Each part
comes back as one chunk whose arrays its worker writes into a memfd the parent opened for it
(read through ``/proc/<parent>/fd``; else they travel pickled, as one buffer). Anything that
goes wrong with the pool (it cannot be created, a worker dies or raises) makes the affected
parts be fetched in this process instead, with identical results; a broken pool is replaced
on the next call. :meth:`Librrd.submit_files` starts such a fetch and returns at once: the
caller does other work (a collect parses the guest configs) and takes the chunks later, each
as soon as it is done (:meth:`PendingChunks.each`).

Errors: librrd keeps its error text per thread (``rrd_get_context()`` is thread-local), and
``rrd_clear_error`` / ``rrd_get_error`` act on the calling thread's context. Each fetch
clears that context and, after a failure, reads it back in the same thread, so concurrent
fetches never see each other's messages.

Results match ``rrdtool.fetch(path, cf, "-r", resolution, "-s", start, "-e", end)`` without
a daemon: the same start/end checks and messages, the same rows (``(end - start) / step`` of
the times librrd returns) and values, and librrd's own error text for unreadable files.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import multiprocessing
import multiprocessing.context
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import numpy.typing as npt

LIBRARY_NAMES = ("rrd", "librrd.so.8")
"""Tried in order: a name for :func:`ctypes.util.find_library`, then a soname."""
DEFAULT_CHUNK = 256
"""Files per chunk (per task of the thread pool)."""
PROCESS_MIN_FILES = 500
"""Reads of at least this many files go to the process pool (mode ``auto``): below it the
round trip and pickling cost more than the parallel fetch saves."""
PARTS_PER_WORKER = 4
"""A pool fetch is cut into up to this many parts per worker (of at least
:data:`MIN_PART_FILES` files each): the caller takes each part's chunk as soon as it is
fetched (:meth:`PendingChunks.each`), so that after the last one only its own share of the
work on the chunks is left."""
MIN_PART_FILES = 256
FetchMode = Literal["auto", "processes", "threads", "serial"]

_EARLIEST_START = 3600 * 24 * 365 * 10  # rrd_fetch refuses earlier starts ("after 1980")
_DOUBLE = ctypes.sizeof(ctypes.c_double)
_Address = ctypes.POINTER(ctypes.c_void_p)
"""``rrd_value_t **data``: librrd stores a plain address there, which stays an address."""
_Names = ctypes.POINTER(ctypes.c_char_p)
"""``char **``: librrd's DS names. Slicing it copies the names into bytes in one call; the
pointers themselves stay in librrd's array, which :class:`_NameTaker` frees."""
_SCRATCH_FILES = 256
"""Files fetched into the scratch array at a time when a Selection narrows them."""
_PR_SET_PDEATHSIG = 1
WORKER_NICENESS = 10
"""Added to the pool workers' niceness: while a cold collect parses thousands of guest
configs in its own process (one core, the collect's critical path), the workers' fetch takes
the other core instead of a third of both; alone, they get every idle core as before."""
_scratch_local = threading.local()


def _scratch(files: int, rows: int, count: int) -> npt.NDArray[np.float64]:
    """This thread's reusable ``[files, rows, count]`` array (grown when too small)."""
    needed = files * rows * count
    buffer: npt.NDArray[np.float64] | None = getattr(_scratch_local, "buffer", None)
    if buffer is None or buffer.size < needed:
        buffer = np.empty(needed)
        _scratch_local.buffer = buffer
    return buffer[:needed].reshape(files, rows, count)


_log = logging.getLogger(__name__)


def _memcpy() -> Callable[..., object]:
    """libc's memcpy keeping the GIL (PyDLL): a few kB copied, no thread switch invited."""
    try:
        memcpy = ctypes.PyDLL(None).memcpy
    except (OSError, AttributeError):
        return ctypes.memmove
    memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    memcpy.restype = ctypes.c_void_p
    return memcpy


@dataclass(frozen=True, slots=True)
class Selection:
    """What a fetch keeps of each file: DS columns by name, and a per-row "known" flag."""

    columns: tuple[str, ...]
    """The DS handed back, in this order; all NaN for a file that lacks one."""
    known_from: tuple[str, ...]
    """A row is known when any of these DS (those the file has) holds a value."""

    def narrow_into(
        self,
        ds: tuple[str, ...],
        values: npt.NDArray[np.float64],
        out: npt.NDArray[np.float64],
        known: npt.NDArray[np.bool_],
    ) -> None:
        """Fill ``out[..., len(columns)]`` and ``known[...]`` from ``values[..., len(ds)]``."""
        position = {name: index for index, name in enumerate(ds)}
        for target, name in enumerate(self.columns):
            source = position.get(name)
            if source is None:
                out[..., target] = np.nan
            else:
                out[..., target] = values[..., source]
        judged = [position[name] for name in self.known_from if name in position]
        if not judged:
            known[...] = False
            return
        unknown = np.isnan(values)
        if len(judged) < len(ds):
            unknown = unknown[..., judged]
        np.logical_not(unknown.all(axis=-1), out=known)

    def narrow(
        self, ds: tuple[str, ...], values: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """``values[..., len(ds)]`` as ``[..., len(columns)]``, and the known flags ``[...]``."""
        out = np.empty((*values.shape[:-1], len(self.columns)))
        known = np.empty(values.shape[:-1], np.bool_)
        self.narrow_into(ds, values, out, known)
        return out, known

    def apply(self, fetched: Fetched) -> Fetched:
        """``fetched`` with its values narrowed and its known flags."""
        values, known = self.narrow(fetched.ds, fetched.values)
        return fetched._replace(values=values, columns=self.columns, known=known)


class Fetched(NamedTuple):
    """One file's rows, as librrd returns them (narrowed when fetched with a Selection)."""

    first_time: int
    """Time of the first row: the end of its interval (librrd's start + step)."""
    step: int
    ds: tuple[str, ...]
    """The file's DS, as librrd lists them."""
    values: npt.NDArray[np.float64]
    """``[rows, ds]`` (with a Selection: ``[rows, columns]``); NaN where unknown. A view into
    :attr:`Chunk.grid` when the file is on the chunk's grid."""
    columns: tuple[str, ...] | None = None
    """With a Selection: the names of ``values``' columns (its ``columns``)."""
    known: npt.NDArray[np.bool_] | None = None
    """With a Selection: ``[rows]``, some DS of its ``known_from`` holds a value."""


class FetchError(NamedTuple):
    """A file librrd could not read, with librrd's message (as the binding raises it)."""

    message: str


FetchResult = Fetched | FetchError


@dataclass(frozen=True, slots=True)
class Chunk:
    """The results of consecutive files, in the order asked.

    A file on the chunk's grid (the usual case) is kept as its DS list only, its values being
    its slot of :attr:`grid`: :attr:`results` makes its :class:`Fetched` when asked, while a
    reader of thousands of files goes through :attr:`entries` and the grid directly.
    """

    entries: list[FetchResult | tuple[str, ...]]
    """Per file: its DS list when :attr:`on_grid`, else its result."""
    grid: npt.NDArray[np.float64] | None = None
    """``[files, rows, columns]``: slot ``i`` holds file ``i``'s values when ``on_grid[i]``
    (read with the first readable file's first time, step and DS list); other slots hold
    nothing meaningful."""
    on_grid: npt.NDArray[np.bool_] | None = None
    """``[files]``: the file's values are its slot of :attr:`grid`."""
    known: npt.NDArray[np.bool_] | None = None
    """With a Selection and a grid: ``[files, rows]``, the known flags in the same slots."""
    first_time: int = 0
    """With a grid: the time of its first row (see :attr:`Fetched.first_time`)."""
    step: int = 0
    """With a grid: its seconds per row."""
    columns: tuple[str, ...] | None = None
    """With a Selection and a grid: the names of the grid's columns."""

    @property
    def results(self) -> list[FetchResult]:
        """Every file's result (a file on the grid: a view of its slot), built on each call."""
        if self.grid is None or self.on_grid is None:
            return cast(list[FetchResult], self.entries)
        grid, known, columns = self.grid, self.known, self.columns
        first_time, step = self.first_time, self.step
        results: list[FetchResult] = []
        for index, (entry, on) in enumerate(zip(self.entries, self.on_grid.tolist(), strict=True)):
            if on:
                row_known = None if known is None else known[index]
                ds = cast(tuple[str, ...], entry)
                results.append(Fetched(first_time, step, ds, grid[index], columns, row_known))
            else:
                results.append(cast(FetchResult, entry))
        return results

    @property
    def stacked(self) -> npt.NDArray[np.float64] | None:
        """:attr:`grid` when every file of the chunk is on it, else None."""
        if self.grid is None or self.on_grid is None or not self.on_grid.all():
            return None
        return self.grid


def _chunk(
    entries: list[FetchResult | tuple[str, ...]],
    on_grid: Sequence[bool],
    first_time: int,
    step: int,
    grid: npt.NDArray[np.float64],
    known: npt.NDArray[np.bool_] | None,
    columns: tuple[str, ...] | None,
) -> Chunk:
    """The chunk of ``entries``: a file on the grid is given as its DS list."""
    return Chunk(entries, grid, np.array(on_grid, np.bool_), known, first_time, step, columns)


class _NameTaker:
    """The ``char **ds_namv`` of one fetch loop: read, decoded and freed after each fetch.

    Consecutive files nearly always list the same names: their raw bytes are compared with
    the previous file's, and only a different list is looked up (and decoded once).
    """

    def __init__(self, library: Librrd) -> None:
        self._library = library
        self._names = _Names()
        self.reference = ctypes.byref(self._names)
        """What ``rrd_fetch_r`` takes as ``char ***ds_namv``."""
        self._count = ctypes.c_size_t()
        self._count_reference = ctypes.byref(self._count)
        self._last_raw: list[bytes | None] | None = None
        self._last: tuple[str, ...] = ()

    def take(self, count: int) -> tuple[str, ...]:
        """The ``count`` names librrd stored; librrd's copy is freed."""
        raw: list[bytes | None] = self._names[:count]  # bytes copies
        free_ptrs = self._library._free_ptrs
        if free_ptrs is not None:  # frees each name, then the array
            self._count.value = count
            free_ptrs(self.reference, self._count_reference)
        else:
            freemem = self._library._freemem
            for pointer in ctypes.cast(self._names, _Address)[:count]:
                freemem(pointer)
            freemem(ctypes.cast(self._names, ctypes.c_void_p))
        if raw != self._last_raw:
            self._last = self._library._decoded(raw)
            self._last_raw = raw
        return self._last


def default_workers() -> int:
    """Threads for :meth:`Librrd.fetch_many`: one per CPU, at most four."""
    return max(1, min(4, os.cpu_count() or 1))


def process_workers() -> int:
    """Processes of the fetch pool: one per CPU."""
    return max(1, os.cpu_count() or 1)


class Librrd:
    """librrd's fetch through ctypes.

    Thread-safe: each call keeps its ctypes state in locals; the only shared state, a cache
    of decoded DS-name lists, is a dict updated under the GIL. DS names and the array that
    holds them are freed with ``rrd_free_ptrs`` (one call: ``free`` on each, then on the
    array), or ``rrd_freemem`` on each where librrd lacks it; the data with ``rrd_freemem``.
    """

    def __init__(self, name: str, *, batch: bool = True) -> None:
        released = ctypes.CDLL(name)  # GIL released during calls: the fetch itself
        held = ctypes.PyDLL(name)  # GIL kept: quick bookkeeping calls
        self.name = name
        self.batch = batch
        """Fetch chunks with :mod:`collector._rrdbatch` where it is built."""
        self._fetch_r = released.rrd_fetch_r
        self._fetch_r.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_long),  # time_t *start
            ctypes.POINTER(ctypes.c_long),  # time_t *end
            ctypes.POINTER(ctypes.c_ulong),  # unsigned long *step
            ctypes.POINTER(ctypes.c_ulong),  # unsigned long *ds_cnt
            ctypes.POINTER(_Names),  # char ***ds_namv
            _Address,  # rrd_value_t **data
        ]
        self._fetch_r.restype = ctypes.c_int
        self._clear_error = held.rrd_clear_error
        self._clear_error.argtypes = []
        self._clear_error.restype = None
        self._get_error = held.rrd_get_error
        self._get_error.argtypes = []
        self._get_error.restype = ctypes.c_char_p  # copied into bytes: the buffer is reused
        self._freemem = held.rrd_freemem
        self._freemem.argtypes = [ctypes.c_void_p]
        self._freemem.restype = None
        self._free_ptrs = getattr(held, "rrd_free_ptrs", None)  # frees each name, then the array
        if self._free_ptrs is not None:
            self._free_ptrs.argtypes = [ctypes.POINTER(_Names), ctypes.POINTER(ctypes.c_size_t)]
            self._free_ptrs.restype = None
        self._memcpy = _memcpy()
        self._names_cache: dict[tuple[bytes | None, ...], tuple[str, ...]] = {}

    def __repr__(self) -> str:
        return f"Librrd({self.name!r}, batch={self.batch})"

    def _decoded(self, raw: list[bytes | None]) -> tuple[str, ...]:
        """``raw`` names decoded: one tuple per distinct list, shared by every file with it."""
        key = tuple(raw)
        decoded = self._names_cache.get(key)
        if decoded is None:
            decoded = tuple((name or b"").decode(errors="replace") for name in raw)
            self._names_cache[key] = decoded
        return decoded

    def _error(self) -> str:
        message = self._get_error()
        self._clear_error()
        return message.decode(errors="replace") if message else "unknown librrd error"

    def fetch_chunk(
        self,
        paths: Sequence[str],
        cf: str,
        start: int,
        end: int,
        resolution: int,
        selection: Selection | None = None,
    ) -> Chunk:
        """Fetch ``paths`` one after another in the calling thread.

        The first readable file sets the chunk's grid; every file read on it is copied into
        its slot of one array (with a ``selection``: first into a reused scratch array, a
        block of files at a time, narrowed from there while it is still in cache). The loop
        runs in :mod:`collector._rrdbatch` when it is built (``batch``), else through ctypes;
        both give the same chunk.
        """
        invalid = _window_error(start, end, resolution)
        if invalid is not None:
            return Chunk([FetchError(invalid) for _ in paths])
        batch = _batch_module() if self.batch else None
        if batch is not None:
            return _BatchFetch(self, batch, cf, start, end, resolution, selection).chunk(paths)
        return self._fetch_chunk_ctypes(paths, cf, start, end, resolution, selection)

    def _fetch_chunk_ctypes(
        self,
        paths: Sequence[str],
        cf: str,
        start: int,
        end: int,
        resolution: int,
        selection: Selection | None,
    ) -> Chunk:
        """:meth:`fetch_chunk` through ctypes, one file per round trip."""
        c_start, c_end = ctypes.c_long(), ctypes.c_long()
        c_step, c_count = ctypes.c_ulong(), ctypes.c_ulong()
        names, data = _NameTaker(self), ctypes.c_void_p()
        arguments = (
            ctypes.byref(c_start),
            ctypes.byref(c_end),
            ctypes.byref(c_step),
            ctypes.byref(c_count),
            names.reference,
            ctypes.byref(data),
        )
        fetch_r, clear_error, freemem, memcpy = (
            self._fetch_r,
            self._clear_error,
            self._freemem,
            self._memcpy,
        )
        cf_bytes = cf.encode()
        total = len(paths)
        block = _SCRATCH_FILES if selection is not None else max(1, total)
        entries: list[FetchResult | tuple[str, ...]] = []  # a file on the grid: its DS only
        on_grid = [False] * total
        grid: tuple[int, int, tuple[str, ...], int] | None = None
        target: npt.NDArray[np.float64] | None = None  # the grid, or the selection's scratch
        narrowed: tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]] | None = None
        base = size = 0
        for index, path in enumerate(paths):
            c_start.value, c_end.value, c_step.value = start, end, resolution
            clear_error()
            if fetch_r(os.fsencode(path), cf_bytes, *arguments) != 0:
                entries.append(FetchError(self._error()))
            else:
                try:
                    count = c_count.value
                    ds = names.take(count)
                    step = c_step.value
                    rows = (c_end.value - c_start.value) // step
                    key = (c_start.value, step, ds, rows)
                    if grid is None:
                        grid, size = key, rows * count * _DOUBLE
                        if selection is None:
                            target = np.empty((total, rows, count))
                        else:
                            target = _scratch(min(block, total), rows, count)
                            shape = (total, rows)
                            narrowed = (
                                np.empty((*shape, len(selection.columns))),
                                np.empty(shape, np.bool_),
                            )
                        base = target.ctypes.data
                    if key == grid:
                        memcpy(base + (index % block) * size, data, size)
                        on_grid[index] = True
                        entries.append(ds)
                    else:
                        values = np.empty((rows, count))
                        memcpy(values.ctypes.data, data, rows * count * _DOUBLE)
                        fetched = Fetched(c_start.value + step, step, ds, values)
                        entries.append(fetched if selection is None else selection.apply(fetched))
                finally:
                    freemem(data)
            if narrowed is not None and (index % block == block - 1 or index == total - 1):
                first = index - index % block
                part = slice(first, index + 1)
                scratch = cast(npt.NDArray[np.float64], target)[: index + 1 - first]
                grid_ds = cast(tuple[int, int, tuple[str, ...], int], grid)[2]
                cast(Selection, selection).narrow_into(
                    grid_ds, scratch, narrowed[0][part], narrowed[1][part]
                )
        if grid is None:  # no file readable
            return Chunk([entry for entry in entries if isinstance(entry, FetchError)])
        first_time, step = grid[0] + grid[1], grid[1]
        if narrowed is None or selection is None:
            assert target is not None
            return _chunk(entries, on_grid, first_time, step, target, None, None)
        values, known = narrowed
        return _chunk(entries, on_grid, first_time, step, values, known, selection.columns)

    def fetch(
        self,
        path: str,
        cf: str,
        start: int,
        end: int,
        resolution: int,
        selection: Selection | None = None,
    ) -> FetchResult:
        """Fetch one file."""
        return self.fetch_chunk([path], cf, start, end, resolution, selection).results[0]

    def fetch_many(
        self,
        paths: Sequence[str],
        cf: str,
        start: int,
        end: int,
        resolution: int,
        *,
        workers: int | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        selection: Selection | None = None,
    ) -> list[Chunk]:
        """Fetch ``paths`` in chunks on ``workers`` threads; chunks in the order of ``paths``."""
        workers = default_workers() if workers is None else max(1, workers)
        size = max(1, min(chunk_size, -(-len(paths) // workers)))
        parts = [paths[offset : offset + size] for offset in range(0, len(paths), size)]
        fetch = functools.partial(
            self.fetch_chunk,
            cf=cf,
            start=start,
            end=end,
            resolution=resolution,
            selection=selection,
        )
        if workers == 1 or len(parts) <= 1:
            return [fetch(part) for part in parts]
        with ThreadPoolExecutor(min(workers, len(parts)), "rrd-fetch") as pool:
            return list(pool.map(fetch, parts))

    def fetch_files(
        self,
        paths: Sequence[str],
        cf: str,
        start: int,
        end: int,
        resolution: int,
        *,
        selection: Selection | None = None,
        mode: FetchMode = "auto",
    ) -> list[Chunk]:
        """Fetch ``paths`` the fastest way; chunks in the order of ``paths``.

        ``auto``: on the process pool from :data:`PROCESS_MIN_FILES` files when there are
        several CPUs, else :meth:`fetch_many` on threads; ``processes``, ``threads`` and
        ``serial`` force one way. Every way gives the same results.
        """
        pending = self.submit_files(
            paths, cf, start, end, resolution, selection=selection, mode=mode
        )
        return pending.chunks()

    def submit_files(
        self,
        paths: Sequence[str],
        cf: str,
        start: int,
        end: int,
        resolution: int,
        *,
        selection: Selection | None = None,
        mode: FetchMode = "auto",
    ) -> PendingChunks:
        """:meth:`fetch_files`, started: a fetch on the process pool runs while the caller
        goes on until it asks for :meth:`PendingChunks.chunks`; one on threads (or serial)
        runs only then."""
        parallel = process_workers() > 1 and len(paths) >= PROCESS_MIN_FILES
        if mode == "processes" or (mode == "auto" and parallel):
            return self._submit_on_processes(paths, cf, start, end, resolution, selection)
        workers = 1 if mode == "serial" else None
        fetch = functools.partial(
            self.fetch_many, paths, cf, start, end, resolution, workers=workers, selection=selection
        )
        return PendingChunks(lambda: iter(fetch()))

    def _submit_on_processes(
        self,
        paths: Sequence[str],
        cf: str,
        start: int,
        end: int,
        resolution: int,
        selection: Selection | None,
    ) -> PendingChunks:
        """Contiguous parts of ``paths`` (see :data:`PARTS_PER_WORKER`) for the pool
        workers; failed parts are fetched here."""
        if not paths:
            return PendingChunks(lambda: iter([]))
        workers = process_workers()
        count = max(workers, min(workers * PARTS_PER_WORKER, len(paths) // MIN_PART_FILES))
        size = -(-len(paths) // count)
        parts = [list(paths[offset : offset + size]) for offset in range(0, len(paths), size)]
        pool = _pool_for(self.name)
        sinks = [_new_sink() if pool is not None else None for _ in parts]
        futures: list[Future[Chunk | _Shipped] | None] = []
        settlement = _Settlement(futures, sinks)
        try:
            for part, sink in zip(parts, sinks, strict=True):
                task = (part, cf, start, end, resolution, selection, sink)
                futures.append(_submit(pool, task))
                if futures[-1] is None:
                    pool = None
        except BaseException:
            settlement.settle(cancel=True)
            raise

        def each() -> Iterator[Chunk]:
            nonlocal pool
            try:
                for part, sink, future in zip(parts, sinks, futures, strict=True):
                    received: list[Chunk] | None = None
                    if future is not None:
                        try:
                            received = [_received(future.result(), sink)]
                        except BrokenProcessPool as error:
                            _discard_pool(pool, error)
                            pool = None
                        except Exception as error:  # the worker raised: the part is fetched here
                            message = "RRD fetch worker failed (%r); fetching its files here"
                            _log.warning(message, error)
                    if received is None:
                        received = self.fetch_many(
                            part, cf, start, end, resolution, selection=selection
                        )
                    yield from received
            finally:
                settlement.settle(cancel=False)

        return PendingChunks(each, functools.partial(settlement.settle, cancel=True))


class PendingChunks:
    """A started :meth:`Librrd.submit_files`: :meth:`each` or :meth:`chunks` once, or
    :meth:`abandon`."""

    def __init__(
        self,
        each: Callable[[], Iterator[Chunk]],
        abandon: Callable[[], None] | None = None,
    ) -> None:
        self._each: Callable[[], Iterator[Chunk]] | None = each
        self._abandon = abandon

    def each(self) -> Iterator[Chunk]:
        """The chunks, in the order of the paths, each as soon as it is fetched. Stopping
        early leaves the rest to :meth:`abandon` (the pool's memfds are closed either way
        once the iterator is finished, closed or abandoned)."""
        if self._each is None:
            raise RuntimeError("the chunks of this fetch were already taken or abandoned")
        each, self._each = self._each, None
        return each()

    def chunks(self) -> list[Chunk]:
        """The chunks, in the order of the paths (waits for the pool's workers)."""
        return list(self.each())

    def abandon(self) -> None:
        """Drop the fetch: tasks not yet started are cancelled, running ones waited for
        (a worker may be writing into a memfd of this process), the memfds closed. After
        :meth:`each`, it drops what the iterator has not handed out yet."""
        self._each = None
        if self._abandon is not None:
            abandon, self._abandon = self._abandon, None
            abandon()


class _Settlement:
    """The end of a pool fetch: close the memfds of ``sinks`` once no worker can open them
    any more (each future cancelled or else waited for). Only the first call acts."""

    def __init__(self, futures: Sequence[Future[Any] | None], sinks: Sequence[Sink | None]) -> None:
        self.futures, self.sinks = futures, sinks
        self._settled = False

    def settle(self, *, cancel: bool) -> None:
        if self._settled:
            return
        self._settled = True
        for future in self.futures:
            if future is not None and not (cancel and future.cancel()):
                with contextlib.suppress(BaseException):
                    future.exception()
        for sink in self.sinks:
            if sink is not None:
                os.close(sink[1])


@functools.cache
def _batch_module() -> Any:
    """:mod:`collector._rrdbatch`, or None where it was not built (cached)."""
    try:
        from collector import _rrdbatch
    except ImportError as error:
        _log.info("collector._rrdbatch not built (%s): RRD files fetched through ctypes", error)
        return None
    return _rrdbatch


_OK, _ERROR, _TOO_BIG = 0, 1, 2
"""Per-file statuses of ``_rrdbatch.fetch_into``."""


class _BatchFetch:
    """One chunk fetched by ``_rrdbatch.fetch_into``: the same chunk as the ctypes loop.

    The first readable file is fetched once alone to learn the grid (its rows x DS is the
    slot each file gets); then every file, a block at a time when a selection narrows them.
    A file larger than its slot is fetched again alone through ctypes.
    """

    def __init__(
        self,
        library: Librrd,
        batch: Any,
        cf: str,
        start: int,
        end: int,
        resolution: int,
        selection: Selection | None,
    ) -> None:
        self.library, self.batch, self.selection = library, batch, selection
        self.window = (cf.encode(), start, end, resolution)
        self.cf = cf
        self.names: dict[bytes, tuple[str, ...]] = {}

    def _call(
        self, paths: Sequence[bytes], values: npt.NDArray[np.float64], slot: int
    ) -> tuple[npt.NDArray[np.int64], list[tuple[str, ...] | None], dict[int, str]]:
        """Fetch ``paths`` into ``values``: per-file meta, DS lists and error messages."""
        meta = np.empty((len(paths), 5), np.int64)
        names, errors = self.batch.fetch_into(paths, *self.window, values, slot, meta)
        ds_lists: list[tuple[str, ...] | None] = [None] * len(paths)
        current: tuple[str, ...] | None = None
        changes = iter(names)
        change = next(changes, None)
        for index in range(len(paths)):
            if change is not None and change[0] == index:
                current = self._decoded(change[1])
                change = next(changes, None)
            ds_lists[index] = current
        messages = {index: text.decode(errors="replace") for index, text in errors}
        return meta, ds_lists, messages

    def _decoded(self, joined: bytes) -> tuple[str, ...]:
        decoded = self.names.get(joined)
        if decoded is None:
            decoded = tuple(joined.decode(errors="replace").split("\n")) if joined else ()
            self.names[joined] = decoded
        return decoded

    def _grid(self, paths: Sequence[bytes]) -> tuple[int, int, tuple[str, ...], int] | None:
        """(start, step, DS, rows) of the first readable file, as librrd returns it."""
        probe = np.empty(0)
        for path in paths:
            meta, ds_lists, _ = self._call([path], probe, 0)
            status, first, last, step, _ = meta[0].tolist()
            if status != _ERROR:
                ds = ds_lists[0] or ()
                return first, step, ds, (last - first) // step if step else 0
        return None

    def chunk(self, paths: Sequence[str]) -> Chunk:
        encoded = [os.fsencode(path) for path in paths]
        grid = self._grid(encoded)
        if grid is None:
            meta, _, messages = self._call(encoded, np.empty(0), 0)
            return Chunk([FetchError(messages[index]) for index in range(len(paths))])
        first, step, grid_ds, rows = grid
        count = len(grid_ds)
        slot = rows * count
        total = len(paths)
        selection = self.selection
        if selection is None:
            target = np.empty((total, rows, count))
            blocks = [(0, total)]
            narrowed = None
        else:
            block = _SCRATCH_FILES
            target = _scratch(min(block, total), rows, count)
            blocks = [(offset, min(offset + block, total)) for offset in range(0, total, block)]
            narrowed = (
                np.empty((total, rows, len(selection.columns))),
                np.empty((total, rows), np.bool_),
            )
        entries: list[FetchResult | tuple[str, ...]] = []
        on_grid: list[bool] = []
        alone: list[int] = []
        key = (first, step, grid_ds, rows)
        for low, high in blocks:
            part = target if selection is None else target[: high - low]
            meta, ds_lists, messages = self._call(encoded[low:high], part, slot)
            flat = part.reshape(high - low, slot)
            for index, (status, start, end, file_step, _) in enumerate(meta.tolist()):
                ds = ds_lists[index]
                if status == _ERROR:
                    entries.append(FetchError(messages[index]))
                    on_grid.append(False)
                    continue
                file_rows = (end - start) // file_step if file_step else 0
                if status == _OK and (start, file_step, ds, file_rows) == key:
                    entries.append(cast(tuple[str, ...], ds))
                    on_grid.append(True)
                    continue
                on_grid.append(False)
                if status == _TOO_BIG:  # fetched after the block is narrowed: see _alone
                    alone.append(low + index)
                    entries.append(FetchError(""))
                    continue
                names = cast(tuple[str, ...], ds)
                own = flat[index, : file_rows * len(names)].reshape(file_rows, len(names))
                fetched = Fetched(start + file_step, file_step, names, own.copy())
                entries.append(fetched if selection is None else selection.apply(fetched))
            if narrowed is not None and selection is not None:
                selection.narrow_into(grid_ds, part, narrowed[0][low:high], narrowed[1][low:high])
        for index in alone:
            entries[index] = self._alone(paths[index])
        if narrowed is None or selection is None:
            return _chunk(entries, on_grid, first + step, step, target, None, None)
        values, known = narrowed
        return _chunk(entries, on_grid, first + step, step, values, known, selection.columns)

    def _alone(self, path: str) -> FetchResult:
        """One file through the ctypes loop (it did not fit the chunk's slot). It reuses
        this thread's scratch array: call it only once every block is narrowed."""
        start, end, resolution = self.window[1:]
        chunk = self.library._fetch_chunk_ctypes(
            [path], self.cf, start, end, resolution, self.selection
        )
        return chunk.results[0]


def _window_error(start: int, end: int, resolution: int) -> str | None:
    """What ``rrd_fetch`` (the binding's entry) rejects before opening the file."""
    if start < _EARLIEST_START:
        return "the first entry to fetch should be after 1980"
    if end < start:
        return f"start ({start}) should be less than end ({end})"
    if resolution < 1:
        return "step must be >= 1 second"
    return None


# --- the process pool ------------------------------------------------------------------

_pool_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_library = ""
_worker_library: Librrd | None = None
"""In a pool worker: the library its initializer loaded."""


class _WorkerProcess(multiprocessing.context.ForkProcess):
    """A pool worker, daemonic: a process exiting through multiprocessing (which joins its
    non-daemonic children first) terminates it instead of waiting for it forever."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class _WorkerContext(multiprocessing.context.ForkContext):
    """``fork`` start method, daemonic workers."""

    Process = _WorkerProcess


def _forget_pool_after_fork() -> None:
    """In a forked child, the parent's pool is not ours to use (nor to shut down)."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _init_worker(name: str, parent: int) -> None:
    """Pool worker set-up: librrd loaded, dies with its parent, leaves Ctrl-C to it, runs
    niced (:data:`WORKER_NICENESS`) with its own garbage collector on."""
    global _worker_library
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # Linux: dies with its parent
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)
    gc.freeze()  # the parent's objects, never collected here: their pages stay shared
    gc.enable()  # forked during a collect that paused the collector (collector.gc_pause)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    _worker_library = Librrd(name)


Sink = tuple[int, int]
"""Where a worker writes its chunk's arrays: the parent's pid and a memfd it holds open."""


class _Shipped(NamedTuple):
    """A worker's chunk whose grid (and known flags) went through the parent's memfd."""

    entries: list[FetchResult | tuple[str, ...]]
    on_grid: list[bool]
    first_time: int
    step: int
    columns: tuple[str, ...] | None
    grid_shape: tuple[int, ...]
    known_shape: tuple[int, ...] | None


def _new_sink() -> Sink | None:
    """A memfd for one part's arrays (None where there is none: they come pickled)."""
    try:
        return os.getpid(), os.memfd_create("pve-rebalancer-rrd", os.MFD_CLOEXEC)
    except (OSError, AttributeError):
        return None


def _fetch_in_worker(
    paths: list[str],
    cf: str,
    start: int,
    end: int,
    resolution: int,
    selection: Selection | None,
    sink: Sink | None,
) -> Chunk | _Shipped:
    """Runs in a pool worker: one part of the paths as one chunk.

    Its grid goes through ``sink`` (one write here, one read in the parent, instead of a
    pickle pushed through a 64 kB pipe); where the sink cannot be opened, in the pickle.
    """
    library = _worker_library
    if library is None:
        raise RuntimeError("RRD fetch worker without librrd")
    chunk = library.fetch_chunk(paths, cf, start, end, resolution, selection)
    if sink is None or chunk.grid is None or chunk.on_grid is None:
        return chunk
    try:
        target = _open_sink(sink)
    except OSError:
        return chunk
    try:
        offset = _write_all(target, chunk.grid, 0)
        if chunk.known is not None:
            _write_all(target, chunk.known, offset)
    finally:
        os.close(target)
    known_shape = None if chunk.known is None else chunk.known.shape
    grid = (chunk.first_time, chunk.step, chunk.columns, chunk.grid.shape, known_shape)
    return _Shipped(chunk.entries, chunk.on_grid.tolist(), *grid)


def _open_sink(sink: Sink) -> int:
    """The parent's memfd, opened for writing through ``/proc`` (same user)."""
    parent, descriptor = sink
    return os.open(f"/proc/{parent}/fd/{descriptor}", os.O_WRONLY)


def _write_all(descriptor: int, array: npt.NDArray[Any], offset: int) -> int:
    """Write ``array``'s bytes at ``offset``; the offset after them."""
    data = np.ascontiguousarray(array).data.cast("B")
    done = 0
    while done < len(data):
        done += os.pwrite(descriptor, data[done:], offset + done)
    return offset + done


def _read_all(descriptor: int, array: npt.NDArray[Any], offset: int) -> int:
    """Fill ``array`` (contiguous) from ``offset``; the offset after it."""
    data = array.data.cast("B")
    done = 0
    while done < len(data):
        got = os.preadv(descriptor, [data[done:]], offset + done)
        if got == 0:
            raise OSError(f"RRD fetch worker wrote {done} of {len(data)} bytes")
        done += got
    return offset + done


def _received(reply: Chunk | _Shipped, sink: Sink | None) -> Chunk:
    """The chunk a worker returned, its arrays read from ``sink`` when it shipped them."""
    if isinstance(reply, Chunk):
        return reply
    if sink is None:
        raise OSError("RRD fetch worker shipped arrays without a sink")
    grid = np.empty(reply.grid_shape)
    offset = _read_all(sink[1], grid, 0)
    known = None
    if reply.known_shape is not None:
        known = np.empty(reply.known_shape, np.bool_)
        _read_all(sink[1], known, offset)
    arguments = (reply.first_time, reply.step, grid, known, reply.columns)
    return _chunk(reply.entries, reply.on_grid, *arguments)


def _pool_for(name: str) -> ProcessPoolExecutor | None:
    """The process pool for librrd ``name``, created on first use; None if it cannot be."""
    global _pool, _pool_library
    with _pool_lock:
        if _pool is not None and _pool_library == name:
            return _pool
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
        try:
            _pool = ProcessPoolExecutor(
                process_workers(),
                mp_context=_WorkerContext(),
                initializer=_init_worker,
                initargs=(name, os.getpid()),
            )
        except (OSError, ValueError, RuntimeError) as error:
            _log.warning("RRD fetch process pool unavailable (%s); fetching on threads", error)
            return None
        _pool_library = name
        return _pool


def _submit(
    pool: ProcessPoolExecutor | None, task: tuple[Any, ...]
) -> Future[Chunk | _Shipped] | None:
    """``task`` (the arguments of a worker's fetch) handed to ``pool``; None without a pool."""
    if pool is None:
        return None
    try:  # the first submit forks the workers
        return pool.submit(_fetch_in_worker, *task)
    except (BrokenProcessPool, RuntimeError, OSError) as error:
        _discard_pool(pool, error)
        return None


def _discard_pool(pool: ProcessPoolExecutor | None, error: BaseException) -> None:
    """Drop a broken ``pool`` (once): fetches go on here, the next call makes a new pool."""
    global _pool
    if pool is None:
        return
    with _pool_lock:
        if pool is _pool:
            _pool = None
    _log.warning("RRD fetch process pool broken (%r); fetching here, new pool next time", error)
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown_pool() -> None:
    """Stop the process pool's workers (a later large fetch starts a new pool)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def _load(names: Sequence[str]) -> Librrd | None:
    for candidate in names:
        name = ctypes.util.find_library(candidate) or candidate
        try:
            return Librrd(name)
        except (OSError, AttributeError):
            continue
    return None


@functools.cache
def load_librrd() -> Librrd | None:
    """librrd through ctypes, or None when it cannot be loaded (cached)."""
    return _load(LIBRARY_NAMES)
