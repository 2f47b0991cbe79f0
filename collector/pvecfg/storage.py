"""``/etc/pve/storage.cfg``: which storages exist, on which nodes, and which are shared.

A guest whose disks are all on shared storage migrates without copying them; a disk on
node-local storage must be copied (or blocks live migration). Network and cluster storage
types are shared by nature; local types (dir, lvm, lvmthin, zfspool, btrfs, ...) only when
the admin marks them ``shared 1`` (e.g. a directory on a cluster file system, LVM on a SAN).
Storage plugins define many more keys; only the ones placement needs are interpreted, so no
key is reported as unknown here.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.pvecfg.sectionconfig import bad_value, parse_section_config
from collector.pvecfg.values import at, finding, parse_bool
from model.snapshot import Finding

SHARED_TYPES = frozenset(
    {"rbd", "cephfs", "nfs", "cifs", "glusterfs", "iscsi", "iscsidirect", "pbs", "zfs"}
)
LOCAL_TYPES = frozenset({"dir", "lvm", "lvmthin", "zfspool", "btrfs", "esxi"})


@dataclass(frozen=True, slots=True)
class StorageConfig:
    id: str
    type: str
    shared: bool
    nodes: frozenset[str] | None = None
    """The nodes the storage is restricted to; None means every node."""
    content: frozenset[str] = frozenset()
    disable: bool = False
    path: str | None = None
    line: int = 0

    def available_on(self, node: str) -> bool:
        """Whether the storage is enabled and usable on ``node``."""
        return not self.disable and (self.nodes is None or node in self.nodes)


def parse_storage_cfg(
    text: str, source: str = "storage.cfg"
) -> tuple[dict[str, StorageConfig], list[Finding]]:
    """Parse storage.cfg into storage id -> StorageConfig.

    An unknown (third-party plugin) type is kept, shared only if ``shared 1``, with an info
    finding; a bad ``shared``/``disable`` value counts as false with a finding.
    """
    sections, findings = parse_section_config(text, source)
    storages: dict[str, StorageConfig] = {}
    for section in sections:
        if section.id in storages:
            findings.append(
                finding(
                    "config-syntax",
                    at(source, section.line),
                    f"storage '{section.id}' defined twice, second definition skipped",
                )
            )
            continue
        if section.type not in SHARED_TYPES | LOCAL_TYPES:
            findings.append(
                finding(
                    "config-unknown-section",
                    at(source, section.line),
                    f"unknown storage type '{section.type}' for '{section.id}': "
                    "node-local unless 'shared 1'",
                    "info",
                )
            )
        flags: dict[str, bool] = {}
        for key in ("shared", "disable"):
            value = parse_bool(section.values[key]) if key in section.values else False
            if value is None:
                findings.append(bad_value(section, source, key, "0 or 1"))
                value = False
            flags[key] = value
        nodes_text = section.values.get("nodes")
        storages[section.id] = StorageConfig(
            id=section.id,
            type=section.type,
            shared=section.type in SHARED_TYPES or flags["shared"],
            nodes=_split_list(nodes_text) if nodes_text else None,
            content=_split_list(section.values.get("content") or ""),
            disable=flags["disable"],
            path=section.values.get("path"),
            line=section.line,
        )
    return storages, findings


def _split_list(text: str) -> frozenset[str]:
    return frozenset(item.strip() for item in text.split(",") if item.strip())
