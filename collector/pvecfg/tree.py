"""Read a whole ``/etc/pve``-shaped directory into one ``PveTree``.

Every file is optional except the root itself: a missing datacenter.cfg means the default
CRS, a missing rules.cfg means no rules, and so on. Content problems never raise; they are
collected as findings naming the file (relative to the root) and line. The guest configs
are cross-checked against ``.vmlist``: a config in another node's directory than .vmlist
says, a config .vmlist does not know, and a .vmlist entry without a config are findings.
``GuestConfig.node`` stays the directory the config was found in; ``.vmlist`` is the
placement authority.

A cold read (no cache, or a cache not filled for this root yet) has the guest configs read on
a background thread (:mod:`collector.pvecfg.prefetch`) while it parses the other files and the
configs already read; the tree is the same either way.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from operator import attrgetter
from pathlib import Path
from typing import TypeVar, cast

from collector.pvecfg.datacenter import DatacenterConfig, parse_datacenter_cfg
from collector.pvecfg.guestcache import (
    CacheEntry,
    CachePass,
    DirectoryEntry,
    GuestConfigCache,
    MergedGuests,
)
from collector.pvecfg.guestconf import GuestConfig, parse_guest_config
from collector.pvecfg.ha_resources import HaResource, parse_resources_cfg
from collector.pvecfg.ha_rules import (
    HaGroup,
    groups_to_rules,
    overlapping_node_affinity,
    parse_groups_cfg,
    parse_rules_cfg,
)
from collector.pvecfg.ha_status import ManagerStatus, parse_manager_status
from collector.pvecfg.members import GuestType, Members, VmListEntry, parse_members, parse_vmlist
from collector.pvecfg.pools import PoolConfig, parse_pools, pool_of_guest
from collector.pvecfg.prefetch import ConfigPrefetch, PrefetchedFile, start_prefetch
from collector.pvecfg.storage import StorageConfig, parse_storage_cfg
from collector.pvecfg.values import finding
from model.snapshot import Crs, Finding, Rule

T = TypeVar("T")
_GUEST_DIRS: dict[str, GuestType] = {"qemu-server": "qemu", "lxc": "lxc"}
_CONFIG_NAME = re.compile(r"^(\d+)\.conf$")
_READ_SIZE = 1 << 16
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# What Path.is_dir() takes for "not a directory" rather than an error.
_NOT_A_DIRECTORY = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF})
_BY_NAME = attrgetter("name")
_STAT = os.DirEntry.stat


class PveTreeNotFoundError(FileNotFoundError):
    """The directory given as the /etc/pve root does not exist or is not a directory."""


@dataclass(slots=True)
class PveTree:
    root: Path
    members: Members | None = None
    vmlist: dict[int, VmListEntry] = field(default_factory=dict)
    guests: dict[int, GuestConfig] = field(default_factory=dict)
    """vmid -> config (main section), ``pool`` filled from user.cfg."""
    storages: dict[str, StorageConfig] = field(default_factory=dict)
    pools: dict[str, PoolConfig] = field(default_factory=dict)
    datacenter: DatacenterConfig = field(default_factory=DatacenterConfig)
    ha_resources: dict[str, HaResource] = field(default_factory=dict)
    ha_groups: dict[str, HaGroup] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    """rules.cfg rules followed by the rules derived from groups.cfg."""
    manager_status: ManagerStatus | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def crs(self) -> Crs:
        return self.datacenter.crs

    def shared_storages(self) -> frozenset[str]:
        """The ids of the storages storage.cfg marks shared; any other storage is local."""
        return frozenset(name for name, storage in self.storages.items() if storage.shared)

    def has_local_disk(self, guest: GuestConfig, shared: frozenset[str] | None = None) -> bool:
        """Whether a volume of ``guest`` is node-bound: a host path or a non-shared storage.

        A storage missing from storage.cfg counts as local (the safe assumption). A caller
        checking many guests passes ``shared``, the tree's :meth:`shared_storages`.
        """
        if guest.host_volumes:
            return True
        return not guest.storages <= (self.shared_storages() if shared is None else shared)


def read_tree(root: Path | str, *, cache: GuestConfigCache | None = None) -> PveTree:
    """Read every known file under ``root``; raises PveTreeNotFoundError if root is missing.

    With a ``cache``, files unchanged since an earlier read with the same cache are not read
    or parsed again; the result is the same as without one.
    """
    root = require_root(root)
    tree = PveTree(root=root)
    cache_pass = cache.begin(os.fspath(root)) if cache is not None else None
    reader = _Reader(root, tree.findings, cache_pass)
    directories = _GuestDirectories.listed(reader)
    # Cold (nothing cached): the configs are read on a thread from here on (prefetch.py).
    prefetch = None
    if cache_pass is None or not cache_pass.guests:
        prefetch = start_prefetch([root / relative for relative, _, _ in directories.each])
    try:
        vmlist_usable = _read_others(tree, reader)
        tree.findings.extend(directories.findings)  # where listing nodes/ reported them before
        tree.guests = _read_guests(
            reader,
            directories,
            prefetch,
            tree.vmlist if vmlist_usable else None,
            pool_of_guest(tree.pools),
        )
    finally:
        if prefetch is not None:
            prefetch.close()
    if cache_pass is not None:
        cache_pass.finish()
    if tree.storages or (root / "storage.cfg").is_file():
        tree.findings.extend(_unknown_storages(tree))
    return tree


def _read_others(tree: PveTree, reader: _Reader) -> bool:
    """Fill ``tree`` from every file but the guest configs; whether .vmlist is usable."""
    tree.members = reader.parse(".members", parse_members)
    before = len(tree.findings)
    vmlist = reader.parse(".vmlist", parse_vmlist)
    vmlist_usable = vmlist is not None and all(
        f.severity != "error" for f in tree.findings[before:]
    )
    tree.vmlist = vmlist or {}
    tree.storages = reader.parse("storage.cfg", parse_storage_cfg) or {}
    tree.pools = reader.parse("user.cfg", parse_pools) or {}
    tree.datacenter = reader.parse("datacenter.cfg", parse_datacenter_cfg) or DatacenterConfig()
    tree.ha_resources = reader.parse("ha/resources.cfg", parse_resources_cfg) or {}
    tree.ha_groups = reader.parse("ha/groups.cfg", parse_groups_cfg) or {}
    vmlist_entries = tree.vmlist
    rules = reader.parse(
        "ha/rules.cfg",
        lambda text, source: parse_rules_cfg(
            text, source, {vmid: entry.type for vmid, entry in vmlist_entries.items()}
        ),
        depends=vmlist_entries,
    )
    group_rules, group_findings = groups_to_rules(tree.ha_groups, tree.ha_resources)
    tree.findings.extend(group_findings)
    tree.rules = [*(rules or []), *group_rules]
    tree.findings.extend(overlapping_node_affinity(tree.rules))
    tree.manager_status = reader.parse("ha/manager_status", parse_manager_status)
    return vmlist_usable


def require_root(root: Path | str) -> Path:
    """``root`` as a Path; PveTreeNotFoundError if it does not exist or is not a directory."""
    root = Path(root)
    if not root.is_dir():
        raise PveTreeNotFoundError(f"/etc/pve root {str(root)!r} does not exist or is not a dir")
    return root


class _Reader:
    """Reads files relative to the root, turning read errors into findings."""

    def __init__(self, root: Path, findings: list[Finding], cache: CachePass | None) -> None:
        self.root = root
        self.root_path = os.fspath(root)
        self.findings = findings
        self.cache = cache

    def text(self, relative: str, dir_fd: int | None = None, name: str = "") -> str | None:
        """The file's text, or None if it is missing or unreadable (a finding). With
        ``dir_fd``, the file is ``name`` in that open directory (``relative`` names it)."""
        try:
            if dir_fd is None:
                raw = _read_bytes(os.path.join(self.root_path, relative))
            else:
                raw = _read_bytes(name, dir_fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            self._cannot_read(relative, error.strerror)
            return None
        return self.decoded(relative, raw)

    def prefetched_text(self, relative: str, error: int, data: str | bytes | None) -> str | None:
        """``text`` for a file the prefetch thread read: ``error`` (an errno) or ``data``."""
        if error:
            if error != errno.ENOENT:
                self._cannot_read(relative, os.strerror(error))
            return None
        if isinstance(data, str):
            return data
        return self.decoded(relative, data or b"")

    def _cannot_read(self, relative: str, reason: str | None) -> None:
        self.findings.append(
            finding("config-unreadable", relative, f"cannot read: {reason}", "error")
        )

    def decoded(self, relative: str, raw: bytes) -> str:
        """``raw`` as UTF-8; undecodable bytes are replaced, with a finding."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            self.findings.append(
                finding(
                    "config-syntax",
                    relative,
                    f"not valid UTF-8 at byte {error.start}, undecodable bytes replaced",
                )
            )
            return raw.decode("utf-8", errors="replace")

    def listdir(self, relative: str) -> list[os.DirEntry[str]]:
        """The entries of a directory sorted by name; none if it is missing, a finding if
        unreadable."""
        if not (self.root / relative).is_dir():
            return []
        try:
            with os.scandir(os.path.join(self.root_path, relative)) as entries:
                return sorted(entries, key=_BY_NAME)
        except OSError as error:
            self._cannot_list(relative, error)
            return []

    @contextmanager
    def directory(self, relative: str) -> Iterator[tuple[int, list[os.DirEntry[str]]]]:
        """``listdir`` that also yields the directory open (-1 if it is not): stats and
        opens relative to it skip resolving the whole path for every file."""
        try:
            dir_fd = os.open(os.path.join(self.root_path, relative), _DIRECTORY_FLAGS)
        except OSError as error:
            if error.errno not in _NOT_A_DIRECTORY:
                self._cannot_list(relative, error)
            yield -1, []
            return
        try:
            with os.scandir(dir_fd) as entries:
                listing = sorted(entries, key=_BY_NAME)
        except OSError as error:
            self._cannot_list(relative, error)
            listing = []
        try:
            yield dir_fd, listing
        finally:
            os.close(dir_fd)

    def _cannot_list(self, relative: str, error: OSError) -> None:
        self.findings.append(
            finding("config-unreadable", relative, f"cannot list: {error.strerror}", "error")
        )

    def parse(
        self,
        relative: str,
        parser: Callable[[str, str], tuple[T, list[Finding]]],
        depends: object = None,
    ) -> T | None:
        """Read and parse one file, or take its parse from the cache if the file (and what
        the parse ``depends`` on) did not change."""
        stat = None
        if self.cache is not None:
            try:
                stat = os.stat(os.path.join(self.root_path, relative))
            except OSError:
                pass  # the read below reports it, as without a cache
            else:
                cached = self.cache.file(relative, stat, depends)
                if cached is not None:
                    self.findings.extend(cached.findings)
                    return cast(T, cached.value)
        before = len(self.findings)
        text = self.text(relative)
        if text is None:
            return None
        value, findings = parser(text, relative)
        self.findings.extend(findings)
        if self.cache is not None and stat is not None:
            entry = self.cache.entry(
                stat.st_mtime_ns, stat.st_size, value, tuple(self.findings[before:]), depends
            )
            self.cache.new_files[relative] = cast(CacheEntry[object], entry)
        return value


def _read_bytes(path: str, dir_fd: int | None = None) -> bytes:
    """The whole file, read to EOF (``open().read()`` without the file objects' overhead)."""
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    try:
        data = os.read(fd, _READ_SIZE)
        if not data:
            return data
        chunks = [data]
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class _GuestDirectories:
    """The guest config directories to read, ``(relative, node, guest type)`` in reading
    order (existing or not), and what listing ``nodes/`` reported."""

    each: list[tuple[str, str, GuestType]]
    findings: list[Finding]

    @classmethod
    def listed(cls, reader: _Reader) -> _GuestDirectories:
        before = len(reader.findings)
        nodes = reader.listdir("nodes")
        findings = reader.findings[before:]
        del reader.findings[before:]  # reported in their old place, after the other files
        return cls(
            [
                (f"nodes/{node.name}/{dirname}", node.name, guest_type)
                for node in nodes
                if node.is_dir()
                for dirname, guest_type in _GUEST_DIRS.items()
            ],
            findings,
        )


def _read_guests(
    reader: _Reader,
    directories: _GuestDirectories,
    prefetch: ConfigPrefetch | None,
    vmlist: dict[int, VmListEntry] | None,
    pool_of: dict[int, str],
) -> dict[int, GuestConfig]:
    """Parse every guest config; prefer, for a vmid found twice, the copy .vmlist points at."""
    guests = _GuestReader(reader, pool_of)
    for k, (directory, node, guest_type) in enumerate(directories.each):
        guests.read_directory(directory, node, guest_type, prefetch, k)
    return guests.result(vmlist)


_StatKey = tuple[int, int, int]
"""``(st_mode, st_mtime_ns, st_size)`` of a config file, taken before it was read."""


class _GuestReader:
    """The guest configs of one ``read_tree``, directory by directory."""

    def __init__(self, reader: _Reader, pool_of: dict[int, str]) -> None:
        self.reader = reader
        self.cache = reader.cache
        self.findings = reader.findings
        self.pool_of = pool_of
        self.first: dict[int, GuestConfig] = {}
        """vmid -> the first config found for it."""
        self.more: dict[int, list[GuestConfig]] = {}
        """vmid -> every config found for it, for a vmid found more than once."""
        self.visited: list[str] = []
        """The directories read (existing ones), in order."""
        self.reusable = False
        """Whether directories may be taken whole from the cache (the pools are unchanged)."""
        self.all_reused = False
        """Whether every directory so far was taken whole from the cache."""
        # The directory being read entry by entry.
        self.dir_fd = -1
        self.node = ""
        self.guest_type: GuestType = "qemu"
        self.prefetched: dict[str, PrefetchedFile] = {}
        """Its files as the prefetch thread read them (by name), taken when used."""
        if self.cache is not None:
            self.cache.new_pools = pool_of
            self.reusable = self.all_reused = self.cache.pools == pool_of

    def read_directory(
        self,
        directory: str,
        node: str,
        guest_type: GuestType,
        prefetch: ConfigPrefetch | None,
        k: int,
    ) -> None:
        """Read ``directory`` (number ``k`` of the ``prefetch``, if there is one)."""
        with self.reader.directory(directory) as (dir_fd, entries):
            if dir_fd < 0:
                return
            self.visited.append(directory)
            if self.reusable and self.reuse(directory, entries):
                return
            self.all_reused = False
            self.dir_fd, self.node, self.guest_type = dir_fd, node, guest_type
            self.prefetched = prefetch.take(k) if prefetch is not None else {}
            self.read_entries(directory, entries)

    def reuse(self, directory: str, entries: list[os.DirEntry[str]]) -> bool:
        """Take the directory whole from the cache if its listing and files are unchanged."""
        assert self.cache is not None
        old = self.cache.directories.get(directory)
        if old is None or [entry.name for entry in entries] != old.names:
            return False
        try:
            keys = [(s.st_mode, s.st_mtime_ns, s.st_size) for s in map(_STAT, entries)]
        except OSError:
            return False
        if keys != old.keys or not self.first.keys().isdisjoint(old.configs):
            return False
        self.first.update(old.configs)
        self.findings.extend(old.findings)
        self.cache.new_guests.update(old.files)
        self.cache.new_directories[directory] = old
        self.cache.cache.hits += len(old.files)
        return True

    def read_entries(self, directory: str, entries: list[os.DirEntry[str]]) -> None:
        """Read the directory entry by entry (each config through the cache if there is one)
        and, if all of them are trusted configs, cache the directory whole."""
        first, more, pool_of, findings = self.first, self.more, self.pool_of, self.findings
        before = len(findings)
        new_guests = self.cache.new_guests if self.cache is not None else None
        keep = new_guests is not None  # whether the directory can be cached whole
        configs: dict[int, GuestConfig] = {}
        files: dict[str, CacheEntry[GuestConfig]] = {}
        keys: list[_StatKey] = []
        for entry in entries:
            name = entry.name
            stem = name[:-5]
            if name.endswith(".conf") and stem.isdecimal() and entry.is_file():
                vmid = int(stem)
            else:
                odd = _odd_config_name(entry, directory, findings)
                keep = False
                if odd is None:
                    continue
                vmid = odd
            relative = f"{directory}/{name}"
            config, key = self.read(entry, relative, vmid, pool_of.get(vmid))
            if config is None:
                keep = False
                continue
            if keep and new_guests is not None:
                cached = new_guests.get(relative)
                if cached is None or not cached.trusted or vmid in configs or key is None:
                    keep = False
                else:
                    keys.append(key)
                    configs[vmid] = config
                    files[relative] = cached
            if vmid not in first:
                first[vmid] = config
            elif vmid in more:
                more[vmid].append(config)
            else:
                more[vmid] = [first[vmid], config]
        if keep and self.cache is not None:
            names = [entry.name for entry in entries]
            entry_findings = tuple(findings[before:])
            self.cache.new_directories[directory] = DirectoryEntry(
                names, keys, configs, files, entry_findings
            )

    def read(
        self, entry: os.DirEntry[str], relative: str, vmid: int, pool: str | None
    ) -> tuple[GuestConfig | None, _StatKey | None]:
        """The config in ``entry`` of the current directory (``relative`` under the root),
        from the cache if the file is unchanged since it was cached, and the stat key it
        was cached under (None: not cached). The file is stat-ed before it is read, so a
        change racing with the read leaves an entry that is stale by its key and parsed
        again later."""
        cache = self.cache
        fetched = self.prefetched.pop(entry.name, None) if self.prefetched else None
        if cache is None:
            return self.parse(entry, relative, vmid, pool, fetched), None
        if fetched is not None:
            key = None if fetched[1] < 0 else (fetched[1], fetched[2], fetched[3])
        else:
            try:
                stat = entry.stat()
            except OSError:
                key = None
            else:
                key = (stat.st_mode, stat.st_mtime_ns, stat.st_size)
        if key is None:
            return self.parse(entry, relative, vmid, pool, fetched), None
        _, mtime_ns, size = key
        cached = cache.guests.get(relative)
        if (
            cached is not None
            and cached.trusted
            and cached.mtime_ns == mtime_ns
            and cached.size == size
        ):
            cache.cache.hits += 1
            config = cached.value
            if config.pool != pool:  # user.cfg changed, the config did not
                config = replace(config, pool=pool)
                cached = replace(cached, value=config)
            cache.new_guests[relative] = cached
            if cached.findings:
                self.findings.extend(cached.findings)
            return config, key
        cache.cache.misses += 1
        before = len(self.findings)
        parsed = self.parse(entry, relative, vmid, pool, fetched)
        if parsed is None:
            return None, None
        # The entry keeps the decode finding of reader.text too.
        findings = tuple(self.findings[before:])
        cache.new_guests[relative] = cache.entry(mtime_ns, size, parsed, findings)
        return parsed, key

    def parse(
        self,
        entry: os.DirEntry[str],
        relative: str,
        vmid: int,
        pool: str | None,
        fetched: PrefetchedFile | None,
    ) -> GuestConfig | None:
        if fetched is None:
            text = self.reader.text(relative, self.dir_fd, entry.name)
        else:
            text = self.reader.prefetched_text(relative, fetched[0], fetched[4])
        if text is None:
            return None
        config, findings = parse_guest_config(
            text, vmid, self.guest_type, self.node, relative, pool=pool
        )
        self.findings.extend(findings)
        return config

    def result(self, vmlist: dict[int, VmListEntry] | None) -> dict[int, GuestConfig]:
        """vmid -> config, cross-checked against ``vmlist`` (None: no usable .vmlist)."""
        cache, findings = self.cache, self.findings
        if cache is None:
            return self.cross_check(vmlist)
        visited = tuple(self.visited)
        merged = cache.merged
        if (
            self.all_reused
            and merged is not None
            and merged.directories == visited
            and merged.vmlist is vmlist
        ):
            cache.new_merged = merged
            findings.extend(merged.findings)
            return dict(merged.guests)
        before = len(findings)
        guests = self.cross_check(vmlist)
        if visited == tuple(cache.new_directories):  # all of them cached whole
            cache.new_merged = MergedGuests(visited, vmlist, guests, tuple(findings[before:]))
        return dict(guests)

    def cross_check(self, vmlist: dict[int, VmListEntry] | None) -> dict[int, GuestConfig]:
        first, more, findings = self.first, self.more, self.findings
        guests: dict[int, GuestConfig] = {}
        for vmid in sorted(first):
            only = first[vmid]
            vm_entry = vmlist.get(vmid) if vmlist is not None else None
            if (
                vm_entry is not None
                and only.node == vm_entry.node
                and only.type == vm_entry.type
                and vmid not in more
            ):
                guests[vmid] = only  # the usual case: one config, where .vmlist says
            else:
                guests[vmid] = _pick_config(vmid, more.get(vmid, [only]), vmlist, findings)
        if vmlist is None:
            findings.append(
                finding(
                    "vmlist-missing",
                    ".vmlist",
                    "no usable .vmlist: guest placement not cross-checked",
                )
            )
            return guests
        for vmid in sorted(set(vmlist) - set(guests)):
            vm_entry = vmlist[vmid]
            findings.append(
                finding(
                    "vmlist-without-config",
                    f"{'vm' if vm_entry.type == 'qemu' else 'ct'}:{vmid}",
                    f".vmlist puts {vm_entry.type} {vmid} on {vm_entry.node} "
                    "but no config was found",
                )
            )
        return guests


def _odd_config_name(
    entry: os.DirEntry[str], directory: str, findings: list[Finding]
) -> int | None:
    """The vmid of a config the quick name check passed over (e.g. "100.conf\n"), or None
    (with a finding) for an entry that is not a config."""
    match = _CONFIG_NAME.match(entry.name)
    if match is None or not entry.is_file():
        findings.append(
            finding(
                "config-syntax",
                f"{directory}/{entry.name}",
                "not a <vmid>.conf file, ignored",
                "info",
            )
        )
        return None
    return int(match.group(1))


def _pick_config(
    vmid: int,
    configs: list[GuestConfig],
    vmlist: dict[int, VmListEntry] | None,
    findings: list[Finding],
) -> GuestConfig:
    entry = vmlist.get(vmid) if vmlist is not None else None
    matching = [c for c in configs if entry and (c.node, c.type) == (entry.node, entry.type)]
    chosen = matching[0] if matching else configs[0]
    for other in configs:
        if other is not chosen:
            findings.append(
                finding(
                    "config-duplicate",
                    other.source,
                    f"vmid {vmid} also configured in {chosen.source}; this copy ignored",
                    "error",
                )
            )
    if vmlist is None:
        return chosen
    if entry is None:
        findings.append(
            finding(
                "config-without-vmlist",
                chosen.source,
                f"{chosen.sid} has a config but no .vmlist entry",
            )
        )
    elif not matching:
        findings.append(
            finding(
                "vmlist-misplaced-config",
                chosen.source,
                f".vmlist puts vmid {vmid} ({entry.type}) on {entry.node}, config found as "
                f"{chosen.type} under node {chosen.node}",
            )
        )
    return chosen


def _unknown_storages(tree: PveTree) -> list[Finding]:
    known = set(tree.storages)
    return [
        finding(
            "config-unknown-storage",
            guest.source,
            f"{guest.sid} uses storage '{storage}' missing from storage.cfg (counted as local)",
        )
        for guest in tree.guests.values()
        if not guest.storages <= known
        for storage in sorted(guest.storages)
        if storage not in tree.storages
    ]
