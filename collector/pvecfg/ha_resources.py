"""``/etc/pve/ha/resources.cfg``: which guests the HA manager manages, and how.

Section config with ``vm: <vmid>`` / ``ct: <vmid>`` headers; the HA id (sid) is
``vm:<vmid>`` or ``ct:<vmid>``. ``state`` defaults to ``started`` (``enabled`` is PVE's old
alias for it); ``auto-rebalance`` defaults to 1 (the resource may be moved by automatic
rebalancing); ``group`` names a PVE 8 HA group of groups.cfg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from collector.pvecfg.sectionconfig import (
    Section,
    bad_value,
    check_keys,
    parse_section_config,
    unknown_section,
)
from collector.pvecfg.values import at, decode_text, finding, parse_bool, parse_int
from model.snapshot import Finding

HA_STATES = ("started", "stopped", "disabled", "ignored")
_STATE_ALIASES = {"enabled": "started"}
_KEYS = (
    "state",
    "group",
    "comment",
    "max_restart",
    "max_relocate",
    "failback",
    "auto-rebalance",
)


@dataclass(frozen=True, slots=True)
class HaResource:
    sid: str
    type: Literal["vm", "ct"]
    vmid: int
    state: str = "started"
    failback: bool = True
    max_restart: int = 1
    max_relocate: int = 1
    auto_rebalance: bool = True
    group: str | None = None
    comment: str | None = None
    line: int = 0


def parse_resources_cfg(
    text: str, source: str = "ha/resources.cfg"
) -> tuple[dict[str, HaResource], list[Finding]]:
    """Parse resources.cfg into sid -> HaResource; bad sections/values become findings."""
    sections, findings = parse_section_config(text, source)
    resources: dict[str, HaResource] = {}
    for section in sections:
        resource = _resource(section, source, findings)
        if resource is not None:
            resources[resource.sid] = resource
    return resources, findings


def _resource(section: Section, source: str, findings: list[Finding]) -> HaResource | None:
    if section.type not in ("vm", "ct"):
        findings.append(unknown_section(section, source))
        return None
    vmid = parse_int(section.id, minimum=100)
    if vmid is None:
        findings.append(
            finding(
                "config-bad-value",
                at(source, section.line),
                f"bad vmid {section.id!r} in section header (expected an integer >= 100), "
                "section skipped",
            )
        )
        return None
    _, key_findings = check_keys(section, source, _KEYS)
    findings.extend(key_findings)
    values = section.values
    state = values.get("state") or "started"
    state = _STATE_ALIASES.get(state, state)
    if state not in HA_STATES:
        findings.append(bad_value(section, source, "state", " | ".join(HA_STATES)))
        state = "started"

    def flag(key: str, default: bool) -> bool:
        if key not in values:
            return default
        value = parse_bool(values[key])
        if value is None:
            findings.append(bad_value(section, source, key, "0 or 1"))
            return default
        return value

    def count(key: str) -> int:
        if key not in values:
            return 1
        value = parse_int(values[key])
        if value is None:
            findings.append(bad_value(section, source, key, "an integer >= 0"))
            return 1
        return value

    comment = values.get("comment")
    return HaResource(
        sid=f"{section.type}:{vmid}",
        type="vm" if section.type == "vm" else "ct",
        vmid=vmid,
        state=state,
        failback=flag("failback", True),
        max_restart=count("max_restart"),
        max_relocate=count("max_relocate"),
        auto_rebalance=flag("auto-rebalance", True),
        group=values.get("group") or None,
        comment=decode_text(comment) if comment else None,
        line=section.line,
    )
