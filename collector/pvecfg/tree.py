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

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from collector.pvecfg.datacenter import DatacenterConfig, parse_datacenter_cfg
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


def read_tree(root: Path | str) -> PveTree:
    """Read every known file under ``root``; raises PveTreeNotFoundError if root is missing."""
    root = Path(root)
    if not root.is_dir():
        raise PveTreeNotFoundError(f"/etc/pve root {str(root)!r} does not exist or is not a dir")
    tree = PveTree(root=root)
    reader = _Reader(root, tree.findings)

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
    guest_types = {vmid: entry.type for vmid, entry in tree.vmlist.items()}
    rules = reader.parse(
        "ha/rules.cfg", lambda text, source: parse_rules_cfg(text, source, guest_types)
    )
    group_rules, group_findings = groups_to_rules(tree.ha_groups, tree.ha_resources)
    tree.findings.extend(group_findings)
    tree.rules = [*(rules or []), *group_rules]
    tree.findings.extend(overlapping_node_affinity(tree.rules))
    tree.manager_status = reader.parse("ha/manager_status", parse_manager_status)

    tree.guests = _read_guests(reader, tree.vmlist if vmlist_usable else None)
    pool_of = pool_of_guest(tree.pools)
    for vmid, pool in pool_of.items():
        if vmid in tree.guests:
            tree.guests[vmid] = replace(tree.guests[vmid], pool=pool)
    if tree.storages or (root / "storage.cfg").is_file():
        tree.findings.extend(_unknown_storages(tree))
    return tree


class _Reader:
    """Reads files relative to the root, turning read errors into findings."""

    def __init__(self, root: Path, findings: list[Finding]) -> None:
        self.root = root
        self.findings = findings

    def text(self, relative: str) -> str | None:
        path = self.root / relative
        try:
            raw = path.read_bytes()
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

    def listdir(self, relative: str) -> list[Path]:
        """The sorted entries of a directory; none if it is missing, a finding if unreadable."""
        path = self.root / relative
        if not path.is_dir():
            return []
        try:
            return sorted(path.iterdir())
        except OSError as error:
            self.findings.append(
                finding("config-unreadable", relative, f"cannot list: {error.strerror}", "error")
            )
            return []

    def parse(
        self, relative: str, parser: Callable[[str, str], tuple[T, list[Finding]]]
    ) -> T | None:
        text = self.text(relative)
        if text is None:
            return None
        value, findings = parser(text, relative)
        self.findings.extend(findings)
        return value


def _read_guests(reader: _Reader, vmlist: dict[int, VmListEntry] | None) -> dict[int, GuestConfig]:
    """Parse every guest config; prefer, for a vmid found twice, the copy .vmlist points at."""
    candidates: dict[int, list[GuestConfig]] = {}
    node_dirs = [p for p in reader.listdir("nodes") if p.is_dir()]
    for node_dir in node_dirs:
        for dirname, guest_type in _GUEST_DIRS.items():
            for path in reader.listdir(f"nodes/{node_dir.name}/{dirname}"):
                relative = path.relative_to(reader.root).as_posix()
                match = _CONFIG_NAME.match(path.name)
                if match is None or not path.is_file():
                    reader.findings.append(
                        finding(
                            "config-syntax", relative, "not a <vmid>.conf file, ignored", "info"
                        )
                    )
                    continue
                text = reader.text(relative)
                if text is None:
                    continue
                vmid = int(match.group(1))
                config, findings = parse_guest_config(
                    text, vmid, guest_type, node_dir.name, relative
                )
                reader.findings.extend(findings)
                candidates.setdefault(vmid, []).append(config)
    guests: dict[int, GuestConfig] = {}
    for vmid, configs in sorted(candidates.items()):
        guests[vmid] = _pick_config(vmid, configs, vmlist, reader.findings)
    if vmlist is None:
        reader.findings.append(
            finding(
                "vmlist-missing", ".vmlist", "no usable .vmlist: guest placement not cross-checked"
            )
        )
        return guests
    for vmid in sorted(set(vmlist) - set(guests)):
        entry = vmlist[vmid]
        reader.findings.append(
            finding(
                "vmlist-without-config",
                f"{'vm' if entry.type == 'qemu' else 'ct'}:{vmid}",
                f".vmlist puts {entry.type} {vmid} on {entry.node} but no config was found",
            )
        )
    return guests


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
    return [
        finding(
            "config-unknown-storage",
            guest.source,
            f"{guest.sid} uses storage '{storage}' missing from storage.cfg (counted as local)",
        )
        for guest in tree.guests.values()
        for storage in sorted(guest.storages)
        if storage not in tree.storages
    ]
