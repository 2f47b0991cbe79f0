"""HA placement rules: ``/etc/pve/ha/rules.cfg`` (PVE 9) and legacy ``ha/groups.cfg`` (PVE 8).

rules.cfg is a section config of ``node-affinity`` and ``resource-affinity`` sections,
turned into ``model.Rule``. A PVE 8 HA group becomes a node-affinity rule the way PVE 9
migrates it: its nodes and priorities, strict = ``restricted``, applied to the resources
whose resources.cfg entry names the group. Such rules get id ``group:<groupid>`` and origin
``groups.cfg`` (docs/snapshot.md); groups no resource uses produce no rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from collector.pvecfg.ha_resources import HaResource
from collector.pvecfg.members import GuestType
from collector.pvecfg.sectionconfig import (
    Section,
    bad_value,
    check_keys,
    flag_value,
    parse_section_config,
    unknown_section,
)
from collector.pvecfg.values import at, decode_text, finding
from model.snapshot import Finding, Rule

_SID = re.compile(r"^(?:(vm|ct):)?(\d+)$")
_NODE_PRIORITY = re.compile(r"^([a-zA-Z0-9][a-zA-Z0-9.\-]*)(?::(\d+))?$")
_COMMON_KEYS = ("resources", "disable", "comment")
_RULE_KEYS = {
    "node-affinity": (*_COMMON_KEYS, "nodes", "strict"),
    "resource-affinity": (*_COMMON_KEYS, "affinity"),
}
_RULE_REQUIRED = {
    "node-affinity": ("resources", "nodes"),
    "resource-affinity": ("resources", "affinity"),
}
_GROUP_KEYS = ("nodes", "restricted", "nofailback", "comment")


@dataclass(frozen=True, slots=True)
class HaGroup:
    id: str
    nodes: dict[str, int]
    restricted: bool = False
    nofailback: bool = False
    comment: str | None = None
    line: int = 0


def parse_rules_cfg(
    text: str,
    source: str = "ha/rules.cfg",
    guest_types: Mapping[int, GuestType] | None = None,
) -> tuple[list[Rule], list[Finding]]:
    """Parse rules.cfg into rules; bad sections are skipped, bad list items dropped.

    ``guest_types`` (vmid -> qemu|lxc, e.g. from .vmlist) resolves bare vmids in
    ``resources`` to ``vm:``/``ct:`` sids; without it a bare vmid is taken as a VM.
    """
    sections, findings = parse_section_config(text, source)
    rules: list[Rule] = []
    for section in sections:
        rule = _rule(section, source, guest_types or {}, findings)
        if rule is not None:
            rules.append(rule)
    return rules, findings


def _rule(
    section: Section,
    source: str,
    guest_types: Mapping[int, GuestType],
    findings: list[Finding],
) -> Rule | None:
    if section.type not in _RULE_KEYS:
        findings.append(unknown_section(section, source))
        return None
    usable, key_findings = check_keys(
        section, source, _RULE_KEYS[section.type], _RULE_REQUIRED[section.type]
    )
    findings.extend(key_findings)
    if not usable:
        return None
    resources = _parse_sids(section, source, guest_types, findings)
    if not resources:
        findings.append(_skipped(section, source, "no valid resource"))
        return None
    disable = flag_value(section, source, "disable", findings)
    if section.type == "resource-affinity":
        affinity = section.values["affinity"]
        if affinity not in ("positive", "negative"):
            findings.append(bad_value(section, source, "affinity", "positive | negative"))
            findings.append(_skipped(section, source, "no valid affinity"))
            return None
        return Rule(
            id=section.id,
            type="resource-affinity",
            resources=resources,
            affinity="positive" if affinity == "positive" else "negative",
            disable=disable,
        )
    nodes = parse_node_priorities(section, source, "nodes", findings)
    if not nodes:
        findings.append(_skipped(section, source, "no valid node"))
        return None
    return Rule(
        id=section.id,
        type="node-affinity",
        resources=resources,
        nodes=nodes,
        strict=flag_value(section, source, "strict", findings),
        disable=disable,
    )


def _skipped(section: Section, source: str, reason: str) -> Finding:
    return finding(
        "config-bad-value",
        at(source, section.line),
        f"section '{section.type}: {section.id}': {reason}, section skipped",
    )


def _parse_sids(
    section: Section,
    source: str,
    guest_types: Mapping[int, GuestType],
    findings: list[Finding],
) -> list[str]:
    sids: list[str] = []
    for item in (part.strip() for part in (section.values["resources"] or "").split(",")):
        if not item:
            continue
        match = _SID.match(item)
        if match is None:
            findings.append(_bad_item(section, source, "resources", item, "vm:<vmid> or ct:<vmid>"))
            continue
        prefix, vmid = match.group(1), int(match.group(2))
        if prefix is None:
            prefix = "ct" if guest_types.get(vmid) == "lxc" else "vm"
        sid = f"{prefix}:{vmid}"
        if sid not in sids:
            sids.append(sid)
    return sids


def _bad_item(section: Section, source: str, key: str, item: str, expected: str) -> Finding:
    return finding(
        "config-bad-value",
        at(source, section.lines.get(key, section.line)),
        f"section '{section.type}: {section.id}': bad item {item!r} in '{key}' "
        f"(expected {expected}), ignored",
    )


def parse_node_priorities(
    section: Section, source: str, key: str, findings: list[Finding]
) -> dict[str, int]:
    """A ``name[:priority],...`` list (priority default 0) as node -> priority."""
    nodes: dict[str, int] = {}
    for item in (part.strip() for part in (section.values.get(key) or "").split(",")):
        if not item:
            continue
        match = _NODE_PRIORITY.match(item)
        if match is None:
            findings.append(_bad_item(section, source, key, item, "<node>[:<priority>]"))
            continue
        nodes.setdefault(match.group(1), int(match.group(2) or 0))
    return nodes


def parse_groups_cfg(
    text: str, source: str = "ha/groups.cfg"
) -> tuple[dict[str, HaGroup], list[Finding]]:
    """Parse PVE 8 groups.cfg into group id -> HaGroup."""
    sections, findings = parse_section_config(text, source)
    groups: dict[str, HaGroup] = {}
    for section in sections:
        if section.type != "group":
            findings.append(unknown_section(section, source))
            continue
        usable, key_findings = check_keys(section, source, _GROUP_KEYS, ("nodes",))
        findings.extend(key_findings)
        if not usable:
            continue
        nodes = parse_node_priorities(section, source, "nodes", findings)
        if not nodes:
            findings.append(_skipped(section, source, "no valid node"))
            continue
        comment = section.values.get("comment")
        groups[section.id] = HaGroup(
            id=section.id,
            nodes=nodes,
            restricted=flag_value(section, source, "restricted", findings),
            nofailback=flag_value(section, source, "nofailback", findings),
            comment=decode_text(comment) if comment else None,
            line=section.line,
        )
    return groups, findings


def groups_to_rules(
    groups: Mapping[str, HaGroup],
    resources: Mapping[str, HaResource],
    resources_source: str = "ha/resources.cfg",
) -> tuple[list[Rule], list[Finding]]:
    """Turn groups into node-affinity rules over the resources naming them.

    A resource naming a group that does not exist is a finding (PVE would not start it
    anywhere restricted; we leave it unconstrained).
    """
    members: dict[str, list[str]] = {}
    findings: list[Finding] = []
    grouped = [resource for resource in resources.values() if resource.group is not None]
    for resource in sorted(grouped, key=lambda r: (r.type, r.vmid)):
        assert resource.group is not None
        if resource.group not in groups:
            findings.append(
                finding(
                    "config-bad-value",
                    at(resources_source, resource.line),
                    f"{resource.sid}: unknown HA group '{resource.group}', ignored",
                )
            )
            continue
        members.setdefault(resource.group, []).append(resource.sid)
    rules = [
        Rule(
            id=f"group:{group.id}",
            type="node-affinity",
            resources=members[group.id],
            nodes=dict(group.nodes),
            strict=group.restricted,
            origin="groups.cfg",
        )
        for group in groups.values()
        if group.id in members
    ]
    return rules, findings


def overlapping_node_affinity(rules: list[Rule]) -> list[Finding]:
    """Resources in more than one enabled node-affinity rule (PVE allows at most one)."""
    owners: dict[str, list[str]] = {}
    for rule in rules:
        if rule.type == "node-affinity" and not rule.disable:
            for sid in rule.resources:
                owners.setdefault(sid, []).append(f"{rule.origin}:{rule.id}")
    return [
        finding(
            "config-rule-conflict",
            sid,
            f"{sid} is in more than one node-affinity rule: {', '.join(names)}",
        )
        for sid, names in owners.items()
        if len(names) > 1
    ]
