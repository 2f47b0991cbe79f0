"""Write RRD files exactly as pmxcfs lays them out, through librrd (the ``rrdtool`` binding).

Each kind of file is created once as a template (``rrdtool create`` with the layout of
model/rrd_schema.py, step 60, starting just before the first point) and copied for every
node, guest or storage: all files of one run share their start, and copying is much cheaper
than letting librrd write 1.3 MB of unknowns per file. Points are formatted column-wise with
numpy as fixed-width ASCII ("t:v:v:...", ``U`` for unknown, integers for counters and byte
sizes) and handed to ``rrdtool.update`` in one call per file.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rrdtool
from numpy.typing import NDArray

from model.rrd_schema import STEP, RrdLayout
from simulator.usage import FloatArray, IntArray

INTEGER_DS = frozenset(
    {
        "maxmem", "mem", "maxdisk", "disk", "netin", "netout", "diskread", "diskwrite",
        "memhost", "memtotal", "memused", "swaptotal", "swapused", "roottotal", "rootused",
        "memavailable", "arcsize", "total", "used",
    }
)  # fmt: skip
"""Data sources written as integers: DERIVE counters must be, byte sizes naturally are."""


def rrd_path(root: Path, layout: RrdLayout, name: str) -> Path:
    """``<root>/<layout directory>/<name>``, e.g. ``rrd/pve-vm-9.0/100``."""
    return root / layout.directory / name


def create_template(path: Path, layout: RrdLayout, first_time: int) -> Path:
    """An empty RRD of ``layout`` whose first accepted update is at ``first_time``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rrdtool.create(
        str(path), "--step", str(STEP), "--start", str(first_time - STEP), *layout.create_args()
    )
    return path


FRACTION_DIGITS = 11
"""Decimals written for non-integer values (cpu fractions, load, PSI)."""
_QUAD_TEXT = np.frombuffer("".join(f"{i:04d}" for i in range(10_000)).encode(), np.uint16)
_QUAD_HIGH = np.ascontiguousarray(_QUAD_TEXT[0::2])
_QUAD_LOW = np.ascontiguousarray(_QUAD_TEXT[1::2])
"""Four digits as two 2-byte pairs, for every value 0..9999: digits come from table look-ups."""
_LEAD_TEXT = [
    np.frombuffer("".join(f"{c}{i}" for i in range(10)).encode(), np.uint16) for c in ":.\n"
]
_COLON_DIGIT, _POINT_DIGIT, _NEWLINE_DIGIT = _LEAD_TEXT
_PAIR = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), np.uint16)
_COLON_U = np.frombuffer(b":U", np.uint16)[0]
_BLOCK_ROWS = 8_192

Pairs = list[NDArray[np.uint16]]


def _divmod(values: NDArray[np.int64], divisor: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Exact divmod of non-negative int64 by a small divisor (numpy's own is much slower).

    Below 2**50 the float quotient of (v + 0.5) / d is never rounded across an integer, so
    truncating it gives the exact floor; larger values take numpy's integer path.
    """
    if len(values) and int(values.max()) >= 2**50:
        quotient, remainder = np.divmod(values, divisor)
        return quotient, remainder
    quotient = ((values + 0.5) / divisor).astype(np.int64)
    return quotient, values - quotient * divisor


def _number(values: NDArray[np.int64], lead: NDArray[np.uint16], quads: int) -> Pairs:
    """``lead`` char + one digit, then ``quads`` groups of four digits (2-byte pairs)."""
    pairs: Pairs = []
    rest = values
    for _ in range(quads):
        rest, group = _divmod(rest, 10_000)
        pairs[:0] = [_QUAD_HIGH[group], _QUAD_LOW[group]]
    if np.any(rest > 9):
        raise ValueError(f"value too large for {4 * quads + 1} digits")
    return [lead[rest], *pairs]


def _quads_for(values: NDArray[np.int64]) -> int:
    """Groups of four digits needed after the first digit."""
    top = int(values.max()) if len(values) else 0
    return max(0, -(-(len(str(top)) - 1) // 4))


def _interleave(columns: Pairs) -> NDArray[np.uint16]:
    """[rows, columns] table from 1-D columns (a block small enough to stay in cache)."""
    table = np.empty((len(columns[0]), len(columns)), dtype=np.uint16)
    for index, column in enumerate(columns):
        table[:, index] = column
    return table


def _format_group(
    times: IntArray, columns: Sequence[FloatArray], integer: Sequence[bool]
) -> list[str]:
    """Rows whose columns are each either fully known or fully unknown, block by block."""
    lines: list[str] = []
    for start in range(0, len(times), _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        lines += _format_block(times[rows], [c[rows] for c in columns], integer)
    return lines


def _format_block(
    times: IntArray, columns: Sequence[FloatArray], integer: Sequence[bool]
) -> list[str]:
    """Rows whose columns are each either fully known or fully unknown.

    Each row is a run of 2-byte pairs: "\\n" + digit, then per field ":" + digit or ":U",
    further digits in groups of four, and for decimals "." + digit + 10 more digits.
    Numbers are zero-padded to a per-column width (leading zeros parse fine, also for
    DERIVE counters and timestamps), so the whole group is one table, decoded once.
    """
    rows = len(times)
    stamps = times.astype(np.int64)
    pairs = _number(stamps, _NEWLINE_DIGIT, _quads_for(stamps))
    scale = 10**FRACTION_DIGITS
    for values, as_int in zip(columns, integer, strict=True):
        if np.isnan(values[0]):
            pairs.append(np.full(rows, _COLON_U, dtype=np.uint16))
        elif as_int:
            whole = values.astype(np.int64)
            pairs += _number(whole, _COLON_DIGIT, _quads_for(whole))
        else:
            scaled = np.rint(values * scale).astype(np.int64)
            rest, last4 = _divmod(scaled, 10_000)
            rest, middle4 = _divmod(rest, 10_000)
            whole, first3 = _divmod(rest, 1_000)
            pairs += _number(whole, _COLON_DIGIT, _quads_for(whole))
            first, second = _divmod(first3, 100)
            pairs += [_POINT_DIGIT[first], _PAIR[second]]
            pairs += [_QUAD_HIGH[middle4], _QUAD_LOW[middle4], _QUAD_HIGH[last4], _QUAD_LOW[last4]]
    text = _interleave(pairs).tobytes().decode("ascii")
    lines = text.split("\n")
    return lines[1:]


def format_updates(
    times: IntArray, columns: Sequence[FloatArray], integer: Sequence[bool]
) -> list[str]:
    """Update strings for [items, times] columns, item-major: item 0's points come first.

    Built as fixed-width ASCII tables with numpy. Rows are grouped by which columns are
    unknown (``U``), so within a group every column is either all numbers or all ``U``.
    """
    shape = columns[0].shape
    flat = [
        np.ascontiguousarray(np.broadcast_to(c, shape), dtype=np.float64).ravel() for c in columns
    ]
    if np.any([np.any(c < 0) for c in flat]):
        raise ValueError("RRD values must not be negative")
    all_times = np.tile(times.astype(np.int64), shape[0])
    pattern = np.zeros(len(all_times), dtype=np.int64)
    for bit, values in enumerate(flat):
        pattern |= np.isnan(values).astype(np.int64) << bit
    kinds, inverse = np.unique(pattern, return_inverse=True)
    if len(kinds) == 1:
        return _format_group(all_times, flat, integer)
    merged = np.empty(len(all_times), dtype=object)
    for kind in range(len(kinds)):
        rows = np.flatnonzero(inverse == kind)
        merged[rows] = _format_group(all_times[rows], [c[rows] for c in flat], integer)
    lines: list[str] = merged.tolist()
    return lines


def write_points(
    paths: Sequence[Path],
    layout: RrdLayout,
    times: IntArray,
    columns: Mapping[str, FloatArray],
    template: Path | None = None,
) -> None:
    """Append ``times`` to every file (row i of each column goes to ``paths[i]``).

    With a ``template`` the files are first created as copies of it (fresh history).
    """
    if not paths or len(times) == 0:
        return
    if template is not None:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, path)
    lines = format_updates(
        times, [columns[name] for name in layout.ds], [name in INTEGER_DS for name in layout.ds]
    )
    steps = len(times)
    for index, path in enumerate(paths):
        try:
            rrdtool.update(str(path), *lines[index * steps : (index + 1) * steps])
        except rrdtool.OperationalError as exc:
            raise RuntimeError(f"{path}: rrdtool update failed: {exc}") from exc
