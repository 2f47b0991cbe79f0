"""The polars parser of status-dump lines: any line, damaged ones included.

Every line becomes a row of fields (the polars CSV reader, ``:`` as separator), and each kind
is then parsed column-wise: ids checked, numbers cast (``U``, garbage and NaN become null),
a guest name holding ``:`` (PVE forbids it) rejoined from the surplus fields. Malformed lines
and values become :class:`model.Finding` s naming ``source:lineno``; the rest is still read.
The result is the rows of :func:`collector.statusdump.layout.row_schema`, per kind.

:mod:`collector.statusdump.parse` gives it only the lines the C scanner declined (all lines
when the scanner is not built); on its own it takes about 50 ms for 10,000 guests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from collector.series import ID_COLUMN, TIME_COLUMN
from collector.statusdump.layout import (
    CURRENT_COLUMN,
    ENTRY_LAYOUTS,
    KINDS,
    LINE_COLUMN,
    row_schema,
)
from model import Finding
from model.rrd_schema import DUMP_KEY_PREFIXES, LAYOUTS, Kind

_MAX_COLUMNS = 32
"""Key plus fields read per line: room for guest names holding many ``:``; longer is an error."""
_FIELD_COLUMNS = [f"f{index}" for index in range(_MAX_COLUMNS)]
_KEY_COLUMN = _FIELD_COLUMNS[0]


def _field(index: int) -> pl.Expr:
    """Field ``index`` after the key (0-based, as pve-facts.md counts), as read (Utf8)."""
    return pl.col(_FIELD_COLUMNS[index + 1])


def _numbers(lines: pl.DataFrame, raws: Mapping[str, pl.Expr]) -> pl.DataFrame:
    """The fields as Float64 columns: ``U``, garbage and NaN become null."""
    numbers = lines.select(
        raw.cast(pl.Float64, strict=False).alias(name) for name, raw in raws.items()
    )
    with_nan = numbers.select(pl.all().is_nan().any())
    nan_columns = [name for name in with_nan.columns if with_nan[name][0]]
    if nan_columns:
        numbers = numbers.with_columns(pl.col(nan_columns).fill_nan(None))
    return numbers


def _line_text() -> pl.Expr:
    """The line rebuilt from its fields, for findings (empty fields come back empty)."""
    return pl.concat_str([pl.col(name).fill_null("") for name in _FIELD_COLUMNS], separator=":")


def _read_fields(text: str) -> pl.DataFrame:
    """One row per line (blank ones included, so row i is line i + 1), one Utf8 column a field.

    The polars CSV reader with ``:`` as separator and no quoting does the splitting; empty
    and absent fields are null, so a line's field count is its last non-null column.
    """
    if not text.strip():
        return pl.DataFrame(schema=dict.fromkeys(_FIELD_COLUMNS, pl.Utf8()))
    return pl.read_csv(
        text.encode(),
        separator=":",
        has_header=False,
        schema=dict.fromkeys(_FIELD_COLUMNS, pl.Utf8()),
        quote_char=None,
        truncate_ragged_lines=True,
        missing_columns="insert",
        raise_if_empty=False,
    )


_BLANK = "blank"
_UNKNOWN = "unknown"


def _numbered_fields(text: str, only: Sequence[int] | None) -> pl.DataFrame:
    """:func:`_read_fields` of ``text`` (of its lines ``only``, 1-based, when given) with each
    row's line number in ``lineno``.

    The chosen lines are read on their own, after an empty line unless line 1 is among them
    (the CSV reader skips a byte-order mark at the start of its text only). Should they not
    read as one row each, the whole text is read with the other lines emptied instead.
    """
    if only is not None:
        lines = text.split("\n")
        numbers = list(only)
        picked = [lines[number - 1] for number in numbers]
        if numbers and numbers[0] != 1:
            picked.insert(0, "")
            numbers.insert(0, 0)
        fields = _read_fields("\n".join(picked))
        if fields.height == len(numbers):
            return fields.with_columns(pl.Series("lineno", numbers, dtype=pl.Int64()))
        keep = set(only)
        text = "\n".join(line if number in keep else "" for number, line in enumerate(lines, 1))
    return _read_fields(text).with_row_index("lineno", offset=1)


def _split_lines(text: str, only: Sequence[int] | None) -> pl.DataFrame:
    """Every line with its number, ``kind`` (or blank/unknown), ``current`` generation and id."""
    key = pl.col(_KEY_COLUMN).str.strip_chars()
    parts = key.str.splitn("/", 2)
    kinds = {prefix: kind for prefix, (kind, _) in DUMP_KEY_PREFIXES.items()}
    current = [
        prefix for prefix, (_, generation) in DUMP_KEY_PREFIXES.items() if generation == "9.0"
    ]
    blank = key.fill_null("").eq("") & pl.col(_FIELD_COLUMNS[1]).is_null()
    return (
        _numbered_fields(text, only)
        .with_columns(
            parts.struct.field("field_0").alias("prefix"),
            parts.struct.field("field_1").alias(ID_COLUMN),
            blank.alias("_blank"),
        )
        .with_columns(
            pl.when(pl.col("_blank"))
            .then(pl.lit(_BLANK))
            .otherwise(pl.col("prefix").replace_strict(kinds, default=_UNKNOWN))
            .alias("kind"),
            pl.col("prefix").is_in(current).alias("current"),
        )
    )


def _line_findings(rows: pl.DataFrame, source: str, kind: str, message: str) -> list[Finding]:
    texts = rows.select("lineno", _line_text().str.strip_chars_end(":").alias("text"))
    return [
        Finding(kind, f"{source}:{lineno}", f"{message}: {text[:120]!r}", "warning")
        for lineno, text in texts.iter_rows()
    ]


def _rejoin_guest_names(lines: pl.DataFrame, has_surplus: pl.Expr) -> pl.DataFrame:
    """Rebuild the (rare) guest lines whose name held ``:``: name rejoined, fields shifted."""
    broken = lines.filter(has_surplus)
    if broken.is_empty():
        return lines
    name_column = ENTRY_LAYOUTS["guest"].extra["name"].field + 1
    repaired_rows: list[list[str | None]] = []
    for fields, expected in zip(
        broken.select(_FIELD_COLUMNS).iter_rows(), broken["expected"], strict=True
    ):
        count = max(index for index, value in enumerate(fields) if value is not None)
        surplus = count - expected
        name = ":".join(part or "" for part in fields[name_column : name_column + surplus + 1])
        shifted = [*fields[:name_column], name, *fields[name_column + surplus + 1 :]]
        repaired_rows.append(shifted + [None] * (len(fields) - len(shifted)))
    repaired = pl.DataFrame(
        repaired_rows, schema=dict.fromkeys(_FIELD_COLUMNS, pl.Utf8()), orient="row"
    )
    repaired = broken.drop(_FIELD_COLUMNS).hstack(repaired).select(lines.columns)
    return pl.concat([lines.filter(~has_surplus), repaired])


def _bad_value_findings(
    lines: pl.DataFrame, numbers: pl.DataFrame, raws: Mapping[str, pl.Expr], source: str
) -> list[Finding]:
    """A finding per line holding a field that is neither ``U`` nor a number."""
    given = lines.select(
        (raw.is_not_null() & (raw != "U")).sum().alias(name) for name, raw in raws.items()
    )
    parsed = numbers.select(pl.all().count())
    bad_columns = [name for name in raws if given[name][0] > parsed[name][0]]
    if not bad_columns:
        return []
    lines = lines.hstack(numbers.select(pl.col(bad_columns).name.prefix("_number_")))
    unexpected = {
        name: raws[name].is_not_null() & (raws[name] != "U") & pl.col(f"_number_{name}").is_null()
        for name in bad_columns
    }
    names = pl.concat_str(
        [pl.when(unexpected[name]).then(pl.lit(name)) for name in bad_columns],
        separator=", ",
        ignore_nulls=True,
    )
    bad = lines.select("lineno", names.alias("names")).filter(pl.col("names") != "")
    return [
        Finding("dump-bad-value", f"{source}:{lineno}", f"not a number, taken as unknown: {what}")
        for lineno, what in bad.iter_rows()
    ]


def _parse_kind(
    lines: pl.DataFrame, kind: Kind, source: str, findings: list[Finding]
) -> pl.DataFrame:
    """The rows of one kind from its lines (already known to carry its key prefixes)."""
    entry = ENTRY_LAYOUTS[kind]
    current, old = LAYOUTS[kind]
    is_current = pl.col("current")
    expected_current = entry.expected_fields(kind, "9.0")
    expected_old = entry.expected_fields(kind, "pve2")

    def per_generation(offset: int) -> pl.Expr:
        """The column ``offset`` past the last expected field of the row's generation."""
        return (
            pl.when(is_current)
            .then(pl.col(_FIELD_COLUMNS[expected_current + offset]))
            .otherwise(pl.col(_FIELD_COLUMNS[expected_old + offset]))
        )

    lines = lines.with_columns(
        pl.when(is_current).then(expected_current).otherwise(expected_old).alias("expected")
    )
    valid_id = pl.col(ID_COLUMN).is_not_null() & (pl.col(ID_COLUMN) != "")
    if kind == "guest":
        valid_id = valid_id & pl.col(ID_COLUMN).str.contains(r"^\d+$")
    elif kind == "storage":
        valid_id = valid_id & pl.col(ID_COLUMN).str.contains(r"^[^/]+/[^/]+$")
    too_long = pl.col(_FIELD_COLUMNS[-1]).is_not_null() if kind == "guest" else pl.lit(False)
    problem = (
        pl.when(~valid_id)
        .then(pl.lit("bad id"))
        .when(per_generation(0).is_null())
        .then(pl.lit("too few fields"))
        .when(too_long)
        .then(pl.lit("too many fields"))
    )
    problems = lines.select(problem.alias("problem")).to_series()
    if problems.null_count() < len(problems):
        flagged = lines.with_columns(problems).filter(pl.col("problem").is_not_null())
        for message, rows in flagged.group_by("problem"):
            findings += _line_findings(rows, source, "dump-malformed", str(message[0]))
        lines = lines.filter(problems.is_null())
    if kind == "guest":
        lines = _rejoin_guest_names(lines, per_generation(1).is_not_null())

    old_count = len(old.ds)
    raws: dict[str, pl.Expr] = {
        name: pl.when(is_current | (index < old_count)).then(_field(entry.first_ds_field + index))
        for index, name in enumerate(current.ds)
    }
    if "uptime" in entry.extra:
        raws["uptime"] = _field(entry.extra["uptime"].field)
    raws[TIME_COLUMN] = _field(entry.time_field)
    numbers = _numbers(lines, raws)
    findings += _bad_value_findings(lines, numbers, raws, source)

    frame = pl.DataFrame([lines[ID_COLUMN], *numbers.iter_columns()])
    if kind == "guest":
        template = _field(entry.extra["template"].field)
        frame = frame.hstack(
            lines.select(
                _field(entry.extra["name"].field).fill_null("").alias("name"),
                _field(entry.extra["status"].field).alias("status"),
                pl.when(template == "1")
                .then(True)
                .when(template == "0")
                .then(False)
                .alias("template"),
            )
        )
    frame = frame.with_columns(
        lines.select(is_current.alias(CURRENT_COLUMN)).to_series(),
        lines["lineno"].alias(LINE_COLUMN),
    )
    no_time = frame[TIME_COLUMN].cast(pl.Int64, strict=False).is_null()
    if no_time.any():
        findings += _line_findings(
            lines.filter(no_time), source, "dump-malformed", "no valid ctime"
        )
        frame = frame.filter(~no_time)
    return frame.select(pl.col(name).cast(dtype) for name, dtype in row_schema(kind).items())


def polars_rows(
    text: str, source: str, only: Sequence[int] | None = None
) -> tuple[dict[Kind, pl.DataFrame], list[Finding]]:
    """The rows of every kind in ``text`` (in its lines ``only``, 1-based, when given) and the
    findings (in line order); ``source`` names the dump in findings (``source:lineno``)."""
    by_kind = _split_lines(text, only).partition_by("kind", as_dict=True)
    findings: list[Finding] = []
    unknown = by_kind.get((_UNKNOWN,))
    if unknown is not None:
        message = "unknown or missing key prefix"
        findings += _line_findings(unknown, source, "dump-malformed", message)
    rows: dict[Kind, pl.DataFrame] = {}
    for kind in KINDS:
        lines = by_kind.get((kind,))
        if lines is None:
            rows[kind] = pl.DataFrame(schema=row_schema(kind))
        else:
            rows[kind] = _parse_kind(lines, kind, source, findings)
    findings.sort(key=lambda finding: int(finding.where.rsplit(":", 1)[1]))
    return rows, findings
