"""Fetch RRD files through librrd's ``rrd_fetch_r`` with ctypes, many files on a few threads.

The PyPI ``rrdtool`` binding turns every fetched value into a Python float (or None) in a
tuple per row; for thousands of files that costs more than librrd's own reading. Here the
same librrd function hands over its C array of doubles, which one ``memcpy`` copies into a
numpy buffer (NaN where unknown, as librrd stores it). Files of one chunk that share their
time grid and DS list land in one stacked ``[files, rows, ds]`` array.

Threads: ``rrd_fetch_r`` is called through :class:`ctypes.CDLL`, which releases the GIL
for the call, so a small pool fetches files in parallel. The cheap bookkeeping calls
(clearing and reading the error, freeing librrd's memory) go through
:class:`ctypes.PyDLL`, which keeps the GIL: no GIL hand-off between threads per call.

Errors: librrd keeps its error text per thread (``rrd_get_context()`` is thread-local), and
``rrd_clear_error`` / ``rrd_get_error`` act on the calling thread's context. Each fetch
clears that context and, after a failure, reads it back in the same thread, so concurrent
fetches never see each other's messages.

Results match ``rrdtool.fetch(path, cf, "-r", resolution, "-s", start, "-e", end)`` without
a daemon: the same start/end checks and messages, the same rows (``(end - start) / step`` of
the times librrd returns) and values, and librrd's own error text for unreadable files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

LIBRARY_NAMES = ("rrd", "librrd.so.8")
"""Tried in order: a name for :func:`ctypes.util.find_library`, then a soname."""
DEFAULT_CHUNK = 256
"""Files per chunk (per task of the thread pool)."""
_EARLIEST_START = 3600 * 24 * 365 * 10  # rrd_fetch refuses earlier starts ("after 1980")
_DOUBLE = ctypes.sizeof(ctypes.c_double)
_Address = ctypes.POINTER(ctypes.c_void_p)
"""``char ***ds_namv`` and ``rrd_value_t **data``: librrd stores plain addresses there, which
stay addresses (a c_char_p would be copied into bytes, and its copy freed: a crash)."""


def _memcpy() -> Callable[..., object]:
    """libc's memcpy keeping the GIL (PyDLL): a few kB copied, no thread switch invited."""
    try:
        memcpy = ctypes.PyDLL(None).memcpy
    except (OSError, AttributeError):
        return ctypes.memmove
    memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    memcpy.restype = ctypes.c_void_p
    return memcpy


class Fetched(NamedTuple):
    """One file's rows, as librrd returns them."""

    first_time: int
    """Time of the first row: the end of its interval (librrd's start + step)."""
    step: int
    ds: tuple[str, ...]
    values: npt.NDArray[np.float64]
    """``[rows, ds]``; NaN where unknown. A view into :attr:`Chunk.stacked` when stacked."""


class FetchError(NamedTuple):
    """A file librrd could not read, with librrd's message (as the binding raises it)."""

    message: str


FetchResult = Fetched | FetchError


@dataclass(frozen=True, slots=True)
class Chunk:
    """The results of consecutive files, in the order asked."""

    results: list[FetchResult]
    stacked: npt.NDArray[np.float64] | None
    """``[files, rows, ds]`` when every file of the chunk was read with one first time, step
    and DS list (the usual case); ``results[i].values`` is then ``stacked[i]``."""


def default_workers() -> int:
    """Threads for :meth:`Librrd.fetch_many`: one per CPU, at most four."""
    return max(1, min(4, os.cpu_count() or 1))


class Librrd:
    """librrd's fetch through ctypes.

    Thread-safe: each call keeps its ctypes state in locals; the only shared state, a cache
    of decoded DS-name lists, is a dict updated under the GIL. DS names and the array that
    holds them are freed with ``rrd_free_ptrs`` (one call: ``free`` on each, then on the
    array), or ``rrd_freemem`` on each where librrd lacks it; the data with ``rrd_freemem``.
    """

    def __init__(self, name: str) -> None:
        released = ctypes.CDLL(name)  # GIL released during calls: the fetch itself
        held = ctypes.PyDLL(name)  # GIL kept: quick bookkeeping calls
        self.name = name
        self._fetch_r = released.rrd_fetch_r
        self._fetch_r.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_long),  # time_t *start
            ctypes.POINTER(ctypes.c_long),  # time_t *end
            ctypes.POINTER(ctypes.c_ulong),  # unsigned long *step
            ctypes.POINTER(ctypes.c_ulong),  # unsigned long *ds_cnt
            _Address,  # char ***ds_namv
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
            self._free_ptrs.argtypes = [_Address, ctypes.POINTER(ctypes.c_size_t)]
            self._free_ptrs.restype = None
        self._memcpy = _memcpy()
        self._names_cache: dict[tuple[bytes | None, ...], tuple[str, ...]] = {}

    def _take_names(self, names: ctypes.c_void_p, count: int) -> tuple[str, ...]:
        """The DS names of one fetch (decoded once per distinct list); librrd's copy is freed.

        ``names`` holds librrd's ``char **``: ``count`` pointers to NUL-terminated names.
        """
        address = names.value or 0
        raw = tuple((ctypes.c_char_p * count).from_address(address))  # bytes copies
        if self._free_ptrs is not None:
            self._free_ptrs(ctypes.byref(names), ctypes.byref(ctypes.c_size_t(count)))
        else:
            for pointer in (ctypes.c_void_p * count).from_address(address):
                self._freemem(pointer)
            self._freemem(address)
        decoded = self._names_cache.get(raw)
        if decoded is None:
            decoded = tuple((name or b"").decode(errors="replace") for name in raw)
            self._names_cache[raw] = decoded
        return decoded

    def _error(self) -> str:
        message = self._get_error()
        self._clear_error()
        return message.decode(errors="replace") if message else "unknown librrd error"

    def fetch_chunk(
        self, paths: Sequence[str], cf: str, start: int, end: int, resolution: int
    ) -> Chunk:
        """Fetch ``paths`` one after another in the calling thread."""
        invalid = _window_error(start, end, resolution)
        if invalid is not None:
            return Chunk([FetchError(invalid) for _ in paths], None)
        c_start, c_end = ctypes.c_long(), ctypes.c_long()
        c_step, c_count = ctypes.c_ulong(), ctypes.c_ulong()
        names, data = ctypes.c_void_p(), ctypes.c_void_p()
        arguments = (
            ctypes.byref(c_start),
            ctypes.byref(c_end),
            ctypes.byref(c_step),
            ctypes.byref(c_count),
            ctypes.byref(names),
            ctypes.byref(data),
        )
        cf_bytes = cf.encode()
        results: list[FetchResult] = []
        stacked: npt.NDArray[np.float64] | None = None
        base = 0
        grid: tuple[int, int, tuple[str, ...], int] | None = None
        all_on_grid = True
        for index, path in enumerate(paths):
            c_start.value, c_end.value, c_step.value = start, end, resolution
            self._clear_error()
            if self._fetch_r(os.fsencode(path), cf_bytes, *arguments) != 0:
                results.append(FetchError(self._error()))
                all_on_grid = False
                continue
            try:
                count = c_count.value
                ds = self._take_names(names, count)
                step = c_step.value
                rows = (c_end.value - c_start.value) // step
                key = (c_start.value, step, ds, rows)
                size = rows * count * _DOUBLE
                if grid is None:
                    grid = key
                    stacked = np.empty((len(paths), rows, count))
                    base = stacked.ctypes.data
                if key == grid and stacked is not None:
                    values = stacked[index]
                    self._memcpy(base + index * size, data, size)
                else:
                    all_on_grid = False
                    values = np.empty((rows, count))
                    self._memcpy(values.ctypes.data, data, size)
            finally:
                self._freemem(data)
            results.append(Fetched(c_start.value + step, step, ds, values))
        return Chunk(results, stacked if all_on_grid else None)

    def fetch(self, path: str, cf: str, start: int, end: int, resolution: int) -> FetchResult:
        """Fetch one file."""
        return self.fetch_chunk([path], cf, start, end, resolution).results[0]

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
    ) -> list[Chunk]:
        """Fetch ``paths`` in chunks on ``workers`` threads; chunks in the order of ``paths``."""
        workers = default_workers() if workers is None else max(1, workers)
        size = max(1, min(chunk_size, -(-len(paths) // workers)))
        parts = [paths[offset : offset + size] for offset in range(0, len(paths), size)]
        fetch = functools.partial(
            self.fetch_chunk, cf=cf, start=start, end=end, resolution=resolution
        )
        if workers == 1 or len(parts) <= 1:
            return [fetch(part) for part in parts]
        with ThreadPoolExecutor(min(workers, len(parts)), "rrd-fetch") as pool:
            return list(pool.map(fetch, parts))


def _window_error(start: int, end: int, resolution: int) -> str | None:
    """What ``rrd_fetch`` (the binding's entry) rejects before opening the file."""
    if start < _EARLIEST_START:
        return "the first entry to fetch should be after 1980"
    if end < start:
        return f"start ({start}) should be less than end ({end})"
    if resolution < 1:
        return "step must be >= 1 second"
    return None


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
