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
    flag_value,
    parse_section_config,
    unknown_section,
)
from collector.pvecfg.slotinit import slot_init
from collector.pvecfg.values import at, decode_text, finding, parse_int
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
_KNOWN_KEYS = frozenset(_KEYS)
# What str.splitlines breaks lines at besides "\n", in ASCII.
_LINE_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")
_MEMO_LIMIT = 4096
_Fields = tuple[str, bool, int, int, bool, str | None, str | None]
_BODIES: dict[str, _Fields | None] = {}


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


_new_resource = slot_init(HaResource)


def parse_resources_cfg(
    text: str, source: str = "ha/resources.cfg"
) -> tuple[dict[str, HaResource], list[Finding]]:
    """Parse resources.cfg into sid -> HaResource; bad sections/values become findings."""
    plain = _plain_resources(text, source)
    if plain is not None:
        return plain, []
    sections, findings = parse_section_config(text, source)
    resources: dict[str, HaResource] = {}
    for section in sections:
        resource = _resource(section, source, findings)
        if resource is not None:
            resources[resource.sid] = resource
    return resources, findings


def _plain_resources(text: str, source: str) -> dict[str, HaResource] | None:
    """``parse_resources_cfg`` of a file that holds only ``vm: <vmid>``/``ct: <vmid>``
    sections, each once, separated by one empty line, none giving a finding; None for any
    other text.

    Thousands of sections share a handful of bodies (their property lines), so each
    distinct body is parsed once, by the section-config parser itself.
    """
    if not text.isascii() or any(char in text for char in _LINE_BREAKS) or "#" in text:
        return None
    resources: dict[str, HaResource] = {}
    line = 1
    blocks = text.split("\n\n")
    if blocks[-1] in ("", "\n"):  # the file's last newline(s)
        blocks.pop()
    for block in blocks:
        header, _, body = block.partition("\n")
        section_type, separator, section_id = header.partition(": ")
        if (
            not separator
            or section_type not in ("vm", "ct")
            or not section_id.isdecimal()
            or int(section_id) < 100
        ):
            return None
        fields = _body_fields(body, source)
        sid = f"{section_type}:{int(section_id)}"
        if fields is None or sid in resources:
            return None
        kind: Literal["vm", "ct"] = "vm" if section_type == "vm" else "ct"
        resources[sid] = _new_resource(sid, kind, int(section_id), *fields, line)
        line += block.count("\n") + 2
    return resources


def _body_fields(body: str, source: str) -> _Fields | None:
    """The fields a section's property lines give (all but sid, type, vmid, line), or None
    if they give a finding; memoised."""
    if body in _BODIES:
        return _BODIES[body]
    sections, findings = parse_section_config(f"vm: 100\n{body}", source)
    resource = _resource(sections[0], source, findings) if len(sections) == 1 else None
    fields = None
    if resource is not None and not findings:
        fields = (
            resource.state,
            resource.failback,
            resource.max_restart,
            resource.max_relocate,
            resource.auto_rebalance,
            resource.group,
            resource.comment,
        )
    if len(_BODIES) < _MEMO_LIMIT:
        _BODIES[body] = fields
    return fields


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
    values = section.values
    if not values.keys() <= _KNOWN_KEYS:
        findings.extend(check_keys(section, source, _KEYS)[1])
    state = values.get("state") or "started"
    state = _STATE_ALIASES.get(state, state)
    if state not in HA_STATES:
        findings.append(bad_value(section, source, "state", " | ".join(HA_STATES)))
        state = "started"
    comment = values.get("comment")
    return _new_resource(
        f"{section.type}:{vmid}",
        "vm" if section.type == "vm" else "ct",
        vmid,
        state,
        flag_value(section, source, "failback", findings, default=True),
        _count(section, source, "max_restart", findings),
        _count(section, source, "max_relocate", findings),
        flag_value(section, source, "auto-rebalance", findings, default=True),
        values.get("group") or None,
        decode_text(comment) if comment else None,
        section.line,
    )


def _count(section: Section, source: str, key: str, findings: list[Finding]) -> int:
    if key not in section.values:
        return 1
    value = parse_int(section.values[key])
    if value is None:
        findings.append(bad_value(section, source, key, "an integer >= 0"))
        return 1
    return value
