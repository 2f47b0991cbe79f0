"""One characteristic value per guest or node from its usage series: last, EWMA, p95, max, forecast.

The balancer decides on one number per guest and resource, but the RRD history is a series.
This module reduces a long frame (``id``, ``time`` in unix seconds, Float64 value columns with
NULL for unknown) to one row per id, all ids at once, with numpy/polars over flat arrays. A
caller that holds the rows as flat arrays already (the RRD reader) can have their ``ewma``
view without making the frame, in one part or several (:func:`ewma_parts`, then
:func:`frame_of_parts`): the same operations on the same arrays, the same result to the bit.

Views (nulls are never read as 0; an id whose column has no known value gives null):

- ``last``: the newest known value.
- ``ewma``: time-aware exponentially weighted mean with a half-life in seconds. Known values
  only; a value observed ``dt`` seconds after the previous known one gets the weight
  ``1 - 2**(-dt / half_life)`` (polars' ``ewm_mean_by`` recursion, first value taken as is),
  so gaps and irregular steps weigh correctly. The characteristic is the smoothed value at
  the newest known point, computed in closed form (see :func:`_ewma_last`).
- ``p95``: the 95th percentile of the known values, linear interpolation between closest
  ranks (numpy.percentile's default ``method="linear"``).
- ``max``: the largest known value.
- ``forecast``: additive Holt-Winters with a season of ``season_s`` (:mod:`collector.holtwinters`,
  fixed parameters), then the MEAN (default) or MAX (``forecast_stat="max"``) of the
  predictions for the steps covering the next ``horizon_s`` seconds after the newest known
  value, each floored at 0 (every RRD data source has min 0). Each column's series runs
  from its first to its newest known value, placed on the step grid by rounding (the newest
  row wins a shared slot; missing slots are NaN for Holt-Winters). It qualifies when it
  spans at least two full seasons and at least half the points of each of its first two
  seasons are known; otherwise that column falls back to ``ewma`` and the id's ``fallback``
  column is true. The step is ``step_s`` or the most common gap between an id's rows; at
  the RRD minute step a daily season needs two days of minute rows, which the one-day
  minute archive never holds, so use the 30-minute archive for forecasts.

Output columns: ``by``, the value columns (same names), ``time`` (newest timestamp with a
known value in any of the columns), ``points`` (rows with at least one known value) and
``fallback`` (always false except for ids that fell back in the forecast view), sorted by id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

from collector import holtwinters
from collector.holtwinters import DEFAULT_PARAMS, HoltWintersParams

View = Literal["last", "ewma", "p95", "max", "forecast"]
ForecastStat = Literal["mean", "max"]

VIEWS: tuple[View, ...] = ("last", "ewma", "p95", "max", "forecast")
TIME = "time"
_CODE = "__smoothing_group__"
RESERVED_COLUMNS = frozenset({TIME, "points", "fallback"})
# Cap on the elements of one Holt-Winters history block ([series, time] float64: 32 MB).
_FORECAST_BLOCK_ELEMENTS = 4_000_000
# Below this a shared EWMA decay loses precision (2**-900; subnormals start at 2**-1022).
_SMALLEST_SHARED_DECAY = 2.0**-900
_STEP_SAMPLE = 65_536

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class _Grouped:
    """The frame sorted by (id, time): each id's rows form one contiguous block (group)."""

    frame: pl.DataFrame
    ids: pl.Series
    times: IntArray
    starts: IntArray  # first row of each group
    sizes: IntArray  # rows of each group

    @property
    def n_groups(self) -> int:
        return len(self.ids)

    @property
    def codes(self) -> IntArray:
        """Group number of each row."""
        return np.repeat(np.arange(self.n_groups, dtype=np.int64), self.sizes)

    def with_codes(self) -> pl.DataFrame:
        """The frame plus its group numbers as the sorted ``_CODE`` column."""
        return self.frame.with_columns(pl.Series(_CODE, self.codes).set_sorted())


@dataclass(frozen=True, slots=True)
class _Known:
    """The known values of one column, split into per-group segments (groups in order)."""

    row_times: IntArray  # time of every frame row (index with ``rows``)
    values: FloatArray
    groups: IntArray  # group code of each segment
    starts: IntArray  # first index of each segment
    ends: IntArray  # last index of each segment
    rows: IntArray | None  # frame row of each known value (None: every row is known)
    mask: BoolArray | None  # whether each frame row is known (None: every row is known)

    @classmethod
    def of(cls, times: IntArray, starts: IntArray, column_values: FloatArray) -> _Known:
        """The known (not NaN) values of one column of rows grouped at ``starts``."""
        n_rows = column_values.size
        known = column_values == column_values  # False for NaN only
        if known.all():
            return cls(
                row_times=times,
                values=column_values,
                groups=np.arange(starts.size),
                starts=starts,
                ends=np.append(starts[1:], n_rows)[: starts.size] - 1,
                rows=None,
                mask=None,
            )
        rows = np.flatnonzero(known)
        bounds = np.zeros(starts.size + 1, dtype=np.int64)
        if starts.size:
            np.cumsum(np.add.reduceat(known, starts, dtype=np.int64), out=bounds[1:])
        groups = np.flatnonzero(np.diff(bounds))
        return cls(
            row_times=times,
            values=column_values[rows],
            groups=groups,
            starts=bounds[groups],
            ends=bounds[groups + 1] - 1,
            rows=rows,
            mask=known,
        )

    @property
    def times(self) -> IntArray:
        """Time of each known value (a gather: bind it once)."""
        return self.row_times if self.rows is None else self.row_times[self.rows]

    @property
    def counts(self) -> IntArray:
        """Number of known values of each segment."""
        return self.ends - self.starts + 1

    @property
    def segment(self) -> IntArray:
        """Segment number of each known value."""
        return np.repeat(np.arange(self.starts.size), self.counts)


def _column_values(grouped: _Grouped, name: str) -> FloatArray:
    """A value column of the grouped frame as numpy, NaN where null."""
    series = grouped.frame.get_column(name)
    return series.to_numpy() if series.null_count() == 0 else series.fill_null(np.nan).to_numpy()


def _validate(frame: pl.DataFrame, columns: Sequence[str], by: str) -> None:
    missing = [name for name in (by, TIME, *columns) if name not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {frame.columns}")
    clashing = sorted(RESERVED_COLUMNS.intersection(columns) | ({by} & set(columns)))
    if clashing:
        raise ValueError(f"value column(s) {clashing} clash with the output's id/time columns")
    if len(set(columns)) != len(columns):
        raise ValueError(f"value columns repeat a name: {list(columns)}")
    if not frame.schema[TIME].is_integer():
        raise TypeError(f"column {TIME!r} must hold integer unix seconds, not {frame.schema[TIME]}")
    not_numeric = [name for name in columns if not frame.schema[name].is_numeric()]
    if not_numeric:
        raise TypeError(f"value column(s) {not_numeric} are not numeric")
    null_times = frame.get_column(TIME).null_count()
    if null_times:
        ids = frame.filter(pl.col(TIME).is_null()).get_column(by).unique().head(5).to_list()
        raise ValueError(f"{null_times} row(s) have a null {TIME!r} (ids e.g. {ids})")


def _group(frame: pl.DataFrame, columns: Sequence[str], by: str, *, nan_to_null: bool) -> _Grouped:
    """Sorts by (id, time) unless rows already come in contiguous, time-ordered id blocks.

    NaN values become null when ``nan_to_null`` (for polars reductions); the numpy paths
    treat NaN and null alike and skip that pass.
    """
    _validate(frame, columns, by)
    values = [pl.col(name).cast(pl.Float64) for name in columns]
    slim = frame.select(
        pl.col(by),
        pl.col(TIME).cast(pl.Int64),
        *(value.fill_nan(None) for value in values) if nan_to_null else values,
    )
    for attempt in ("as given", "sorted"):
        runs = slim.get_column(by).rle().struct.unnest()
        ids = runs.get_column("value")
        sizes = runs.get_column("len").to_numpy().astype(np.int64)
        starts = np.cumsum(sizes) - sizes
        times = slim.get_column(TIME).to_numpy()
        backwards = np.flatnonzero(times[1:] < times[:-1]) + 1
        in_order = not backwards.size or bool(_marked(times.size, starts)[backwards].all())
        if attempt == "sorted" or (in_order and ids.n_unique() == ids.len()):
            break
        slim = slim.sort([by, TIME], nulls_last=True, maintain_order=True)
    return _Grouped(frame=slim, ids=ids, times=times, starts=starts, sizes=sizes)


def _marked(size: int, positions: IntArray) -> BoolArray:
    """A mask of ``size`` that is true at ``positions`` (a membership test by lookup)."""
    mask = np.zeros(size, dtype=bool)
    mask[positions] = True
    return mask


def _reduce(grouped: _Grouped, columns: Sequence[str], view: View) -> pl.DataFrame:
    """Per group (in code order): ``time``, ``points`` and, for last/max/p95, each column."""
    known_row = (
        pl.any_horizontal(pl.col(name).is_not_null() for name in columns)
        if columns
        else pl.lit(False)
    )
    if view == "last":
        reductions = [pl.col(name).last(ignore_nulls=True) for name in columns]
    elif view == "max":
        reductions = [pl.col(name).max() for name in columns]
    elif view == "p95":
        reductions = [pl.col(name).quantile(0.95, interpolation="linear") for name in columns]
    else:
        reductions = []
    return (
        grouped.with_codes()
        .group_by(_CODE)
        .agg(
            *reductions,
            pl.col(TIME).filter(known_row).max().alias(TIME),
            known_row.sum().cast(pl.Int64).alias("points"),
        )
        .sort(_CODE)
    )


def _row_decay(
    times: IntArray, starts: IntArray, sizes: IntArray, half_life_s: float
) -> FloatArray:
    """``2**(-(t_g - t) / h)`` for every row, ``t_g`` the newest row time of its group."""
    if not times.size:
        return np.zeros(0)
    decay = np.repeat(times[starts + sizes - 1].astype(np.float64), sizes)
    np.subtract(times, decay, out=decay)
    decay *= 1.0 / half_life_s
    np.exp2(decay, out=decay)
    return decay


def _ewma_last(
    known: _Known, n_groups: int, half_life_s: float, row_decay: FloatArray
) -> FloatArray:
    """The time-aware EWMA at each group's newest known value, without a recursion.

    Unrolling ``y_i = a_i x_i + (1 - a_i) y_(i-1)`` with ``a_0 = 1`` and
    ``1 - a_i = 2**(-(t_i - t_(i-1)) / h)`` gives ``y_n = sum_i x_i (D_i - D_(i-1)) / D_n``
    for ``D_i = 2**(-(T - t_i) / h)`` with any reference time ``T`` and ``D_(-1) = 0``. The
    shared :func:`_row_decay` (``T`` = the group's newest row, one exp2 per row for all
    columns) serves unless a column's newest known value is so much older than ``T`` that
    ``D_n`` underflows; those groups are redone with ``T`` = their own newest known value.
    """
    result = np.full(n_groups, np.nan)
    if not known.starts.size:
        return result
    decay = row_decay if known.rows is None else row_decay[known.rows]
    weights = np.empty_like(decay)
    np.subtract(decay[1:], decay[:-1], out=weights[1:])
    weights[known.starts] = decay[known.starts]
    weights *= known.values
    totals = np.add.reduceat(weights, known.starts)
    newest = decay[known.ends]
    precise = newest >= _SMALLEST_SHARED_DECAY
    result[known.groups[precise]] = totals[precise] / newest[precise]
    redo = np.flatnonzero(~precise)
    if redo.size:
        result[known.groups[redo]] = _ewma_own_reference(known, redo, half_life_s)
    return result


def _ewma_own_reference(known: _Known, segments: IntArray, half_life_s: float) -> FloatArray:
    """:func:`_ewma_last` for some segments, each decayed from its own newest known value."""
    counts = known.counts[segments]
    offsets = np.repeat(known.starts[segments] - (np.cumsum(counts) - counts), counts)
    picked = np.arange(int(counts.sum())) + offsets
    times = known.row_times[picked if known.rows is None else known.rows[picked]]
    starts = np.cumsum(counts) - counts
    newest = np.repeat(times[starts + counts - 1], counts)
    decay = np.exp2((times - newest) / half_life_s)
    weights = np.diff(decay, prepend=0.0)
    weights[starts] = decay[starts]
    return np.add.reduceat(weights * known.values[picked], starts)


def _step_of(grouped: _Grouped) -> int | None:
    """Most common positive gap between an id's rows (counted on at most ~65k of them)."""
    gaps = np.diff(grouped.times)
    same_group = np.ones(gaps.size, dtype=bool)
    same_group[grouped.starts[1:] - 1] = False
    gaps = gaps[same_group & (gaps > 0)]
    if not gaps.size:
        return None
    sample = gaps[:: max(1, gaps.size // _STEP_SAMPLE)]
    steps, counts = np.unique(sample, return_counts=True)
    return int(steps[np.argmax(counts)])


def infer_step(frame: pl.DataFrame, by: str = "id") -> int | None:
    """The frame's step: the most common positive time difference within an id (None if none)."""
    return _step_of(_group(frame, [], by, nan_to_null=False))


def _forecast(
    known: _Known,
    n_groups: int,
    *,
    step_s: int,
    season_steps: int,
    horizon_steps: int,
    stat: ForecastStat,
    params: HoltWintersParams,
) -> tuple[FloatArray, BoolArray]:
    """Forecast characteristic per group and which groups qualified for Holt-Winters."""
    result = np.full(n_groups, np.nan)
    qualified = np.zeros(n_groups, dtype=bool)
    if not known.starts.size:
        return result, qualified
    m = season_steps
    segment_of = known.segment
    times = known.times
    first_time = np.repeat(times[known.starts], known.counts)
    slots = (times - first_time + step_s // 2) // step_s
    lengths = slots[known.ends] + 1
    n_segments = known.starts.size
    # (segment, slot) as one ascending key: the known count of each segment's first and
    # second season is then a difference of binary-search positions, one search per segment.
    key_width = int(lengths.max()) + 1
    keys = segment_of * key_width + slots
    season_edges = np.arange(n_segments)[:, None] * key_width + np.array([0, m, 2 * m])
    positions = np.searchsorted(keys, season_edges)
    per_season = np.diff(positions, axis=1)
    half_season = math.ceil(m / 2)
    eligible = np.flatnonzero(
        (lengths >= 2 * m) & (per_season[:, 0] >= half_season) & (per_season[:, 1] >= half_season)
    )
    if not eligible.size:
        return result, qualified
    eligible = eligible[np.argsort(lengths[eligible], kind="stable")]
    row_of_segment = np.full(known.starts.size, -1, dtype=np.int64)
    for block in _blocks(lengths[eligible]):
        segments = eligible[block]
        width = int(lengths[segments].max())
        row_of_segment[segments] = np.arange(segments.size)
        rows = row_of_segment[segment_of]
        flat_history = np.full(segments.size * width, np.nan)
        if segments.size == n_segments:
            flat_history[rows * width + slots] = known.values
        else:
            picked = rows >= 0
            flat_history[rows[picked] * width + slots[picked]] = known.values[picked]
        history = flat_history.reshape(segments.size, width)
        row_of_segment[segments] = -1
        predictions = holtwinters.forecast(
            history, m, horizon_steps, lengths=lengths[segments], params=params
        )
        floored = np.maximum(predictions, 0.0)
        reduced = floored.mean(axis=1) if stat == "mean" else floored.max(axis=1)
        result[known.groups[segments]] = reduced
        qualified[known.groups[segments]] = True
    return result, qualified


def _blocks(sorted_lengths: IntArray) -> list[slice]:
    """Slices of the series (ascending lengths) whose padded history stays under the cap."""
    widest = max(int(sorted_lengths[-1]), 1)
    rows = max(1, _FORECAST_BLOCK_ELEMENTS // widest)
    return [slice(start, start + rows) for start in range(0, sorted_lengths.size, rows)]


def _season_steps(season_s: int, step_s: int) -> int:
    if season_s % step_s:
        raise ValueError(f"season of {season_s} s is not a whole number of {step_s} s steps")
    return season_s // step_s


def characteristic(
    frame: pl.DataFrame,
    columns: Sequence[str],
    view: View,
    *,
    half_life_s: float = 600,
    horizon_s: float = 3600,
    season_s: int = 86400,
    by: str = "id",
    step_s: int | None = None,
    forecast_stat: ForecastStat = "mean",
    params: HoltWintersParams = DEFAULT_PARAMS,
) -> pl.DataFrame:
    """One row per id: the ``view`` of each value column, plus ``time``, ``points``, ``fallback``.

    ``step_s`` (forecast only) defaults to the most common step between an id's rows.
    Raises ValueError/TypeError naming the problem for a malformed frame or parameter.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {VIEWS}")
    if not half_life_s > 0 or not horizon_s > 0 or not season_s > 0:
        raise ValueError("half_life_s, horizon_s and season_s must be positive")
    if view in ("last", "max", "p95"):
        grouped = _group(frame, columns, by, nan_to_null=True)
        reduced = _reduce(grouped, columns, view).select(*columns, TIME, "points")
        return _finish(grouped.ids, by, reduced, np.zeros(grouped.n_groups, dtype=bool))

    grouped = _group(frame, columns, by, nan_to_null=False)
    n_groups = grouped.n_groups
    fallback = np.zeros(n_groups, dtype=bool)
    refine: Callable[[_Known, FloatArray], FloatArray] | None = None
    if view == "forecast":
        step = step_s if step_s is not None else _step_of(grouped)
        season_steps = None if step is None else _season_steps(season_s, step)

        def refine(known: _Known, smoothed: FloatArray) -> FloatArray:
            qualified = np.zeros(n_groups, dtype=bool)
            if step is not None and season_steps is not None and season_steps >= 2:
                forecast, qualified = _forecast(
                    known,
                    n_groups,
                    step_s=step,
                    season_steps=season_steps,
                    horizon_steps=max(1, math.ceil(horizon_s / step)),
                    stat=forecast_stat,
                    params=params,
                )
                smoothed = np.where(qualified, forecast, smoothed)
            fallback[:] |= ~qualified & ~np.isnan(smoothed)
            return smoothed

    values = ((name, _column_values(grouped, name)) for name in columns)
    smoothed, newest, points = _smoothed_arrays(grouped, values, half_life_s, refine)
    return _frame(grouped.ids, by, smoothed, newest, points, fallback)


@dataclass(frozen=True, slots=True)
class EwmaPart:
    """The EWMA view of some ids as numpy arrays: one part of a :func:`frame_of_parts`."""

    ids: Sequence[str]
    smoothed: dict[str, FloatArray]
    """Per column, per id: the EWMA (NaN where the column has no known value)."""
    newest: IntArray
    """Per id: the newest time with a known value in any column (int64 minimum if none)."""
    points: IntArray
    """Per id: rows with a known value in any column."""


def ewma_parts(
    ids: Sequence[str],
    times: IntArray,
    sizes: IntArray,
    columns: Mapping[str, FloatArray],
    *,
    half_life_s: float = 600,
) -> EwmaPart:
    """The ``ewma`` view of some ids' rows given as flat arrays, kept as arrays:
    ``frame_of_parts([ewma_parts(...)], list(columns))`` is
    ``characteristic(frame, list(columns), "ewma", half_life_s=...)`` of the frame these
    arrays make, to the bit, without making it; a read that comes in pieces makes one part
    per piece and one frame at the end.

    ``times`` (unix seconds) and each value column (NaN where unknown) hold ``sizes[i]``
    consecutive rows for ``ids[i]``; ids distinct, each id's rows in time order (ValueError
    otherwise)."""
    if not half_life_s > 0:
        raise ValueError("half_life_s must be positive")
    if sizes.size != len(ids) or int(sizes.sum()) != times.size:
        raise ValueError(f"{len(ids)} ids, {sizes.size} sizes and {times.size} rows disagree")
    starts = np.cumsum(sizes) - sizes
    backwards = np.flatnonzero(times[1:] < times[:-1]) + 1
    if len(set(ids)) != len(ids) or not _marked(times.size, starts)[backwards].all():
        raise ValueError("ids must be distinct, each with its rows together in time order")
    smoothed, newest, points = _smoothed_arrays(
        _Runs(times, starts, sizes), columns.items(), half_life_s, None
    )
    return EwmaPart(ids, smoothed, newest, points)


def frame_of_parts(
    parts: Sequence[EwmaPart], columns: Sequence[str], by: str = "id"
) -> pl.DataFrame:
    """One :func:`characteristic`-shaped frame of ``parts`` whose ids are in increasing
    order from one part to the next (each part's own ids in any order)."""
    ids = pl.Series(by, [ident for part in parts for ident in part.ids], dtype=pl.Utf8)
    smoothed = {
        name: np.concatenate([np.zeros(0), *(part.smoothed[name] for part in parts)])
        for name in columns
    }
    newest = np.concatenate([np.zeros(0, np.int64), *(part.newest for part in parts)])
    points = np.concatenate([np.zeros(0, np.int64), *(part.points for part in parts)])
    return _frame(ids, by, smoothed, newest, points, np.zeros(len(ids), dtype=bool))


@dataclass(frozen=True, slots=True)
class _Runs:
    """Rows grouped by id (contiguous, time-ordered): what the EWMA needs of a _Grouped."""

    times: IntArray
    starts: IntArray
    sizes: IntArray


def _smoothed_arrays(
    runs: _Grouped | _Runs,
    columns: Iterable[tuple[str, FloatArray]],
    half_life_s: float,
    refine: Callable[[_Known, FloatArray], FloatArray] | None,
) -> tuple[dict[str, FloatArray], IntArray, IntArray]:
    """Per group: each column's EWMA (``refine``d, if given; NaN where nothing is known),
    the newest time with a known value (int64 minimum if none) and the known rows. Columns
    are taken one at a time (``columns`` may be a generator), so only one column's arrays
    are alive at once."""
    times, starts = runs.times, runs.starts
    row_decay = _row_decay(times, starts, runs.sizes, half_life_s)
    any_known = np.zeros(times.size, dtype=bool)
    smoothed: dict[str, FloatArray] = {}
    for name, values in columns:
        known = _Known.of(times, starts, values)
        any_known |= True if known.mask is None else known.mask
        column = _ewma_last(known, starts.size, half_life_s, row_decay)
        smoothed[name] = column if refine is None else refine(known, column)
    if not starts.size:
        return smoothed, np.zeros(0, np.int64), np.zeros(0, np.int64)
    points = np.add.reduceat(any_known, starts, dtype=np.int64)
    known_times = np.where(any_known, times, np.iinfo(np.int64).min)
    return smoothed, np.maximum.reduceat(known_times, starts), points


def _frame(
    ids: pl.Series,
    by: str,
    smoothed: Mapping[str, FloatArray],
    newest: IntArray,
    points: IntArray,
    fallback: BoolArray,
) -> pl.DataFrame:
    """The EWMA-shaped output of per-group arrays (``time`` null where ``points`` is 0)."""
    output = [pl.Series(name, values).fill_nan(None) for name, values in smoothed.items()]
    output.append(
        pl.Series(TIME, newest, dtype=pl.Int64).scatter(np.flatnonzero(points == 0), None)
    )
    output.append(pl.Series("points", points, dtype=pl.Int64))
    return _finish(ids, by, pl.DataFrame(output), fallback)


def _finish(ids: pl.Series, by: str, per_group: pl.DataFrame, fallback: BoolArray) -> pl.DataFrame:
    """The output: ids, value columns, ``time``, ``points``, ``fallback``, sorted by id."""
    return per_group.select(
        ids.alias(by), pl.all(), pl.Series("fallback", fallback, dtype=pl.Boolean)
    ).sort(by, nulls_last=True)


def ewma_frame(
    frame: pl.DataFrame, columns: Sequence[str], half_life_s: float, by: str = "id"
) -> pl.DataFrame:
    """The frame with each value column replaced by its time-aware EWMA (same rows, same order).

    Same recursion as the ``ewma`` view, via polars' ``ewm_mean_by`` per id; a row whose
    input is null stays null (nothing was observed there) while the smoothing carries on.
    """
    _validate(frame, columns, by)
    half_life_ms = round(half_life_s * 1000)
    if half_life_ms < 1:
        raise ValueError(f"half-life must be at least 1 ms, got {half_life_s} s")
    row = "__smoothing_row__"
    milliseconds = pl.col(TIME).cast(pl.Int64) * 1000
    return (
        frame.with_row_index(row)
        .sort([by, TIME], nulls_last=True, maintain_order=True)
        .with_columns(
            pl.col(name)
            .cast(pl.Float64)
            .fill_nan(None)
            .ewm_mean_by(milliseconds, half_life=f"{half_life_ms}i")
            .over(by)
            for name in columns
        )
        .sort(row)
        .drop(row)
    )
