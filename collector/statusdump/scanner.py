"""The C scanner of status-dump lines in the strict form (``collector/statusdump/_scan.c``).

What pvestatd writes is regular: known key prefixes, the exact field count, numbers or ``U``.
The scanner reads such lines in one pass (about ten times faster than the polars parser) and
lists the others, which :mod:`collector.statusdump.parse` gives to the polars parser. It accepts
only lines the polars parser reads without a finding, and gives the same values (numbers
correctly rounded, as polars' cast does), so the two readers' rows can be joined. Without
the extension (not built) :func:`scan_rows` returns None.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import polars as pl

from collector.series import ID_COLUMN
from collector.statusdump.layout import (
    CURRENT_COLUMN,
    ENTRY_LAYOUTS,
    KINDS,
    LINE_COLUMN,
    field_columns,
)
from model.rrd_schema import DUMP_KEY_PREFIXES, Kind

_ID_RULES: dict[Kind, bytes] = {"node": b"a", "guest": b"d", "storage": b"t"}
"""``a`` not empty, ``d`` ASCII digits, ``t`` ``<node>/<storage>``: ids the polars parser
accepts (it takes any Unicode digit in a guest id; the scanner leaves those to it)."""

_PREFIXES = [
    (
        prefix.encode(),
        KINDS.index(kind),
        generation == "9.0",
        ENTRY_LAYOUTS[kind].expected_fields(kind, generation),
    )
    for prefix, (kind, generation) in DUMP_KEY_PREFIXES.items()
]
_KINDS = [
    ("".join(role for _, role in field_columns(kind)).encode(), _ID_RULES[kind]) for kind in KINDS
]


def scan_module() -> ModuleType | None:
    """The extension, or None when it was not built."""
    try:
        from collector.statusdump import _scan
    except ImportError:  # the optional extension was not built
        return None
    return _scan


def _rows(
    kind: Kind,
    ids: list[str],
    numbers: bytes,
    texts: tuple[list[str], ...],
    current: bytes,
    lines: bytes,
) -> pl.DataFrame:
    """One kind's rows (:func:`collector.statusdump.layout.row_schema`, in that order)."""
    fields = [(name, role) for name, role in field_columns(kind) if role != "x"]
    numeric = [name for name, role in fields if role in "ntb"]
    by_column = dict(
        zip(
            numeric,
            np.frombuffer(numbers, dtype=np.float64).reshape(len(numeric), len(ids)),
            strict=True,
        )
    )
    by_text = dict(zip((name for name, role in fields if role in "sS"), texts, strict=True))
    columns = [pl.Series(ID_COLUMN, ids, dtype=pl.Utf8())]
    for name, role in fields:
        if role == "b":
            columns.append(pl.Series(name, by_column[name] == 1.0))
        elif role in "nt":
            columns.append(pl.Series(name, by_column[name], nan_to_null=True))
        else:
            columns.append(pl.Series(name, by_text[name], dtype=pl.Utf8()))
    columns.append(pl.Series(CURRENT_COLUMN, np.frombuffer(current, dtype=np.bool_)))
    columns.append(pl.Series(LINE_COLUMN, np.frombuffer(lines, dtype=np.int64)))
    return pl.DataFrame(columns)


def scan_rows(data: bytes) -> tuple[dict[Kind, pl.DataFrame], list[int]] | None:
    """The rows of the dump's strict-form lines by kind, and the numbers of its other
    non-empty lines; None without the extension."""
    module = scan_module()
    if module is None:
        return None
    per_kind, declined = module.scan(data, _PREFIXES, _KINDS)
    rows = {kind: _rows(kind, *part) for kind, part in zip(KINDS, per_kind, strict=True)}
    return rows, declined
