"""pmxcfs's generated JSON files ``.vmlist`` (which guest is on which node) and ``.members``.

pmxcfs writes both from its in-memory state, so they are normally well formed; a copied or
truncated file still must not stop a run, so every defect is a finding and the usable rest
is returned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from collector.pvecfg.slotinit import slot_init
from collector.pvecfg.values import finding
from model.snapshot import Finding

GuestType = Literal["qemu", "lxc"]


@dataclass(frozen=True, slots=True)
class VmListEntry:
    vmid: int
    node: str
    type: GuestType
    version: int | None = None


@dataclass(frozen=True, slots=True)
class MemberNode:
    name: str
    id: int | None
    online: bool
    ip: str | None


@dataclass(frozen=True, slots=True)
class Members:
    """``.members``: the local node, the cluster's name and quorum, every member node.

    A standalone node's file has no ``nodelist``; it is then reported as its only member,
    online.
    """

    local_node: str | None
    cluster_name: str | None = None
    quorate: bool | None = None
    version: int | None = None
    nodes: dict[str, MemberNode] = field(default_factory=dict)


_new_entry = slot_init(VmListEntry)


def _load_object(text: str, source: str, findings: list[Finding]) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        findings.append(
            finding(
                "config-syntax",
                f"{source}:{error.lineno}",
                f"invalid JSON: {error.msg}",
                "error",
            )
        )
        return None
    if not isinstance(data, dict):
        findings.append(finding("config-syntax", source, "expected a JSON object", "error"))
        return None
    return data


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_vmlist(
    text: str, source: str = ".vmlist"
) -> tuple[dict[int, VmListEntry], list[Finding]]:
    """Parse ``.vmlist``; entries with a bad vmid, node or type are skipped with a finding."""
    findings: list[Finding] = []
    data = _load_object(text, source, findings)
    if data is None:
        return {}, findings
    ids = data.get("ids", {})
    if not isinstance(ids, dict):
        findings.append(finding("config-syntax", source, "'ids' is not an object", "error"))
        return {}, findings
    entries: dict[int, VmListEntry] = {}
    for key, raw in ids.items():
        # JSON object keys are strings. isdecimal, not isdigit: int() rejects "²".
        if key.isdecimal() and isinstance(raw, dict):
            node, guest_type = raw.get("node"), raw.get("type")
            if isinstance(node, str) and node and guest_type in ("qemu", "lxc"):
                vmid = int(key)
                version = raw.get("version")
                # _int_or_none inlined; JSON yields no int subclass but bool
                entries[vmid] = _new_entry(
                    vmid, node, guest_type, version if type(version) is int else None
                )
                continue
        _bad_vmlist_entry(key, raw, f"{source}:{key}", findings)
    return entries, findings


def _bad_vmlist_entry(key: str, raw: object, where: str, findings: list[Finding]) -> None:
    """The finding for the first defect of a .vmlist entry that ``parse_vmlist`` skips."""
    if not key.isdecimal():
        findings.append(finding("config-bad-value", where, f"bad vmid {key!r}, skipped"))
        return
    if not isinstance(raw, dict):
        findings.append(finding("config-bad-value", where, "entry is not an object, skipped"))
        return
    node, guest_type = raw.get("node"), raw.get("type")
    if not isinstance(node, str) or not node:
        findings.append(finding("config-bad-value", where, f"bad node {node!r}, skipped"))
        return
    findings.append(finding("config-bad-value", where, f"bad type {guest_type!r}, skipped"))


def parse_members(text: str, source: str = ".members") -> tuple[Members, list[Finding]]:
    """Parse ``.members``; bad node entries are skipped with a finding."""
    findings: list[Finding] = []
    data = _load_object(text, source, findings)
    if data is None:
        return Members(local_node=None), findings
    local = data.get("nodename")
    local_node = local if isinstance(local, str) and local else None
    cluster = data.get("cluster")
    cluster_name: str | None = None
    quorate: bool | None = None
    if isinstance(cluster, dict):
        name = cluster.get("name")
        cluster_name = name if isinstance(name, str) else None
        if "quorate" in cluster:
            quorate = bool(cluster["quorate"])
    nodes: dict[str, MemberNode] = {}
    nodelist = data.get("nodelist")
    if isinstance(nodelist, dict):
        for name, raw in nodelist.items():
            if not isinstance(raw, dict):
                findings.append(
                    finding("config-bad-value", f"{source}:{name}", "node entry is not an object")
                )
                continue
            ip = raw.get("ip")
            nodes[name] = MemberNode(
                name=name,
                id=_int_or_none(raw.get("id")),
                online=bool(raw.get("online", 0)),
                ip=ip if isinstance(ip, str) else None,
            )
    elif nodelist is not None:
        findings.append(finding("config-syntax", source, "'nodelist' is not an object", "error"))
    elif local_node is not None:
        nodes[local_node] = MemberNode(name=local_node, id=None, online=True, ip=None)
    members = Members(
        local_node=local_node,
        cluster_name=cluster_name,
        quorate=quorate,
        version=_int_or_none(data.get("version")),
        nodes=nodes,
    )
    return members, findings
