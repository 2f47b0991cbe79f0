"""Read a whole ``/etc/pve``-shaped directory into one ``PveTree``.

Every file is optional except the root itself: a missing datacenter.cfg means the default
CRS, a missing rules.cfg means no rules, and so on. Content problems never raise; they are
collected as findings naming the file (relative to the root) and line. The guest configs
are cross-checked against ``.vmlist``: a config in another node's directory than .vmlist
says, a config .vmlist does not know, and a .vmlist entry without a config are findings.
``GuestConfig.node`` stays the directory the config was found in; ``.vmlist`` is the
placement authority.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from operator import attrgetter
from pathlib import Path
from typing import TypeVar, cast

from collector.pvecfg.datacenter import DatacenterConfig, parse_datacenter_cfg
from collector.pvecfg.guestcache import CacheEntry, CachePass, GuestConfigCache
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
from collector.pvecfg.storage import StorageConfig, parse_storage_cfg
from collector.pvecfg.values import finding
from model.snapshot import Crs, Finding, Rule

T = TypeVar("T")
_GUEST_DIRS: dict[str, GuestType] = {"qemu-server": "qemu", "lxc": "lxc"}
_CONFIG_NAME = re.compile(r"^(\d+)\.conf$")
_READ_SIZE = 1 << 16
_BY_NAME = attrgetter("name")


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

    def has_local_disk(self, guest: GuestConfig) -> bool:
        """Whether a volume of ``guest`` is node-bound: a host path or a non-shared storage.

        A storage missing from storage.cfg counts as local (the safe assumption).
        """
        if guest.host_volumes:
            return True
        return any(
            storage not in self.storages or not self.storages[storage].shared
            for storage in guest.storages
        )


def read_tree(root: Path | str, *, cache: GuestConfigCache | None = None) -> PveTree:
    """Read every known file under ``root``; raises PveTreeNotFoundError if root is missing.

    With a ``cache``, files unchanged since an earlier read with the same cache are not read
    or parsed again; the result is the same as without one.
    """
    root = Path(root)
    if not root.is_dir():
        raise PveTreeNotFoundError(f"/etc/pve root {str(root)!r} does not exist or is not a dir")
    tree = PveTree(root=root)
    cache_pass = cache.begin(os.fspath(root)) if cache is not None else None
    reader = _Reader(root, tree.findings, cache_pass)

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

    tree.guests = _read_guests(
        reader, tree.vmlist if vmlist_usable else None, pool_of_guest(tree.pools)
    )
    if cache_pass is not None:
        cache_pass.finish()
    if tree.storages or (root / "storage.cfg").is_file():
        tree.findings.extend(_unknown_storages(tree))
    return tree


class _Reader:
    """Reads files relative to the root, turning read errors into findings."""

    def __init__(self, root: Path, findings: list[Finding], cache: CachePass | None) -> None:
        self.root = root
        self.root_path = os.fspath(root)
        self.findings = findings
        self.cache = cache

    def text(self, relative: str) -> str | None:
        try:
            raw = _read_bytes(os.path.join(self.root_path, relative))
        except FileNotFoundError:
            return None
        except OSError as error:
            self.findings.append(
                finding("config-unreadable", relative, f"cannot read: {error.strerror}", "error")
            )
            return None
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
            self.findings.append(
                finding("config-unreadable", relative, f"cannot list: {error.strerror}", "error")
            )
            return []

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
            entry = self.cache.entry(stat, value, tuple(self.findings[before:]), depends)
            self.cache.new_files[relative] = cast(CacheEntry[object], entry)
        return value


def _read_bytes(path: str) -> bytes:
    """The whole file, read to EOF (``open().read()`` without the file objects' overhead)."""
    fd = os.open(path, os.O_RDONLY)
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


def _read_guests(
    reader: _Reader, vmlist: dict[int, VmListEntry] | None, pool_of: dict[int, str]
) -> dict[int, GuestConfig]:
    """Parse every guest config; prefer, for a vmid found twice, the copy .vmlist points at."""
    # vmid -> the first config found for it; ``more`` holds all of them for a vmid found twice
    first: dict[int, GuestConfig] = {}
    more: dict[int, list[GuestConfig]] = {}
    findings = reader.findings
    cache = reader.cache
    for node_entry in reader.listdir("nodes"):
        if not node_entry.is_dir():
            continue
        node = node_entry.name
        for dirname, guest_type in _GUEST_DIRS.items():
            directory = f"nodes/{node}/{dirname}"
            for entry in reader.listdir(directory):
                name = entry.name
                stem = name[:-5]
                if name.endswith(".conf") and stem.isdecimal() and entry.is_file():
                    vmid = int(stem)
                else:  # the general rule, which also takes e.g. "100.conf\n"
                    match = _CONFIG_NAME.match(name)
                    if match is None or not entry.is_file():
                        findings.append(
                            finding(
                                "config-syntax",
                                f"{directory}/{name}",
                                "not a <vmid>.conf file, ignored",
                                "info",
                            )
                        )
                        continue
                    vmid = int(match.group(1))
                relative = f"{directory}/{name}"
                pool = pool_of.get(vmid)
                if cache is None:
                    config = _parse_file(reader, relative, vmid, guest_type, node, pool)
                else:
                    config = _parse_file_cached(
                        reader, cache, entry, relative, vmid, guest_type, node, pool
                    )
                if config is None:
                    continue
                if vmid not in first:
                    first[vmid] = config
                elif vmid in more:
                    more[vmid].append(config)
                else:
                    more[vmid] = [first[vmid], config]
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
                "vmlist-missing", ".vmlist", "no usable .vmlist: guest placement not cross-checked"
            )
        )
        return guests
    for vmid in sorted(set(vmlist) - set(guests)):
        vm_entry = vmlist[vmid]
        findings.append(
            finding(
                "vmlist-without-config",
                f"{'vm' if vm_entry.type == 'qemu' else 'ct'}:{vmid}",
                f".vmlist puts {vm_entry.type} {vmid} on {vm_entry.node} but no config was found",
            )
        )
    return guests


def _parse_file(
    reader: _Reader, relative: str, vmid: int, guest_type: GuestType, node: str, pool: str | None
) -> GuestConfig | None:
    text = reader.text(relative)
    if text is None:
        return None
    config, findings = parse_guest_config(text, vmid, guest_type, node, relative, pool=pool)
    reader.findings.extend(findings)
    return config


def _parse_file_cached(
    reader: _Reader,
    cache: CachePass,
    entry: os.DirEntry[str],
    relative: str,
    vmid: int,
    guest_type: GuestType,
    node: str,
    pool: str | None,
) -> GuestConfig | None:
    """``_parse_file`` through the cache. The file is stat-ed before it is read, so a change
    racing with the read leaves an entry that is stale by its key and parsed again later."""
    try:
        stat = entry.stat()
    except OSError:
        return _parse_file(reader, relative, vmid, guest_type, node, pool)
    cached = cache.guests.get(relative)
    if (
        cached is not None
        and cached.trusted
        and cached.mtime_ns == stat.st_mtime_ns
        and cached.size == stat.st_size
    ):
        cache.cache.hits += 1
        config = cached.value
        if config.pool != pool:  # user.cfg changed, the config did not
            config = replace(config, pool=pool)
            cached = replace(cached, value=config)
        cache.new_guests[relative] = cached
        reader.findings.extend(cached.findings)
        return config
    cache.cache.misses += 1
    before = len(reader.findings)
    text = reader.text(relative)
    if text is None:
        return None
    config, findings = parse_guest_config(text, vmid, guest_type, node, relative, pool=pool)
    reader.findings.extend(findings)
    # The entry keeps the decode finding of reader.text too.
    cache.new_guests[relative] = cache.entry(stat, config, tuple(reader.findings[before:]))
    return config


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
