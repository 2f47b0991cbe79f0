"""The metric-frame shape shared by the RRD reader and the status-dump parser.

Both sources describe the same things (nodes, guests, storages over time), so they hand out
one frame shape: ``id`` (Utf8), ``time`` (Int64 unix seconds), then every data source of the
current (PVE 9.0) layout of that kind as Float64, in layout order, with ``cpu`` in cores.
Keeping the shape in one place is what makes the two sources interchangeable downstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

from model.rrd_schema import LAYOUTS, Kind

ID_COLUMN = "id"
TIME_COLUMN = "time"


def value_columns(kind: Kind) -> tuple[str, ...]:
    """The data-source columns of ``kind``: the current layout's DS, in order."""
    return LAYOUTS[kind][0].ds


def select_columns(kind: Kind, columns: Iterable[str] | None = None) -> tuple[str, ...]:
    """The data-source columns of ``kind`` named in ``columns``, in layout order (None: all).

    Raises ValueError for a name that is not a data source of ``kind``.
    """
    layout = value_columns(kind)
    if columns is None:
        return layout
    if isinstance(columns, str):
        raise TypeError("columns must be a sequence of column names, not one string")
    wanted = set(columns)
    unknown = sorted(wanted.difference(layout))
    if unknown:
        raise ValueError(f"not {kind} data sources: {', '.join(unknown)}")
    return tuple(name for name in layout if name in wanted)


def frame_schema(kind: Kind, columns: Iterable[str] | None = None) -> dict[str, pl.DataType]:
    """Column names and dtypes of a metric frame of ``kind`` (``columns``: see select_columns)."""
    schema: dict[str, pl.DataType] = {ID_COLUMN: pl.Utf8(), TIME_COLUMN: pl.Int64()}
    schema.update({name: pl.Float64() for name in select_columns(kind, columns)})
    return schema


def empty_frame(kind: Kind, columns: Iterable[str] | None = None) -> pl.DataFrame:
    """A metric frame of ``kind`` (only ``columns`` when given) with no rows."""
    return pl.DataFrame(schema=frame_schema(kind, columns))


def value_series(
    kind: Kind, by_column: npt.NDArray[np.float64], source_columns: Sequence[str]
) -> list[pl.Series]:
    """One Float64 series per current-layout column, NaN turned into null.

    ``by_column`` holds one ROW per name in ``source_columns`` (column-major data); layout
    columns the source lacks (older generations, damaged files) come out all null. Extra
    source columns are dropped.
    """
    position = {name: index for index, name in enumerate(source_columns)}
    height = by_column.shape[1]
    out: list[pl.Series] = []
    for name in value_columns(kind):
        if name in position:
            column = by_column[position[name]]
            out.append(pl.Series(name, column, dtype=pl.Float64, nan_to_null=True))
        else:
            out.append(pl.Series(name, [None] * height, dtype=pl.Float64))
    return out


def cpu_to_cores(frame: pl.DataFrame) -> pl.DataFrame:
    """Turn the ``cpu`` fraction into cores (fraction x ``maxcpu`` of the same row).

    Null when either is unknown. Frames without a ``cpu`` column (storages) pass through.
    """
    if "cpu" not in frame.columns or "maxcpu" not in frame.columns:
        return frame
    return frame.with_columns((pl.col("cpu") * pl.col("maxcpu")).alias("cpu"))


def conform(
    frame: pl.DataFrame,
    kind: Kind,
    extra: Mapping[str, pl.DataType] | None = None,
    *,
    columns: Iterable[str] | None = None,
) -> pl.DataFrame:
    """Select the metric columns of ``kind`` (plus ``extra``) in order, with their dtypes.

    Missing columns are added as nulls, so every producer returns exactly the same shape.
    ``columns`` narrows the data-source columns (see :func:`select_columns`).
    """
    schema = {**frame_schema(kind, columns), **(extra or {})}
    return frame.select(
        pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
        for name, dtype in schema.items()
    )
