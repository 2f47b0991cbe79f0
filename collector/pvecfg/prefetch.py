"""Guest config files read ahead on a background thread, for a cold ``read_tree``.

On a cold read (no cache, or an empty one) every ``<vmid>.conf`` under ``nodes/*/qemu-server``
and ``nodes/*/lxc`` is opened, stat()ed and read, and those system calls are about a third of
the read. The C extension ``collector.pvecfg._prefetch`` makes them on a POSIX thread (no GIL),
directory by directory, while ``read_tree`` parses the directories already read. Without the
extension (not built) :func:`start_prefetch` returns None and ``read_tree`` reads each file
itself; both give the same tree.

Only regular files named ASCII digits + ``.conf`` are read; ``read_tree`` handles everything
else (odd names, files that appeared after the listing) as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Protocol

PrefetchedFile = tuple[int, int, int, int, str | bytes | None]
"""One file as the thread read it: ``(error, st_mode, st_mtime_ns, st_size, data)``.

``error`` is 0 or the errno of the failed open/read (``data`` is then None). The ``st_*``
come from fstat() of the open file before it was read (all -1 if fstat failed). ``data`` is
the content: str if valid UTF-8, else the raw bytes."""


class ConfigPrefetch(Protocol):
    """The config files of some directories, being read on a background thread."""

    def take(self, k: int, /) -> dict[str, PrefetchedFile]:
        """Directory ``k``'s files by name (waits until the thread has read them); each
        directory can be taken once. A directory that could not be listed gives {}."""

    def close(self) -> None:
        """Stop the thread and free what was not taken (idempotent)."""


def _native_type() -> Callable[[list[bytes]], ConfigPrefetch] | None:
    try:
        from collector.pvecfg._prefetch import Prefetch
    except ImportError:  # the optional extension was not built
        return None
    return Prefetch


def available() -> bool:
    """Whether the C extension was built."""
    return _native_type() is not None


def start_prefetch(directories: Sequence[str | os.PathLike[str]]) -> ConfigPrefetch | None:
    """Start reading the configs of ``directories`` (in that order); None without the
    extension."""
    native = _native_type()
    if native is None:
        return None
    return native([os.fsencode(directory) for directory in directories])
