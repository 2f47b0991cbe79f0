"""``/etc/pve/datacenter.cfg``: cluster-wide options, above all the ``crs`` property string.

Every ``key: value`` line is kept as written (``DatacenterConfig.values``) so callers can read
options we do not interpret (``migration``, ``ha``, ...). The ``crs`` value is turned into a
``model.Crs`` with the PVE 9.2 defaults for anything absent, unknown or invalid.

Threshold and margin rule: PVE 9.2 writes percent (``30``); 9.1.2 to 9.1.4 wrote a fraction
(``0.3``). A value written with a decimal point and at most 1.0 is read as a fraction and
multiplied by 100 (``0.3`` -> 30, ``1.0`` -> 100); every other value is percent, so the integer
``1`` is 1 percent and ``2.5`` is 2.5 percent. Results outside 0..100 are rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from collector.pvecfg.values import (
    at,
    decode_text,
    finding,
    parse_bool,
    parse_int,
    parse_number,
)
from model.snapshot import Crs, Finding

_LINE = re.compile(r"^([a-z][a-z0-9_\-]*):\s*(.*?)\s*$")
_HA_MODES = ("basic", "static", "dynamic")
_METHODS = ("bruteforce", "topsis")


@dataclass(frozen=True, slots=True)
class DatacenterConfig:
    crs: Crs = field(default_factory=Crs)
    values: dict[str, str] = field(default_factory=dict)
    """Every option line, raw."""
    description: str = ""


def parse_datacenter_cfg(
    text: str, source: str = "datacenter.cfg"
) -> tuple[DatacenterConfig, list[Finding]]:
    """Parse datacenter.cfg; malformed lines and bad ``crs`` items become findings."""
    findings: list[Finding] = []
    values: dict[str, str] = {}
    crs_line = 0
    description: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            description.append(decode_text(line[1:]))
            continue
        match = _LINE.match(line)
        if match is None:
            findings.append(
                finding("config-syntax", at(source, number), f"ignored line {line.strip()!r}")
            )
            continue
        key, value = match.groups()
        if key in values:
            findings.append(
                finding(
                    "config-syntax",
                    at(source, number),
                    f"duplicate key '{key}' ignored (first value kept)",
                )
            )
            continue
        values[key] = value
        if key == "crs":
            crs_line = number
    crs = Crs()
    if "crs" in values:
        crs, crs_findings = parse_crs(values["crs"], at(source, crs_line))
        findings.extend(crs_findings)
    return DatacenterConfig(crs=crs, values=values, description="\n".join(description)), findings


def parse_crs(text: str, where: str = "datacenter.cfg") -> tuple[Crs, list[Finding]]:
    """Parse a ``crs`` property string; unknown keys and bad values keep their default."""
    findings: list[Finding] = []
    settings: dict[str, Any] = {}
    seen: set[str] = set()
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            findings.append(
                finding("config-syntax", where, f"crs: item {item!r} is not 'key=value', ignored")
            )
            continue
        if key in seen:
            findings.append(finding("config-syntax", where, f"crs: duplicate key '{key}' ignored"))
            continue
        seen.add(key)
        parser = _CRS_KEYS.get(key)
        if parser is None:
            findings.append(
                finding("config-unknown-key", where, f"crs: unknown key '{key}' ignored")
            )
            continue
        attr, convert, expected = parser
        parsed = convert(value)
        if parsed is None:
            default = getattr(Crs(), attr)
            findings.append(
                finding(
                    "config-bad-value",
                    where,
                    f"crs: bad value {value!r} for '{key}' (expected {expected}), "
                    f"using default {default!r}",
                )
            )
            continue
        settings[attr] = parsed
    return Crs(**settings), findings


def parse_percent(text: str) -> float | None:
    """A threshold/margin in percent, accepting the 9.1.2-9.1.4 fraction form (see module)."""
    value = parse_number(text)
    if value is None:
        return None
    if "." in text and value <= 1.0:
        value *= 100.0
    return value if 0.0 <= value <= 100.0 else None


def _choice(options: tuple[str, ...]) -> Any:
    def convert(text: str) -> str | None:
        return text if text in options else None

    return convert


_CRS_KEYS: dict[str, tuple[str, Any, str]] = {
    "ha": ("ha", _choice(_HA_MODES), " | ".join(_HA_MODES)),
    "ha-rebalance-on-start": ("rebalance_on_start", parse_bool, "0 or 1"),
    "ha-auto-rebalance": ("auto_rebalance", parse_bool, "0 or 1"),
    "ha-auto-rebalance-threshold": ("threshold", parse_percent, "percent 0-100"),
    "ha-auto-rebalance-method": ("method", _choice(_METHODS), " | ".join(_METHODS)),
    "ha-auto-rebalance-hold-duration": ("hold_duration", parse_int, "an integer >= 0"),
    "ha-auto-rebalance-margin": ("margin", parse_percent, "percent 0-100"),
}
