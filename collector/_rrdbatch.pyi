"""Type stub of the C extension collector/_rrdbatch.c (librrd's fetch over many files)."""

from collections.abc import Sequence

from typing_extensions import Buffer

def fetch_into(
    paths: Sequence[bytes],
    cf: bytes,
    start: int,
    end: int,
    resolution: int,
    values: Buffer,
    slot: int,
    meta: Buffer,
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]: ...
