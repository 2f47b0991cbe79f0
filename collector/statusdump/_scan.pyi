"""Type stub of collector/statusdump/_scan.c (the strict-form lines of a status dump)."""

from collections.abc import Sequence

from typing_extensions import Buffer

ScannedKind = tuple[list[str], bytes, tuple[list[str], ...], bytes, bytes]
"""``(ids, numbers, texts, current, lines)`` of one kind's accepted lines."""

def scan(
    data: Buffer,
    prefixes: Sequence[tuple[bytes, int, bool, int]],
    kinds: Sequence[tuple[bytes, bytes]],
) -> tuple[list[ScannedKind], list[int]]: ...
