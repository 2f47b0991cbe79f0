"""Build RRD files for tests with the ``rrdtool`` command line, straight from the schemas.

Files are created with ``rrdtool create --step 60`` and the DS/RRA definitions of
:mod:`model.rrd_schema`, then filled with ``rrdtool update`` (optionally through an
rrdcached daemon), so the reader is tested against what librrd itself writes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from model.rrd_schema import LAYOUTS, STEP, Kind, RrdLayout

RRDTOOL = "rrdtool"
UPDATES_PER_CALL = 2000

Value = float | int | None
Row = Mapping[str, Value]


def layout_of(kind: Kind, generation: str = "9.0") -> RrdLayout:
    current, old = LAYOUTS[kind]
    return current if generation == "9.0" else old


def rrd_path(root: Path, kind: Kind, ident: str, generation: str = "9.0") -> Path:
    return root / layout_of(kind, generation).directory / ident


def create_rrd(path: Path, layout: RrdLayout, start: int) -> Path:
    """``rrdtool create`` a file of ``layout`` whose last update is ``start``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [RRDTOOL, "create", str(path), "--start", str(start), "--step", str(STEP)]
    subprocess.run([*command, *layout.create_args()], check=True, capture_output=True)
    return path


def update_rrd(
    path: Path,
    layout: RrdLayout,
    rows: Iterable[tuple[int, Row]],
    daemon: str | None = None,
) -> None:
    """``rrdtool update`` one ``time:v1:v2:...`` argument per row; missing DS and None are U."""
    arguments = [
        f"{time}:" + ":".join(_format(values.get(name)) for name in layout.ds)
        for time, values in rows
    ]
    prefix = [RRDTOOL, "update"]
    if daemon is not None:
        prefix += ["--daemon", daemon]
    for offset in range(0, len(arguments), UPDATES_PER_CALL):
        chunk = arguments[offset : offset + UPDATES_PER_CALL]
        subprocess.run([*prefix, str(path), *chunk], check=True, capture_output=True)


def write_series(
    root: Path,
    kind: Kind,
    ident: str,
    times: Sequence[int],
    row: Row | Sequence[Row],
    generation: str = "9.0",
) -> Path:
    """Create the file of ``ident`` just before ``times[0]`` and write one row per time.

    ``row`` is either one row repeated at every time or one row per time.
    """
    layout = layout_of(kind, generation)
    path = create_rrd(rrd_path(root, kind, ident, generation), layout, times[0] - STEP)
    rows = [row] * len(times) if isinstance(row, Mapping) else list(row)
    update_rrd(path, layout, zip(times, rows, strict=True))
    return path


def minutes(first: int, last: int) -> list[int]:
    """Every step time from ``first`` to ``last`` inclusive."""
    return list(range(first, last + 1, STEP))


def _format(value: Value) -> str:
    return "U" if value is None else repr(value)
