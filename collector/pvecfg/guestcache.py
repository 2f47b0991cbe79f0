"""A cache of parsed /etc/pve files for a long-running collector (``read_tree(cache=...)``).

A 10,000-guest tree holds 10,000 small guest configs, and parsing them is most of what
``read_tree`` does; between two collects almost none of them change. The cache keeps each
parsed config (and the findings it produced) with the ``(st_mtime_ns, st_size)`` of the file
it came from, keyed by its path under the root, so a later ``read_tree`` of an unchanged
tree only lists and stats the guest configs. A file whose mtime or size differs is read and
parsed again; a file gone from the tree is dropped from the cache at the end of the read.
The other files (.vmlist, ha/resources.cfg, ...) are cached the same way.

Two shortcuts spare the per-file work of an unchanged tree (while the vmid -> pool mapping
of user.cfg is unchanged too): a guest config directory that held only trusted cached
configs at the previous read, with the same listing and every file's ``(st_mode,
st_mtime_ns, st_size)`` unchanged, is taken whole (its configs, cache entries and findings);
and when every directory was taken whole and the ``.vmlist`` parse is the same, so is the
cross-check of the configs against ``.vmlist``. Every file is still stat()ed on every read.

A file modified twice within one timestamp tick (pmxcfs keeps whole seconds) with the same
size keeps its mtime and size: so an entry whose file's mtime lies within ``racy_window_s``
of the read that cached it is not trusted, and the next read parses the file again (as git
does for "racily clean" index entries).

Cached values and findings are shared between the trees returned: treat them as read-only.
One cache may serve several roots (kept apart); concurrent ``read_tree`` calls on one root
are safe but may both parse a changed file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

from collector.pvecfg.guestconf import GuestConfig
from collector.pvecfg.slotinit import slot_init
from model.snapshot import Finding

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheEntry(Generic[V]):
    """One parsed file, valid while the file keeps ``mtime_ns`` and ``size``."""

    mtime_ns: int
    size: int
    trusted: bool
    """False if the file was modified too shortly before it was read (see the module doc)."""
    value: V
    findings: tuple[Finding, ...]
    depends: object = None
    """What else the parse used (for ha/rules.cfg: the .vmlist it resolved vmids with)."""


_new_entry = slot_init(CacheEntry)


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """A guest config directory whose every entry is a ``<vmid>.conf`` file cached trusted."""

    names: list[str]
    """The entries' names, sorted."""
    keys: list[tuple[int, int, int]]
    """``(st_mode, st_mtime_ns, st_size)`` of each entry, in ``names`` order."""
    configs: dict[int, GuestConfig]
    """vmid -> config, in ``names`` order (one config per vmid)."""
    files: dict[str, CacheEntry[GuestConfig]]
    """The per-file entries, by path under the root."""
    findings: tuple[Finding, ...]
    """What reading the directory reported, in order."""


@dataclass(frozen=True, slots=True)
class MergedGuests:
    """The guest configs of a whole read, cross-checked against ``.vmlist``."""

    directories: tuple[str, ...]
    """The directories read, each taken whole from the cache (in reading order)."""
    vmlist: object
    """The ``.vmlist`` parse the configs were checked against."""
    guests: dict[int, GuestConfig]
    findings: tuple[Finding, ...]


class GuestConfigCache:
    """Parsed /etc/pve files kept across ``read_tree`` calls, keyed by (path, mtime, size).

    ``hits`` and ``misses`` count the guest configs reused and the ones read and parsed, over
    the cache's lifetime.
    """

    def __init__(self, racy_window_s: float = 2.0) -> None:
        self.racy_window_ns = int(racy_window_s * 1e9)
        self.hits = 0
        self.misses = 0
        self._guests: dict[str, dict[str, CacheEntry[GuestConfig]]] = {}
        self._files: dict[str, dict[str, CacheEntry[object]]] = {}
        self._directories: dict[str, dict[str, DirectoryEntry]] = {}
        self._pools: dict[str, dict[int, str]] = {}
        self._merged: dict[str, MergedGuests] = {}

    def __len__(self) -> int:
        """The number of guest configs cached, over every root."""
        return sum(len(entries) for entries in self._guests.values())

    def clear(self) -> None:
        """Forget everything cached (the counters are kept)."""
        self._guests.clear()
        self._files.clear()
        self._directories.clear()
        self._pools.clear()
        self._merged.clear()

    def begin(self, root: str) -> CachePass:
        """Start one read of the tree at ``root``; ``CachePass.finish`` ends it."""
        return CachePass(self, root)


class CachePass:
    """The cache as one ``read_tree`` sees it: what this read finds replaces the root's entries.

    ``guests`` holds the entries of the previous read; ``read_tree`` checks them itself (an
    entry is reusable if ``trusted`` and its mtime and size match the file's) and fills
    ``new_guests``; likewise ``directories`` and ``merged`` (see the module doc), which are
    only valid while the vmid -> pool mapping equals ``pools``, the previous read's.
    """

    def __init__(self, cache: GuestConfigCache, root: str) -> None:
        self.cache = cache
        self.root = root
        self.guests = cache._guests.get(root, {})
        self.new_guests: dict[str, CacheEntry[GuestConfig]] = {}
        self.files = cache._files.get(root, {})
        self.new_files: dict[str, CacheEntry[object]] = {}
        self.directories = cache._directories.get(root, {})
        self.new_directories: dict[str, DirectoryEntry] = {}
        self.pools = cache._pools.get(root)
        self.new_pools: dict[int, str] | None = None
        self.merged = cache._merged.get(root)
        self.new_merged: MergedGuests | None = None
        self.trusted_before_ns = time.time_ns() - cache.racy_window_ns

    def entry(
        self,
        mtime_ns: int,
        size: int,
        value: V,
        findings: tuple[Finding, ...],
        depends: object = None,
    ) -> CacheEntry[V]:
        """A new entry for ``value`` parsed from a file whose stat() before the read gave
        ``mtime_ns`` and ``size``."""
        trusted = mtime_ns < self.trusted_before_ns
        return _new_entry(mtime_ns, size, trusted, value, findings, depends)

    def file(
        self, relative: str, stat: os.stat_result, depends: object
    ) -> CacheEntry[object] | None:
        """The cached parse of a non-guest file if it is unchanged and ``depends`` is the same."""
        entry = self.files.get(relative)
        if (
            entry is None
            or not entry.trusted
            or entry.mtime_ns != stat.st_mtime_ns
            or entry.size != stat.st_size
            or entry.depends is not depends
        ):
            return None
        self.new_files[relative] = entry
        return entry

    def finish(self) -> None:
        """Make this read's entries the root's entries (drops the files that vanished)."""
        cache = self.cache
        cache._guests[self.root] = self.new_guests
        cache._files[self.root] = self.new_files
        cache._directories[self.root] = self.new_directories
        _set_or_drop(cache._pools, self.root, self.new_pools)
        _set_or_drop(cache._merged, self.root, self.new_merged)


def _set_or_drop(mapping: dict[str, V], key: str, value: V | None) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value
