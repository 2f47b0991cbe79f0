"""The PVE "section config" text format, as used by storage.cfg and the ha/*.cfg files.

A section starts with an unindented ``type: id`` header; its properties follow on indented
``key value`` lines (a bare ``key`` is a flag) until the first empty line. ``#`` lines are
comments anywhere. This module only splits the text into sections with line numbers; what
types and keys are valid is decided by each file's reader (``check_keys`` helps). As in
PVE, a malformed line is skipped with a finding and parsing goes on.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from collector.pvecfg.values import at, finding, parse_bool
from model.snapshot import Finding

_HEADER = re.compile(r"^(\S+):\s*(\S+)\s*$")
_COMMENT = re.compile(r"^\s*#")


@dataclass(slots=True)
class Section:
    """One ``type: id`` section: its raw property values and the line of each."""

    type: str
    id: str
    line: int
    values: dict[str, str | None] = field(default_factory=dict)
    """Property values as written; None for a bare flag line."""
    lines: dict[str, int] = field(default_factory=dict)
    """The line number of each property, for findings."""


def parse_section_config(text: str, source: str) -> tuple[list[Section], list[Finding]]:
    """Split section-config text into sections; findings name ``source:line``.

    Lines outside a section that are not headers, repeated keys inside a section (the first
    is kept) and repeated section ids (the first is kept) become ``config-syntax`` findings.
    """
    sections: list[Section] = []
    findings: list[Finding] = []
    seen_ids: dict[tuple[str, str], int] = {}
    current: Section | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if "#" in line and _COMMENT.match(line):
            continue
        if not line:
            current = None
            continue
        if current is not None:
            if not line.strip():
                continue
            _add_property(current, line, number, source, findings)
            continue
        if not line.strip():
            continue
        header = _HEADER.match(line)
        if header is None:
            findings.append(
                finding("config-syntax", at(source, number), f"ignored line {line.strip()!r}")
            )
            continue
        section_type, section_id = header.group(1).lower(), header.group(2)
        current = Section(type=section_type, id=section_id, line=number)
        key = (section_type, section_id)
        if key in seen_ids:
            findings.append(
                finding(
                    "config-syntax",
                    at(source, number),
                    f"duplicate section '{section_type}: {section_id}' (first at line "
                    f"{seen_ids[key]} kept), skipped",
                )
            )
            continue
        seen_ids[key] = number
        sections.append(current)
    return sections, findings


def _add_property(
    section: Section, line: str, number: int, source: str, findings: list[Finding]
) -> None:
    parsed = split_property(line)
    if parsed is None:
        findings.append(
            finding(
                "config-syntax",
                at(source, number),
                f"section '{section.type}: {section.id}': ignored line {line.strip()!r}",
            )
        )
        return
    key, value = parsed
    if key in section.values:
        findings.append(
            finding(
                "config-syntax",
                at(source, number),
                f"section '{section.type}: {section.id}': duplicate key '{key}' ignored",
            )
        )
        return
    section.values[key] = value
    section.lines[key] = number


def split_property(line: str) -> tuple[str, str | None] | None:
    r"""A property line's key and value (None for a bare flag), or None if the line is not
    one: the groups of ``^\s+(\S+)(?:\s+(.*\S))?\s*$``, without the regular expression
    (``\s``, ``str.split`` and ``str.rstrip`` agree on what whitespace is)."""
    parts = line.split(None, 1) if line[:1].isspace() else None
    if not parts:
        return None
    return parts[0], parts[1].rstrip() if len(parts) > 1 else None


def check_keys(
    section: Section,
    source: str,
    allowed: Collection[str],
    required: Collection[str] = (),
) -> tuple[bool, list[Finding]]:
    """Drop unknown keys (with a finding each) and report missing required keys.

    Returns whether the section is usable (no required key missing) and the findings.
    """
    findings: list[Finding] = []
    for key in [k for k in section.values if k not in allowed]:
        findings.append(
            finding(
                "config-unknown-key",
                at(source, section.lines[key]),
                f"section '{section.type}: {section.id}': unknown key '{key}' ignored",
            )
        )
        del section.values[key]
    missing = [key for key in required if not section.values.get(key)]
    for key in missing:
        findings.append(
            finding(
                "config-missing-key",
                at(source, section.line),
                f"section '{section.type}: {section.id}': required key '{key}' missing, "
                "section skipped",
            )
        )
    return not missing, findings


def bad_value(section: Section, source: str, key: str, expected: str) -> Finding:
    """The finding for a property whose value does not parse."""
    return finding(
        "config-bad-value",
        at(source, section.lines.get(key, section.line)),
        f"section '{section.type}: {section.id}': bad value {section.values.get(key)!r} "
        f"for '{key}' (expected {expected})",
    )


def flag_value(
    section: Section, source: str, key: str, findings: list[Finding], default: bool = False
) -> bool:
    """The boolean property ``key`` (``default`` when absent or unparsable: a finding)."""
    if key not in section.values:
        return default
    value = parse_bool(section.values[key])
    if value is None:
        findings.append(bad_value(section, source, key, "0 or 1"))
        return default
    return value


def unknown_section(section: Section, source: str) -> Finding:
    """The finding for a section whose type this file does not have."""
    return finding(
        "config-unknown-section",
        at(source, section.line),
        f"unknown section type '{section.type}' (id '{section.id}'), section skipped",
    )
