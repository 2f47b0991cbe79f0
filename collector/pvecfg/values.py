"""Small value parsers shared by the /etc/pve readers: PVE booleans, sizes, property strings.

PVE writes most option values in a handful of textual forms (``1``/``0`` booleans, ``32G``
sizes, ``key=value,...`` property strings, URI-escaped comments). Parsing them in one place
keeps every file reader consistent about what is accepted and what becomes a finding.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from model.snapshot import Finding, Severity

_TRUE = frozenset({"1", "on", "yes", "true"})
_FALSE = frozenset({"0", "off", "no", "false"})
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT])?$", re.IGNORECASE)
_SIZE_FACTOR = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_NUMBER = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)$")
_INTEGER = re.compile(r"^\d+$")

MIB = 1 << 20


def finding(kind: str, where: str, message: str, severity: Severity = "warning") -> Finding:
    """Build a finding; a thin alias so call sites read as sentences."""
    return Finding(kind=kind, where=where, message=message, severity=severity)


def at(source: str, line: int) -> str:
    """The ``file:line`` location string used in findings."""
    return f"{source}:{line}"


def parse_bool(text: str | None) -> bool | None:
    """A PVE boolean (``1 on yes true`` / ``0 off no false``, any case); None if invalid.

    A missing value (a bare flag in a section config) counts as true, as PVE reads it.
    """
    if text is None:
        return True
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def parse_int(text: str | None, minimum: int = 0) -> int | None:
    """A non-negative decimal integer at least ``minimum``; None if invalid."""
    if text is None:
        return None
    if not (text.isascii() and text.isdecimal()):  # else plain digits: _INTEGER's match
        text = text.strip()
        if not _INTEGER.match(text):
            return None
    value = int(text)
    return value if value >= minimum else None


def parse_number(text: str | None) -> float | None:
    """A non-negative decimal number (``2``, ``0.5``, ``1.``); None if invalid."""
    if text is None or not _NUMBER.match(text.strip()):
        return None
    return float(text.strip())


def parse_size(text: str) -> int | None:
    """A PVE disk size (``32G``, ``512M``, ``1.5T``, plain bytes) in bytes; None if invalid."""
    match = _SIZE.match(text.strip())
    if match is None:
        return None
    number, unit = match.groups()
    return int(float(number) * _SIZE_FACTOR[(unit or "").upper()])


def split_property_string(text: str) -> tuple[dict[str, str], list[str]]:
    """Split ``a=1,b=2,positional`` into its keyed items and its items without ``=``.

    Empty items (``a=1,,b=2``) are dropped; the first occurrence of a repeated key wins.
    """
    keyed: dict[str, str] = {}
    positional: list[str] = []
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if sep:
            keyed.setdefault(key.strip(), value.strip())
        else:
            positional.append(item)
    return keyed, positional


def decode_text(text: str) -> str:
    """Undo PVE's ``encode_text`` (URI escaping) used for comments and descriptions."""
    return unquote(text)
