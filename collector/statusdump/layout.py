"""Where each value sits in a status-dump line, and the rows both readers make of the lines.

A line is ``<prefix>/<id>:<field>:...`` (pve-facts.md section 2); the key prefix names the
kind and the generation (:data:`model.rrd_schema.DUMP_KEY_PREFIXES`), and old keys stop after
field 14. Both readers, the C scanner (:mod:`collector.statusdump.scanner`) and the polars
parser (:mod:`collector.statusdump.textparser`), turn the lines they read into *rows* of one
schema per kind (:func:`row_schema`), so that :func:`collector.statusdump.parse.settled` can
finish them alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from collector.series import ID_COLUMN, TIME_COLUMN
from model.rrd_schema import LAYOUTS, Kind

KINDS: tuple[Kind, ...] = ("node", "guest", "storage")

CURRENT_COLUMN = "_current"
"""Row column: the line has a 9.0 key."""
LINE_COLUMN = "_line"
"""Row column: the line's 1-based number in the dump."""


@dataclass(frozen=True, slots=True)
class Extra:
    """A column only the dump has: which field it is, its dtype, and its scanner role.

    Roles (collector/statusdump/_scan.c): ``n`` number, ``b`` 0/1 flag, ``s`` text, ``S`` text
    that may not be empty (the polars parser reads an empty one as null, so the scanner
    declines it).
    """

    field: int
    dtype: pl.DataType
    role: str


@dataclass(frozen=True, slots=True)
class EntryLayout:
    """Where ctime, the first DS and the dump-only columns sit among the fields after the key."""

    time_field: int
    first_ds_field: int
    extra: dict[str, Extra]

    def expected_fields(self, kind: Kind, generation: str) -> int:
        current, old = LAYOUTS[kind]
        return self.first_ds_field + len(current.ds if generation == "9.0" else old.ds)

    @property
    def dtypes(self) -> dict[str, pl.DataType]:
        """The dump-only columns of the kind's frame and their dtypes."""
        return {name: extra.dtype for name, extra in self.extra.items()}


ENTRY_LAYOUTS: dict[Kind, EntryLayout] = {
    "node": EntryLayout(2, 3, {"uptime": Extra(0, pl.Int64(), "n")}),
    "guest": EntryLayout(
        4,
        5,
        {
            "uptime": Extra(0, pl.Int64(), "n"),
            "name": Extra(1, pl.Utf8(), "s"),
            "status": Extra(2, pl.Utf8(), "S"),
            "template": Extra(3, pl.Boolean(), "b"),
        },
    ),
    "storage": EntryLayout(0, 1, {}),
}


def field_columns(kind: Kind) -> list[tuple[str, str]]:
    """``(column, scanner role)`` of each field after the key, in order (role ``x``: unread;
    ``t``: the ctime)."""
    entry = ENTRY_LAYOUTS[kind]
    current, _ = LAYOUTS[kind]
    fields = [("", "x")] * entry.expected_fields(kind, "9.0")
    for index, name in enumerate(current.ds):
        fields[entry.first_ds_field + index] = (name, "n")
    fields[entry.time_field] = (TIME_COLUMN, "t")
    for name, extra in entry.extra.items():
        fields[extra.field] = (name, extra.role)
    return fields


_ROW_DTYPES = {"n": pl.Float64(), "t": pl.Float64(), "b": pl.Boolean(), "s": pl.Utf8()}


def row_schema(kind: Kind) -> dict[str, pl.DataType]:
    """The rows' columns: ``id``, each read field (numbers and ctime as Float64, as read),
    :data:`CURRENT_COLUMN` and :data:`LINE_COLUMN`."""
    schema: dict[str, pl.DataType] = {ID_COLUMN: pl.Utf8()}
    for name, role in field_columns(kind):
        if role != "x":
            schema[name] = _ROW_DTYPES[role.lower()]
    schema[CURRENT_COLUMN] = pl.Boolean()
    schema[LINE_COLUMN] = pl.Int64()
    return schema
