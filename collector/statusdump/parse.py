"""Parse the live status dump ("rrd dump") of pmxcfs into the same frames the RRD reader gives.

The dump (pve-facts.md section 2) is one ``<key>:<field>:...`` line per entry, ``U`` for
unknown, keys of both generations (:data:`model.rrd_schema.DUMP_KEY_PREFIXES`). Each kind
becomes a frame of exactly the shape :func:`collector.rrd.read_series` returns (``id``,
``time`` = the entry's ctime, every 9.0 DS as Float64 with ``cpu`` in cores), so downstream
code cannot tell the sources apart, plus a few columns only the dump has:

- nodes: ``uptime`` (Int64 seconds);
- guests: ``uptime`` (Int64), ``name`` (Utf8), ``status`` (Utf8), ``template`` (Boolean).

Old keys stop after field 14, so the later DS are null for them. When one id appears more
than once (under both key generations in a cluster mid-upgrade), the entry with the newest
ctime is kept, the 9.0 one on a tie, the later line on an exact tie. Malformed lines become
:class:`model.Finding` s naming ``source:lineno``; the rest is still parsed.

Two readers share the work: the C scanner (:mod:`collector.statusdump.scanner`) reads the
well-formed lines, which is all of them in a healthy cluster, and the polars parser
(:mod:`collector.statusdump.textparser`) the others, with their findings. Without the
extension the polars parser reads every line. Either way the frames are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from collector.series import ID_COLUMN, TIME_COLUMN, conform, cpu_to_cores
from collector.statusdump.layout import CURRENT_COLUMN, ENTRY_LAYOUTS, KINDS, LINE_COLUMN
from collector.statusdump.scanner import scan_rows
from collector.statusdump.textparser import polars_rows
from model import Finding
from model.rrd_schema import Kind


@dataclass(slots=True)
class DumpRead:
    """The frames of one status dump and what was wrong with it."""

    nodes: pl.DataFrame
    guests: pl.DataFrame
    storages: pl.DataFrame
    findings: list[Finding] = field(default_factory=list)


def parse_status_dump(text: str, source: str = "<dump>") -> DumpRead:
    """Parse a whole status dump; ``source`` names it in findings (``source:lineno``)."""
    scanned = scan_rows(text.encode())
    if scanned is None:
        return _parse_with_polars(text, source)
    rows, declined = scanned
    findings: list[Finding] = []
    if declined:
        rest, findings = polars_rows(text, source, only=declined)
        rows = {kind: pl.concat([rows[kind], rest[kind]]) for kind in KINDS}
    return _read(rows, findings)


def _parse_with_polars(text: str, source: str = "<dump>") -> DumpRead:
    """Every line through the polars parser (the reading without the extension)."""
    return _read(*polars_rows(text, source))


def _read(rows: dict[Kind, pl.DataFrame], findings: list[Finding]) -> DumpRead:
    frames = {kind: settled(rows[kind], kind) for kind in KINDS}
    return DumpRead(frames["node"], frames["guest"], frames["storage"], findings)


def settled(rows: pl.DataFrame, kind: Kind) -> pl.DataFrame:
    """The kind's frame from its rows (:func:`collector.statusdump.layout.row_schema`): one
    row per id, sorted by id, integers cast, cpu in cores, the frame's columns only."""
    entry = ENTRY_LAYOUTS[kind]
    integers = [TIME_COLUMN, *(name for name in ("uptime",) if name in entry.extra)]
    frame = rows.with_columns(pl.col(integers).cast(pl.Int64, strict=False))
    if frame[ID_COLUMN].n_unique() < frame.height:
        frame = frame.sort(ID_COLUMN, TIME_COLUMN, CURRENT_COLUMN, LINE_COLUMN).unique(
            subset=ID_COLUMN, keep="last", maintain_order=True
        )
    return conform(cpu_to_cores(frame.sort(ID_COLUMN)), kind, entry.dtypes)
