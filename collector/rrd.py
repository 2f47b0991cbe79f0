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
- every DS of the current (9.0) layout of the kind, Float64, in layout order. ``cpu`` is in
  cores (fraction x ``maxcpu`` of the same row, null if either is unknown); DERIVE DS are the
  per-second rates rrdtool returns; memory and disk in bytes. Unknown values are null.

The archive is the finest one whose rows still reach back to the window start (judged from
``now``, as pmxcfs updates every file each minute), unless a resolution is given. Start and
end are aligned to the resolution before fetching; rows are those ending in (start, end]
(librrd's extra row starting at ``end`` is cut). With an rrdcached address, pending updates
are flushed first (one ``flushcached`` call; if that fails, every fetch goes through the
daemon, and a finding says so).

Bad input never aborts a read: unreadable, truncated or foreign files, a DS set that differs
from the layout, requested ids without a file, series with every value unknown and series
whose newest known value is older than the staleness limit each become a
:class:`model.Finding`, and every other id is still read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import rrdtool

from collector.series import (
    ID_COLUMN,
    TIME_COLUMN,
    conform,
    cpu_to_cores,
    empty_frame,
    value_columns,
    value_series,
)
from model import Finding
from model.rrd_schema import LAYOUTS, STEP, Kind, RrdLayout

DEFAULT_RRD_ROOT = Path("/var/lib/rrdcached/db")
DEFAULT_STALE_AFTER = 600
"""Seconds: a series whose newest known value is older than this before ``now`` is stale."""

ConsolidationFunction = Literal["AVERAGE", "MAX"]
_STEP_COLUMN = "_step"
_RRD_ERRORS = (rrdtool.OperationalError, rrdtool.ProgrammingError, OSError)


@dataclass(slots=True)
class SeriesRead:
    """What one :func:`read_series` call produced."""

    frame: pl.DataFrame
    findings: list[Finding] = field(default_factory=list)
    found_ids: set[str] = field(default_factory=set)
    """Ids with at least one readable file (whether or not it held known values)."""


@dataclass(slots=True)
class _Fetched:
    id: str
    first_time: int
    step: int
    ds: tuple[str, ...]
    values: npt.NDArray[np.float64]
    """One row per DS, one column per archive row (column-major); NaN where unknown."""


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


def _fetch_one(
    ident: str,
    path: str,
    layout: RrdLayout,
    cf: str,
    options: list[str],
    end: int,
    findings: list[Finding],
) -> _Fetched | None:
    """Fetch one file; None (and a finding) when it cannot be used.

    librrd appends the row that starts at ``end``: it lies outside the window and is cut.
    """
    try:
        (first, _last, step), names, rows = rrdtool.fetch(path, cf, *options)
    except _RRD_ERRORS as error:
        findings.append(Finding("rrd-unreadable", path, f"cannot read RRD: {error}", "error"))
        return None
    ds = tuple(names)
    if ds != layout.ds:
        problem = _schema_problem(path, layout, ds)
        findings.append(problem)
        if problem.severity == "error":
            return None
    first_time = int(first) + int(step)
    kept = min(len(rows), max(0, -(-(end - first_time) // step) + 1))
    values = np.array(rows[:kept], dtype=float).reshape(kept, len(ds)).T
    return _Fetched(ident, first_time, int(step), ds, values)


def _fetch_generation(
    rrd_root: Path,
    layout: RrdLayout,
    ids: list[str],
    cf: str,
    options: list[str],
    end: int,
    findings: list[Finding],
) -> list[_Fetched]:
    fetched: list[_Fetched] = []
    directory = os.path.join(rrd_root, layout.directory)
    for ident in ids:
        path = f"{directory}/{ident}"
        result = _fetch_one(ident, path, layout, cf, options, end, findings)
        if result is not None:
            fetched.append(result)
    return fetched


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


def _frame_of(kind: Kind, fetched: list[_Fetched]) -> pl.DataFrame:
    """Build the metric frame (plus a step column) of many fetches, without per-row Python.

    Files sharing one DS list are stacked into one column-major numpy matrix; the
    (normally one or two) groups are concatenated once.
    """
    groups: dict[tuple[str, ...], list[_Fetched]] = {}
    for item in fetched:
        groups.setdefault(item.ds, []).append(item)
    parts: list[pl.DataFrame] = []
    for ds, items in groups.items():
        counts = np.fromiter((item.values.shape[1] for item in items), np.int64, len(items))
        total = int(counts.sum())
        by_column = np.concatenate([item.values for item in items], axis=1)
        owner = np.repeat(np.arange(len(items)), counts)
        first_row = np.repeat(np.cumsum(counts) - counts, counts)
        steps = np.fromiter((item.step for item in items), np.int64, len(items))
        firsts = np.fromiter((item.first_time for item in items), np.int64, len(items))
        row_steps = steps[owner]
        times = firsts[owner] + (np.arange(total) - first_row) * row_steps
        ids = pl.Series(ID_COLUMN, [item.id for item in items], dtype=pl.Utf8).gather(owner)
        parts.append(
            pl.DataFrame(
                [
                    ids,
                    pl.Series(TIME_COLUMN, times, dtype=pl.Int64),
                    *value_series(kind, by_column, ds),
                    pl.Series(_STEP_COLUMN, row_steps, dtype=pl.Int64),
                ]
            )
        )
    if not parts:
        return empty_frame(kind).with_columns(pl.lit(None, pl.Int64).alias(_STEP_COLUMN))
    if len(parts) == 1:  # already in (id, time) order: ids are fetched sorted
        return cpu_to_cores(parts[0])
    return cpu_to_cores(pl.concat(parts, how="vertical").sort(ID_COLUMN, TIME_COLUMN))


def _regrid(old: pl.DataFrame, target: pl.DataFrame, kind: Kind, cf: str) -> pl.DataFrame:
    """Put old-generation rows on the time grid of the current file of the same id.

    Rows already on the grid (same step, the usual case) pass as they are; coarser rows are
    repeated over the finer rows they span and finer rows consolidated per grid row.
    """
    columns = value_columns(kind)
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
    consolidate = pl.col(columns).mean() if cf == "AVERAGE" else pl.col(columns).max()
    regridded = (
        other.with_columns(pl.int_ranges(0, repeat).alias("_offset"))
        .explode("_offset")
        .with_columns(grid_time.alias(TIME_COLUMN))
        .group_by(ID_COLUMN, TIME_COLUMN)
        .agg(consolidate, target_step.first().alias(_STEP_COLUMN))
    )
    return pl.concat([aligned, regridded.select(aligned.columns)], how="vertical")


def _join_generations(
    current: pl.DataFrame, old: pl.DataFrame, kind: Kind, cf: str
) -> pl.DataFrame:
    """The current generation's values, old ones wherever the current file has none.

    Only ids present in both generations are joined; the result is in (id, time) order.
    """
    columns = value_columns(kind)
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
    )
    parts = [current_only, joined, old_only.select(joined.columns)]
    return pl.concat(parts, how="vertical").sort(ID_COLUMN, TIME_COLUMN)


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
    files: dict[str, list[str]],
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
    known = pl.any_horizontal(pl.col(value_columns(kind)).is_not_null())
    summary = (
        frame.with_columns(known.alias("_known"))
        .group_by(ID_COLUMN)
        .agg(
            pl.col("_known").any().alias("any_known"),
            pl.col(TIME_COLUMN).filter(pl.col("_known")).max().alias("last_known"),
            pl.col(_STEP_COLUMN).max().alias("step"),
        )
        .sort(ID_COLUMN)
    )
    judge_staleness = end >= now - stale_after
    findings: list[Finding] = []
    for ident in summary.filter(~pl.col("any_known"))[ID_COLUMN]:
        last_update = _last_update(files.get(ident, [])) if judge_staleness else None
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
    limit = pl.max_horizontal(pl.lit(stale_after), 2 * pl.col("step"))
    stale = summary.filter(pl.col("any_known") & (pl.col("last_known") < now - limit))
    for ident, last_known in stale.select(ID_COLUMN, "last_known").iter_rows():
        message = f"newest known value at {last_known}, {now - last_known} s before {now}"
        findings.append(Finding("rrd-stale", f"{kind} {ident}", message, "warning"))
    return findings


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
) -> SeriesRead:
    """Read ``kind`` series of ``ids`` (None: every id on disk) over ``[start, end]``.

    ``resolution`` (seconds per row) overrides the archive choice; ``daemon`` (e.g.
    ``unix:/var/run/rrdcached.sock``) flushes pending updates through rrdcached first;
    ``now`` (default ``end``) is the reference for archive choice and staleness.
    """
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
    files: dict[str, list[str]] = {}
    for layout, layout_ids in ((current_layout, current_ids), (old_layout, old_ids)):
        directory = os.path.join(rrd_root, layout.directory)
        for ident in layout_ids:
            files.setdefault(ident, []).append(os.path.join(directory, ident))
    if daemon is not None and not _flush(
        daemon, list(chain.from_iterable(files.values())), findings
    ):
        options = ["--daemon", daemon, *options]

    current_fetched = _fetch_generation(
        rrd_root, current_layout, current_ids, cf, options, aligned_end, findings
    )
    old_needed = _old_files_with_news(rrd_root, old_layout, old_ids, on_disk_current, aligned_start)
    old_fetched = _fetch_generation(
        rrd_root, old_layout, old_needed, cf, options, aligned_end, findings
    )
    found = {item.id for item in chain(current_fetched, old_fetched)}
    current = _frame_of(kind, current_fetched)
    old = _frame_of(kind, old_fetched)
    joined = _join_generations(current, old, kind, cf)
    findings += _quality_findings(joined, kind, files, end, reference, stale_after)
    return SeriesRead(conform(joined, kind), findings, found)
