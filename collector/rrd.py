"""Read the RRD files pmxcfs writes into one polars frame per kind (node, guest, storage).

Files live under an RRD root (``/var/lib/rrdcached/db`` on a PVE node), in two generations:
``pve-node-9.0/<node>``, ``pve-vm-9.0/<vmid>``, ``pve-storage-9.0/<node>/<storage>`` and the
older ``pve2-node``, ``pve2-vm``, ``pve2-storage`` (layouts in :mod:`model.rrd_schema`).
Where both exist for one id the histories are joined: the 9.0 file wins wherever it has a
known value, the old file fills the rest (it lacks the later DS, which stay null there).
Old rows are put on the 9.0 file's time grid first: a coarser old row is repeated over the
finer rows it spans, finer old rows are consolidated (mean for AVERAGE, max for MAX). An id
with only an old file keeps the rows librrd gives for it, which may be coarser (old files
hold just 70 rows per archive).

Output frame (:attr:`SeriesRead.frame`), sorted by ``id`` then ``time``:

- ``id`` (Utf8): node name, vmid as a decimal string, or ``"<node>/<storage>"``;
- ``time`` (Int64): unix seconds, the timestamp rrdtool gives the row (end of its interval);
- every DS of the current (9.0) layout of the kind (or only those named in ``columns``),
  Float64, in layout order. ``cpu`` is in cores (fraction x ``maxcpu`` of the same row, null
  if either is unknown, whether or not ``maxcpu`` is among ``columns``); DERIVE DS are the
  per-second rates rrdtool returns; memory and disk in bytes. Unknown values are null.

The archive is the finest one whose rows still reach back to the window start (judged from
``now``, as pmxcfs updates every file each minute), unless a resolution is given. Start and
end are aligned to the resolution before fetching; rows are those ending in (start, end]
(librrd's extra row starting at ``end`` is cut). With an rrdcached address, pending updates
are flushed first (one ``flushcached`` call; if that fails, every fetch goes through the
daemon, and a finding says so).

Files are fetched through librrd's ``rrd_fetch_r`` (:mod:`collector.rrd_fast`, a C loop or
ctypes: values arrive as C double arrays, no per-value Python objects), on a few threads, or
for many files on a pool of processes, narrowed to the DS the frame needs plus a per-row
"known" flag.
The ``rrdtool`` binding is used instead when librrd cannot be loaded that way (one info
finding ``rrd-slow-path`` per read says so), when fetches must go through rrdcached (a
failed flush, or ``RRDCACHED_ADDRESS`` set); both paths give identical frames and findings.

A read that is only wanted as its EWMA (:meth:`PendingRead.ewma`, what a collect needs of the
thousands of guest series) skips the frame: the fetched arrays go, chunk by chunk as they come,
to :func:`collector.smoothing.ewma_parts`, which gives the same values to the bit.

Bad input never aborts a read: unreadable, truncated or foreign files, a DS set that differs
from the layout, requested ids without a file, series with every value unknown and series
whose newest known value is older than the staleness limit each become a
:class:`model.Finding`, and every other id is still read. "Unknown" and "stale" are judged
on every DS of the layout (``cpu`` as cores), whatever ``columns`` selects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Literal, TypeVar, cast

import numpy as np
import numpy.typing as npt
import polars as pl
import rrdtool

from collector import rrd_fast
from collector.rrd_fast import FetchError, Librrd, Selection
from collector.series import ID_COLUMN, TIME_COLUMN, conform, select_columns, value_columns
from collector.smoothing import EwmaPart, characteristic, ewma_parts, frame_of_parts
from model import Finding
from model.rrd_schema import LAYOUTS, STEP, Kind, RrdLayout

DEFAULT_RRD_ROOT = Path("/var/lib/rrdcached/db")
DEFAULT_STALE_AFTER = 600
"""Seconds: a series whose newest known value is older than this before ``now`` is stale."""

ConsolidationFunction = Literal["AVERAGE", "MAX"]
_STEP_COLUMN = "_step"
_KNOWN_COLUMN = "_known"
"""Internal: the row has a known value in some DS of the layout (cpu counted as cores)."""
_INTERNAL_COLUMNS = (ID_COLUMN, TIME_COLUMN, _STEP_COLUMN, _KNOWN_COLUMN)
_RRD_ERRORS = (rrdtool.OperationalError, rrdtool.ProgrammingError, OSError)
_PLAIN_EPOCH = 1_000_000_000
"""The binding passes times as text to rrd_parsetime, which reads small numbers as dates
(``-s 315360000`` is "month 315360000"): windows starting earlier keep the binding."""


@dataclass(slots=True)
class SeriesRead:
    """What one :func:`read_series` call produced."""

    frame: pl.DataFrame
    findings: list[Finding] = field(default_factory=list)
    found_ids: set[str] = field(default_factory=set)
    """Ids with at least one readable file (whether or not it held known values)."""


@dataclass(slots=True)
class SeriesView:
    """What :meth:`PendingRead.ewma` produced: the series already reduced to their EWMA."""

    frame: pl.DataFrame
    """``characteristic(read.frame, columns, "ewma", ...)`` of the read (one row per id)."""
    findings: list[Finding] = field(default_factory=list)
    found_ids: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Block:
    """Rows of files sharing one time grid and DS list, already cut to the window."""

    ids: list[str]
    first_time: int
    step: int
    ds: tuple[str, ...]
    """The names of ``values``' columns (the read's selection)."""
    values: npt.NDArray[np.float64]
    """``[files, rows, ds]``; NaN where unknown."""
    known: npt.NDArray[np.bool_]
    """``[files, rows]``: some DS of the layout is known (``cpu`` as cores)."""


@dataclass(frozen=True, slots=True)
class _Window:
    """One read's fetch parameters (aligned), for either fetch path."""

    cf: str
    resolution: int
    start: int
    end: int
    options: list[str]
    """Arguments for the binding after path and CF (``--daemon`` first when needed)."""
    selection: Selection
    """The DS columns the frame needs, and those that make a row known."""


def selection_for(kind: Kind, columns: tuple[str, ...]) -> Selection:
    """What :func:`read_series` fetches of each file of ``kind`` for ``columns``.

    The columns (with ``maxcpu`` when ``cpu`` becomes cores), rows known from the layout's DS.

    Cores are known only with ``maxcpu``, itself a layout DS: ``cpu`` then adds nothing to
    "known" and is left out of it.
    """
    layout_ds = value_columns(kind)
    cores = "cpu" in layout_ds and "maxcpu" in layout_ds
    needed = set(columns) | ({"maxcpu"} if cores and "cpu" in columns else set())
    known_from = tuple(name for name in layout_ds if not (cores and name == "cpu"))
    return Selection(tuple(name for name in layout_ds if name in needed), known_from)


def _kept_rows(first_time: int, step: int, rows: int, end: int) -> int:
    """Rows ending at or before ``end``: librrd's extra row starting at ``end`` is cut."""
    return min(rows, max(0, -(-(end - first_time) // step) + 1))


def _ids_in(rrd_root: Path, layout: RrdLayout, findings: list[Finding] | None = None) -> set[str]:
    """Ids with a file of ``layout`` under ``rrd_root`` (an unlistable directory: a finding)."""
    directory = rrd_root / layout.directory
    ids: set[str] = set()
    try:
        if not directory.is_dir():
            return ids
        with os.scandir(directory) as entries:
            if layout.kind != "storage":
                return {entry.name for entry in entries if entry.is_file()}
            for node in entries:
                if node.is_dir():
                    with os.scandir(node.path) as storages:
                        ids.update(f"{node.name}/{s.name}" for s in storages if s.is_file())
    except OSError as error:
        if findings is not None:
            message = f"cannot list RRD files: {error}"
            findings.append(Finding("rrd-unreadable", str(directory), message, "error"))
    return ids


def list_ids(rrd_root: Path, kind: Kind) -> set[str]:
    """Every id of ``kind`` with a file in either generation's directory."""
    current, old = LAYOUTS[kind]
    return _ids_in(rrd_root, current) | _ids_in(rrd_root, old)


def choose_resolution(layout: RrdLayout, start: int, now: int) -> int:
    """Seconds per row of the finest archive of ``layout`` that still covers ``start``.

    An archive of ``rows`` rows of ``res`` seconds ends at the last whole ``res`` before
    ``now`` and reaches back ``rows * res`` from there. When none reaches ``start``, the
    coarsest archive (the longest history) is chosen.
    """
    resolutions = sorted((steps * STEP, rows) for steps, rows in layout.rras)
    for resolution, rows in resolutions:
        if (now // resolution) * resolution - rows * resolution <= start:
            return resolution
    return resolutions[-1][0]


def _flush(daemon: str, paths: list[str], findings: list[Finding]) -> bool:
    """Flush pending updates of ``paths`` through rrdcached; False if that failed."""
    if not paths:
        return True
    try:
        rrdtool.flushcached("--daemon", daemon, *paths)
    except _RRD_ERRORS as error:
        findings.append(
            Finding(
                "rrd-flush",
                daemon,
                f"flushing through rrdcached failed ({error}); reading file by file "
                "through the daemon, pending updates of failing files are not seen",
                "warning",
            )
        )
        return False
    return True


def _schema_problem(path: str, layout: RrdLayout, ds: tuple[str, ...]) -> Finding:
    """The finding for a file whose DS list is not the layout's (error if none is usable)."""
    usable = set(ds) & set(layout.ds)
    if not usable:
        message = f"no data source of the {layout.directory} layout (has {', '.join(ds)})"
        return Finding("rrd-schema", path, f"{message}; file ignored", "error")
    missing = ", ".join(name for name in layout.ds if name not in usable) or "-"
    extra = ", ".join(name for name in ds if name not in usable) or "-"
    message = (
        f"data sources differ from the {layout.directory} layout (missing: {missing}; "
        f"unexpected: {extra}); matching ones read by name"
    )
    return Finding("rrd-schema", path, message, "warning")


def _usable(path: str, layout: RrdLayout, ds: tuple[str, ...], findings: list[Finding]) -> bool:
    """Whether a fetched file's DS list can be read (a finding when it is not the layout's)."""
    if ds == layout.ds:
        return True
    problem = _schema_problem(path, layout, ds)
    findings.append(problem)
    return problem.severity != "error"


def _fetch_one(
    ident: str, path: str, layout: RrdLayout, window: _Window, findings: list[Finding]
) -> _Block | None:
    """Fetch one file through the rrdtool binding; None (and a finding) if it is unusable."""
    try:
        (first, _last, step), names, rows = rrdtool.fetch(path, window.cf, *window.options)
    except _RRD_ERRORS as error:
        findings.append(Finding("rrd-unreadable", path, f"cannot read RRD: {error}", "error"))
        return None
    ds = tuple(names)
    if not _usable(path, layout, ds, findings):
        return None
    first_time = int(first) + int(step)
    kept = _kept_rows(first_time, int(step), len(rows), window.end)
    values, known = window.selection.narrow(
        ds, np.array(rows[:kept], dtype=float).reshape(1, kept, len(ds))
    )
    return _Block([ident], first_time, int(step), window.selection.columns, values, known)


def _blocks_of_chunks(
    chunks: Iterable[rrd_fast.Chunk],
    ids: list[str],
    paths: list[str],
    layout: RrdLayout,
    window: _Window,
    findings: list[Finding],
) -> Iterator[list[_Block]]:
    """The blocks of each fetched chunk, as the chunks come: each run of usable files on a
    chunk's grid is one."""
    offset = 0
    for chunk in chunks:
        blocks: list[_Block] = []
        entries = chunk.entries
        if chunk.stacked is not None and entries.count(layout.ds) == len(entries):
            run = list(range(len(entries)))  # the usual chunk: all on its grid, as laid out
            _add_run(blocks, chunk, run, ids, offset, window)
            offset += len(entries)
            yield blocks
            continue
        run = []  # consecutive usable files on the chunk's grid
        on_grid = chunk.on_grid.tolist() if chunk.on_grid is not None else None
        for index, entry in enumerate(chunk.entries):
            if on_grid is not None and on_grid[index]:  # the entry is the file's DS list
                ds = cast(tuple[str, ...], entry)
                if ds == layout.ds or _usable(paths[offset + index], layout, ds, findings):
                    run.append(index)
                    continue
            elif isinstance(entry, FetchError):
                path = paths[offset + index]
                message = f"cannot read RRD: {entry.message}"
                findings.append(Finding("rrd-unreadable", path, message, "error"))
            else:
                result = cast(rrd_fast.Fetched, entry)
                if _usable(paths[offset + index], layout, result.ds, findings):
                    _add_run(blocks, chunk, run, ids, offset, window)
                    blocks.append(_block_of(ids[offset + index], result, window))
            _add_run(blocks, chunk, run, ids, offset, window)
        _add_run(blocks, chunk, run, ids, offset, window)
        offset += len(entries)
        yield blocks


def _block_of(ident: str, result: rrd_fast.Fetched, window: _Window) -> _Block:
    """The block of one file fetched with the window's selection (off its chunk's grid)."""
    assert result.known is not None
    kept = _kept_rows(result.first_time, result.step, result.values.shape[0], window.end)
    values, known = result.values[None, :kept], result.known[None, :kept]
    return _Block([ident], result.first_time, result.step, window.selection.columns, values, known)


def _add_run(
    blocks: list[_Block],
    chunk: rrd_fast.Chunk,
    run: list[int],
    ids: list[str],
    offset: int,
    window: _Window,
) -> None:
    """The files of ``run`` (consecutive indexes on ``chunk``'s grid) as one block; run emptied."""
    if not run:
        return
    assert chunk.grid is not None
    assert chunk.known is not None
    part = slice(run[0], run[-1] + 1)
    kept = _kept_rows(chunk.first_time, chunk.step, chunk.grid.shape[1], window.end)
    values, known = chunk.grid[part, :kept], chunk.known[part, :kept]
    run_ids = ids[offset + run[0] : offset + run[-1] + 1]
    blocks.append(
        _Block(run_ids, chunk.first_time, chunk.step, window.selection.columns, values, known)
    )
    run.clear()


_Blocks = Callable[[], Iterator[list[_Block]]]
"""A generation's fetch, started: called once, it yields the blocks of each fetched chunk
(in ``ids`` order) as the chunks come."""


def _start_generation(
    rrd_root: Path,
    layout: RrdLayout,
    ids: list[str],
    window: _Window,
    findings: list[Finding],
    library: Librrd | None,
) -> tuple[_Blocks, Callable[[], None]]:
    """Start fetching the files of ``ids`` in ``layout``'s directory: a function yielding
    their blocks (see :data:`_Blocks`), and one abandoning the fetch instead. What the
    fetch finds wrong with the files goes to ``findings``.

    Through librrd the fetch is submitted now (on the process pool for many files, it runs
    meanwhile); through the binding it runs when the blocks are asked for.
    """
    directory = os.path.join(rrd_root, layout.directory)
    paths = [f"{directory}/{ident}" for ident in ids]
    if library is not None:
        pending = library.submit_files(
            paths,
            window.cf,
            window.start,
            window.end,
            window.resolution,
            selection=window.selection,
        )

        def fast() -> Iterator[list[_Block]]:
            return _blocks_of_chunks(pending.each(), ids, paths, layout, window, findings)

        return fast, pending.abandon

    def through_binding() -> Iterator[list[_Block]]:
        blocks: list[_Block] = []
        for ident, path in zip(ids, paths, strict=True):
            block = _fetch_one(ident, path, layout, window, findings)
            if block is not None:
                blocks.append(block)
        yield blocks

    return through_binding, lambda: None


def _old_files_with_news(
    rrd_root: Path, layout: RrdLayout, ids: list[str], has_current: set[str], start: int
) -> list[str]:
    """Old-generation ids worth fetching: all but those superseded and untouched since ``start``.

    Once an id has a 9.0 file, pmxcfs stops writing its old one. An old file last modified
    before the window start holds no row inside the window (a row is only written once an
    update passes its end), so fetching it would add nothing: this skips the bulk of old
    files after an upgrade. Ids with only an old file are always fetched (for findings).
    """
    directory = os.path.join(rrd_root, layout.directory)
    needed: list[str] = []
    for ident in ids:
        if ident in has_current:
            try:
                if os.stat(f"{directory}/{ident}").st_mtime < start:
                    continue
            except OSError:
                pass  # the fetch reports it
        needed.append(ident)
    return needed


def _internal_schema(columns: tuple[str, ...]) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {ID_COLUMN: pl.Utf8(), TIME_COLUMN: pl.Int64()}
    schema.update({name: pl.Float64() for name in columns})
    schema.update({_STEP_COLUMN: pl.Int64(), _KNOWN_COLUMN: pl.Boolean()})
    return schema


@dataclass(slots=True)
class _Rows:
    """The rows of blocks as flat arrays, in block order: a frame before it is made."""

    ids: list[str]
    sizes: npt.NDArray[np.int64]
    """Rows of each id (consecutive)."""
    times: npt.NDArray[np.int64]
    steps: npt.NDArray[np.int64]
    known: npt.NDArray[np.bool_]
    values: list[npt.NDArray[np.float64]]
    """One array per column of the read, NaN where unknown."""


def _frame_of(kind: Kind, blocks: list[_Block], columns: tuple[str, ...]) -> pl.DataFrame:
    """The frame of ``columns`` (plus step and known columns) of ``blocks``, in their order:
    the arrays of :func:`_rows_of` handed to polars as they are, NaN marked as null."""
    if not blocks:
        return pl.DataFrame(schema=_internal_schema(columns))
    rows = _rows_of(kind, blocks, columns)
    owner = np.repeat(np.arange(len(rows.ids)), rows.sizes)
    return pl.DataFrame(
        [
            pl.Series(ID_COLUMN, rows.ids, dtype=pl.Utf8).gather(owner),
            pl.Series(TIME_COLUMN, rows.times, dtype=pl.Int64),
            *(
                pl.Series(name, output, dtype=pl.Float64, nan_to_null=True)
                for output, name in zip(rows.values, columns, strict=True)
            ),
            pl.Series(_STEP_COLUMN, rows.steps, dtype=pl.Int64),
            pl.Series(_KNOWN_COLUMN, rows.known, dtype=pl.Boolean),
        ]
    )


def _rows_of(kind: Kind, blocks: list[_Block], columns: tuple[str, ...]) -> _Rows:
    """The rows of ``columns`` (plus step and known flags) of ``blocks``, in their order.

    Each output column is one numpy array filled block by block (one strided copy, ``cpu``
    multiplied into cores on the way). Blocks come in id order and rows in time order, so
    no sort is needed. ``blocks`` is emptied on the way: each block's memory is released as
    soon as it has been copied.
    """
    layout_ds = value_columns(kind)
    cores = "cpu" in layout_ds and "maxcpu" in layout_ds
    ids = [ident for block in blocks for ident in block.ids]
    rows_per_file = np.repeat(
        [block.values.shape[1] for block in blocks], [len(block.ids) for block in blocks]
    ).astype(np.int64)
    ends = np.cumsum([block.values.shape[0] * block.values.shape[1] for block in blocks])
    total = int(ends[-1]) if blocks else 0
    outputs = [np.empty(total) for _ in columns]
    times = np.empty(total, np.int64)
    steps = np.empty(total, np.int64)
    known = np.empty(total, np.bool_)
    while blocks:  # last block first, so that popping releases each one after its copy
        block = blocks.pop()
        files, rows, _ = block.values.shape
        part = slice(int(ends[len(blocks)]) - files * rows, int(ends[len(blocks)]))
        times[part] = np.tile(block.first_time + block.step * np.arange(rows), files)
        steps[part] = block.step
        known[part] = block.known.reshape(-1)
        position = {name: index for index, name in enumerate(block.ds)}
        for output, name in zip(outputs, columns, strict=True):
            target = output[part].reshape(files, rows)
            source = position.get(name)
            if cores and name == "cpu":
                maxcpu = position.get("maxcpu")
                if source is None or maxcpu is None:
                    target.fill(np.nan)
                else:
                    values = block.values
                    np.multiply(values[:, :, source], values[:, :, maxcpu], out=target)
            elif source is None:
                target.fill(np.nan)
            else:
                np.copyto(target, block.values[:, :, source])
    return _Rows(ids, rows_per_file, times, steps, known, outputs)


def _value_columns_of(frame: pl.DataFrame) -> list[str]:
    return [name for name in frame.columns if name not in _INTERNAL_COLUMNS]


def _regrid(old: pl.DataFrame, target: pl.DataFrame, kind: Kind, cf: str) -> pl.DataFrame:
    """Put old-generation rows on the time grid of the current file of the same id.

    Rows already on the grid (same step, the usual case) pass as they are; coarser rows are
    repeated over the finer rows they span and finer rows consolidated per grid row.
    """
    columns = _value_columns_of(old)
    grid = target.group_by(ID_COLUMN).agg(pl.col(_STEP_COLUMN).first().alias("_target_step"))
    old = old.join(grid, on=ID_COLUMN, how="inner")
    same_step = pl.col(_STEP_COLUMN) == pl.col("_target_step")
    aligned = old.filter(same_step).drop("_target_step")
    other = old.filter(~same_step)
    if other.is_empty():
        return aligned
    target_step = pl.col("_target_step")
    repeat = pl.max_horizontal(pl.col(_STEP_COLUMN) // target_step, pl.lit(1))
    grid_time = (
        (pl.col(TIME_COLUMN) - pl.col("_offset") * target_step + target_step - 1) // target_step
    ) * target_step
    consolidate = [pl.col(columns).mean() if cf == "AVERAGE" else pl.col(columns).max()]
    if _KNOWN_COLUMN in old.columns:
        consolidate.append(pl.col(_KNOWN_COLUMN).any())
    regridded = (
        other.with_columns(pl.int_ranges(0, repeat).alias("_offset"))
        .explode("_offset")
        .with_columns(grid_time.alias(TIME_COLUMN))
        .group_by(ID_COLUMN, TIME_COLUMN)
        .agg(*consolidate, target_step.first().alias(_STEP_COLUMN))
    )
    return pl.concat([aligned, regridded.select(aligned.columns)], how="vertical")


def _join_generations(
    current: pl.DataFrame, old: pl.DataFrame, kind: Kind, cf: str
) -> pl.DataFrame:
    """The current generation's values, old ones wherever the current file has none.

    Only ids present in both generations are joined; the result is in (id, time) order.
    """
    columns = _value_columns_of(current)
    if old.is_empty():
        return current
    shared_ids = old.select(pl.col(ID_COLUMN).unique()).join(
        current.select(pl.col(ID_COLUMN).unique()), on=ID_COLUMN, how="semi"
    )
    old_only = old.join(shared_ids, on=ID_COLUMN, how="anti")
    current_only = current.join(shared_ids, on=ID_COLUMN, how="anti")
    current_shared = current.join(shared_ids, on=ID_COLUMN, how="semi")
    regridded = _regrid(old.join(shared_ids, on=ID_COLUMN, how="semi"), current_shared, kind, cf)
    # The current file's rows span the whole window on the grid: old rows can only fill them.
    joined = current_shared.join(
        regridded.drop(_STEP_COLUMN), on=[ID_COLUMN, TIME_COLUMN], how="left", suffix="_old"
    ).select(
        ID_COLUMN,
        TIME_COLUMN,
        *(pl.coalesce(name, f"{name}_old").alias(name) for name in columns),
        _STEP_COLUMN,
        *(
            [pl.col(_KNOWN_COLUMN) | pl.col(f"{_KNOWN_COLUMN}_old").fill_null(False)]
            if _KNOWN_COLUMN in current.columns
            else []
        ),
    )
    parts = [current_only, joined, old_only.select(joined.columns)]
    return pl.concat(parts, how="vertical").sort(ID_COLUMN, TIME_COLUMN)


class _Files:
    """The files of a read: per id, its file in each generation that has one."""

    def __init__(self, root: Path, *generations: tuple[RrdLayout, set[str]]) -> None:
        self._generations = [
            (os.path.join(root, layout.directory), ids) for layout, ids in generations
        ]

    def of(self, ident: str) -> list[str]:
        """The paths of ``ident``'s files, current generation first."""
        return [f"{directory}/{ident}" for directory, ids in self._generations if ident in ids]

    def every(self, idents: Iterable[str]) -> list[str]:
        """The paths of the files of ``idents``, in that order."""
        return list(chain.from_iterable(self.of(ident) for ident in idents))


def _last_update(paths: list[str]) -> int | None:
    """The newest last-update time of ``paths`` (None when none can be read)."""
    times: list[int] = []
    for path in paths:
        try:
            times.append(int(rrdtool.info(path)["last_update"]))
        except (*_RRD_ERRORS, KeyError):
            continue
    return max(times, default=None)


def _quality_findings(
    frame: pl.DataFrame,
    kind: Kind,
    files: _Files,
    end: int,
    now: int,
    stale_after: int,
) -> list[Finding]:
    """Series with every value unknown, and series whose newest known value is stale.

    Staleness is judged only when the window reaches into the last ``stale_after`` seconds.
    A series with no known value in such a window whose files were last updated before that
    is stale, not merely unknown.
    """
    if frame.is_empty():
        return []
    if _KNOWN_COLUMN in frame.columns:
        known = pl.col(_KNOWN_COLUMN)
    else:
        known = pl.any_horizontal(pl.col(value_columns(kind)).is_not_null())
    return _series_findings(_per_series(frame, known), kind, files, end, now, stale_after)


_PerSeries = tuple[list[str], npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]]
"""Per id, in id order: the id, whether a row is known, the newest known row's time (int64
minimum when none) and the largest step."""


def _series_findings(
    series: _PerSeries, kind: Kind, files: _Files, end: int, now: int, stale_after: int
) -> list[Finding]:
    """:func:`_quality_findings` of the series summed up as :data:`_PerSeries`."""
    ids, any_known, last_known, steps = series
    judge_staleness = end >= now - stale_after
    findings: list[Finding] = []
    for index in np.flatnonzero(~any_known).tolist():
        ident = ids[index]
        last_update = _last_update(files.of(ident)) if judge_staleness else None
        if last_update is not None and last_update < now - stale_after:
            message = (
                f"no known value in the window; files last updated at {last_update}, "
                f"{now - last_update} s before {now}"
            )
            findings.append(Finding("rrd-stale", f"{kind} {ident}", message, "warning"))
        else:
            message = "every value in the requested window is unknown"
            findings.append(Finding("rrd-all-unknown", f"{kind} {ident}", message, "warning"))
    if not judge_staleness:
        return findings
    limit = np.maximum(stale_after, 2 * steps)
    for index in np.flatnonzero(any_known & (last_known < now - limit)).tolist():
        ident, newest = ids[index], int(last_known[index])
        message = f"newest known value at {newest}, {now - newest} s before {now}"
        findings.append(Finding("rrd-stale", f"{kind} {ident}", message, "warning"))
    return findings


def _per_series(frame: pl.DataFrame, known: pl.Expr) -> _PerSeries:
    """The frame's series summed up, a row being known where ``known`` holds. One reduction
    per column over the runs of rows of each id (a frame that does not hold each id's rows
    together is sorted first)."""
    run = frame[ID_COLUMN].rle_id().to_numpy()
    starts = np.flatnonzero(np.diff(run, prepend=-1))
    ids: list[str] = frame[ID_COLUMN].gather(starts).to_list()
    if len(set(ids)) != len(ids) or ids != sorted(ids):
        return _per_series(frame.sort(ID_COLUMN, TIME_COLUMN), known)
    is_known = frame.select(known.fill_null(False)).to_series().to_numpy()
    return _summed_up(
        ids, starts, is_known, frame[TIME_COLUMN].to_numpy(), frame[_STEP_COLUMN].to_numpy()
    )


def _summed_up(
    ids: list[str],
    starts: npt.NDArray[np.int64],
    known: npt.NDArray[np.bool_],
    times: npt.NDArray[np.int64],
    steps: npt.NDArray[np.int64],
) -> _PerSeries:
    """:data:`_PerSeries` of rows grouped by id at ``starts`` (no empty group)."""
    known_times = np.where(known, times, np.iinfo(np.int64).min)
    return (
        ids,
        np.logical_or.reduceat(known, starts),
        np.maximum.reduceat(known_times, starts),
        np.maximum.reduceat(steps, starts),
    )


def read_series(
    rrd_root: Path,
    kind: Kind,
    ids: Iterable[str] | None,
    start: int,
    end: int,
    *,
    cf: ConsolidationFunction = "AVERAGE",
    resolution: int | None = None,
    daemon: str | None = None,
    now: int | None = None,
    stale_after: int = DEFAULT_STALE_AFTER,
    columns: Sequence[str] | None = None,
) -> SeriesRead:
    """Read ``kind`` series of ``ids`` (None: every id on disk) over ``[start, end]``.

    ``resolution`` (seconds per row) overrides the archive choice; ``daemon`` (e.g.
    ``unix:/var/run/rrdcached.sock``) flushes pending updates through rrdcached first;
    ``now`` (default ``end``) is the reference for archive choice and staleness;
    ``columns`` (default: every DS of the layout) keeps only those DS columns, in layout
    order (ValueError for a name that is not a DS of ``kind``): less frame to build.
    """
    return start_read(
        rrd_root,
        kind,
        ids,
        start,
        end,
        cf=cf,
        resolution=resolution,
        daemon=daemon,
        now=now,
        stale_after=stale_after,
        columns=columns,
    ).result()


R = TypeVar("R")


class PendingRead:
    """A :func:`read_series` under way (see :func:`start_read`): :meth:`result` or
    :meth:`ewma` once, or :meth:`abandon`."""

    def __init__(
        self,
        finish: Callable[[], SeriesRead],
        abandons: Sequence[Callable[[], None]],
        finish_ewma: Callable[[float], SeriesView],
    ) -> None:
        self._finish: Callable[[], SeriesRead] | None = finish
        self._abandons = abandons
        self._finish_ewma = finish_ewma

    def result(self) -> SeriesRead:
        """What :func:`read_series` returns (waits for the fetch). If it fails, what of the
        fetch is still under way is abandoned (a part already taken abandons as nothing)."""
        return self._take(lambda finish: finish())

    def ewma(self, half_life_s: float) -> SeriesView:
        """The read reduced to the ``ewma`` view of its columns: the frame
        ``characteristic(result().frame, columns, "ewma", half_life_s=half_life_s)`` with the
        findings and found ids of :meth:`result`, to the bit, but without making the read's
        long frame when no old-generation rows must be joined in (the usual case): its
        arrays go straight to :func:`collector.smoothing.ewma_parts`."""
        return self._take(lambda _: self._finish_ewma(half_life_s))

    def _take(self, finishing: Callable[[Callable[[], SeriesRead]], R]) -> R:
        if self._finish is None:
            raise RuntimeError("this read was already finished or abandoned")
        finish, self._finish = self._finish, None
        try:
            return finishing(finish)
        except BaseException:
            for abandon in self._abandons:
                abandon()
            raise

    def abandon(self) -> None:
        """Drop the read (its fetch stopped or waited for, nothing kept)."""
        if self._finish is None:
            return
        self._finish = None
        for abandon in self._abandons:
            abandon()


def _ewma_view(read: SeriesRead, half_life_s: float) -> SeriesView:
    columns = _value_columns_of(read.frame)
    view = characteristic(read.frame, columns, "ewma", half_life_s=half_life_s)
    return SeriesView(view, read.findings, read.found_ids)


def start_read(
    rrd_root: Path,
    kind: Kind,
    ids: Iterable[str] | None,
    start: int,
    end: int,
    *,
    cf: ConsolidationFunction = "AVERAGE",
    resolution: int | None = None,
    daemon: str | None = None,
    now: int | None = None,
    stale_after: int = DEFAULT_STALE_AFTER,
    columns: Sequence[str] | None = None,
) -> PendingRead:
    """:func:`read_series`, started: the files are listed (and flushed) now and, for a read
    of many files through librrd, fetched on the process pool while the caller goes on
    (e.g. parses the guest configs); the frame is built by :meth:`PendingRead.result` (or
    the series go straight to their EWMA, :meth:`PendingRead.ewma`).
    Invalid arguments raise here."""
    selected = select_columns(kind, columns)
    if end < start:
        raise ValueError(f"window end {end} is before its start {start}")
    if resolution is not None and resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    reference = end if now is None else now
    current_layout, old_layout = LAYOUTS[kind]
    findings: list[Finding] = []
    on_disk_current = _ids_in(rrd_root, current_layout, findings)
    on_disk_old = _ids_in(rrd_root, old_layout, findings)
    if ids is None:
        wanted = sorted(on_disk_current | on_disk_old)
    else:
        wanted = sorted(set(ids))
        for ident in wanted:
            if ident not in on_disk_current and ident not in on_disk_old:
                findings.append(
                    Finding("rrd-missing", f"{kind} {ident}", "no RRD file in either generation")
                )
    current_ids = [ident for ident in wanted if ident in on_disk_current]
    old_ids = [ident for ident in wanted if ident in on_disk_old]

    if resolution is None:
        resolution = choose_resolution(
            current_layout if current_ids else old_layout, start, reference
        )
    aligned_start = (start // resolution) * resolution
    aligned_end = -(-end // resolution) * resolution
    options = ["-r", str(resolution), "-s", str(aligned_start), "-e", str(aligned_end)]
    through_daemon = os.environ.get("RRDCACHED_ADDRESS", "") != ""  # as librrd's rrd_fetch
    binding_only = through_daemon or aligned_start < _PLAIN_EPOCH
    files = _Files(rrd_root, (current_layout, set(current_ids)), (old_layout, set(old_ids)))
    if daemon is not None and not _flush(daemon, files.every(wanted), findings):
        options = ["--daemon", daemon, *options]
        binding_only = True

    window = _Window(
        cf, resolution, aligned_start, aligned_end, options, selection_for(kind, selected)
    )
    old_needed = _old_files_with_news(rrd_root, old_layout, old_ids, on_disk_current, aligned_start)
    library = _fast_library(bool(current_ids or old_needed), binding_only, findings)
    # Each generation's fetch reports into its own list: the findings of a read are always
    # those of the listing, of the current files, of the old files, then of the series.
    current_findings: list[Finding] = []
    old_findings: list[Finding] = []
    current_blocks, drop_current = _start_generation(
        rrd_root, current_layout, current_ids, window, current_findings, library
    )
    try:
        old_blocks, drop_old = _start_generation(
            rrd_root, old_layout, old_needed, window, old_findings, library
        )
    except BaseException:
        drop_current()
        raise

    def finish() -> SeriesRead:
        return joined_read(_all(current_blocks()), _all(old_blocks()))

    def joined_read(current_part: list[_Block], old_part: list[_Block]) -> SeriesRead:
        findings.extend(current_findings + old_findings)
        found = {ident for block in chain(current_part, old_part) for ident in block.ids}
        current = _frame_of(kind, current_part, selected)
        old = _frame_of(kind, old_part, selected)
        joined = _join_generations(current, old, kind, cf)
        findings.extend(_quality_findings(joined, kind, files, end, reference, stale_after))
        return SeriesRead(conform(joined, kind, columns=selected), findings, found)

    def finish_ewma(half_life_s: float) -> SeriesView:
        old_part = _all(old_blocks())
        if old_part:
            return _ewma_view(joined_read(_all(current_blocks()), old_part), half_life_s)
        # Chunk by chunk as the fetch hands them over: the EWMA and the findings of an id
        # depend on its own rows only.
        parts: list[EwmaPart] = []
        series_findings: list[Finding] = []
        found: set[str] = set()
        for blocks in current_blocks():
            rows = _rows_of(kind, blocks, selected)
            found.update(rows.ids)
            with_rows = rows.sizes > 0  # an id without rows has none in the frame either
            ids = [ident for ident, kept in zip(rows.ids, with_rows.tolist(), strict=True) if kept]
            sizes = rows.sizes[with_rows]
            if ids:
                starts = np.cumsum(sizes) - sizes
                series = _summed_up(ids, starts, rows.known, rows.times, rows.steps)
                series_findings += _series_findings(
                    series, kind, files, end, reference, stale_after
                )
            values = dict(zip(selected, rows.values, strict=True))
            parts.append(ewma_parts(ids, rows.times, sizes, values, half_life_s=half_life_s))
        findings.extend(current_findings + old_findings + series_findings)
        return SeriesView(frame_of_parts(parts, selected), findings, found)

    return PendingRead(finish, (drop_current, drop_old), finish_ewma)


def _all(per_chunk: Iterator[list[_Block]]) -> list[_Block]:
    return [block for blocks in per_chunk for block in blocks]


def _fast_library(fetching: bool, binding_only: bool, findings: list[Finding]) -> Librrd | None:
    """librrd through ctypes when it may be used for this read, else None (the binding).

    ``binding_only``: fetches through rrdcached (``rrd_fetch_r`` reads files only) or a
    window the binding's time parser reads differently.
    """
    if not fetching or binding_only:
        return None
    library = rrd_fast.load_librrd()
    if library is None:
        names = ", ".join(rrd_fast.LIBRARY_NAMES)
        message = (
            f"librrd could not be loaded through ctypes (tried {names}); files are read "
            "through the slower rrdtool binding"
        )
        findings.append(Finding("rrd-slow-path", "librrd", message, "info"))
    return library
