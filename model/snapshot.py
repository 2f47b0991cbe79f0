"""The cluster snapshot: the one object the collector builds and the balancer consumes.

A snapshot is plain data (dataclasses), serialisable to and from JSON with the field names
and units documented in ``docs/snapshot.md`` and checked by ``model/snapshot.schema.json``.
It lives in its own package so that the collector (input), the balancer (core) and the
exporters (output) can all speak it without importing each other.

Units: cpu in cores, memory and disk in bytes, time in unix seconds, CRS threshold and
margin in percent (as PVE 9.2 writes them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from model.plain import to_plain

Severity = Literal["error", "warning", "info"]
USAGE_VIEWS = ("last", "ewma", "p95", "max", "forecast")


@dataclass(slots=True)
class Node:
    name: str
    online: bool
    maintenance: bool
    maxcpu: float
    maxmem: float
    cpu: float
    mem: float
    ha_state: str | None = None
    """The HA manager's view of the node (online, maintenance, unknown, fence, gone)."""
    cpu_last: float | None = None
    """Newest measured cores in use (``cpu`` is the snapshot's usage view of the series)."""
    mem_last: float | None = None
    """Newest measured bytes in use."""


@dataclass(slots=True)
class HaConfig:
    state: str
    auto_rebalance: bool = True
    service_state: str | None = None
    """The HA manager's current state of the service (started, migrate, request_start, ...)."""
    target: str | None = None
    group: str | None = None


@dataclass(slots=True)
class Guest:
    vmid: int
    sid: str
    type: Literal["qemu", "lxc"]
    name: str
    node: str
    status: str
    ha: HaConfig | None
    maxcpu: float
    maxmem: float
    cpu: float | None
    mem: float | None
    tags: list[str] = field(default_factory=list)
    template: bool = False
    pool: str | None = None
    maxdisk: float | None = None
    local_disk: bool = False
    """True when the guest has a disk on node-local storage (migration copies it)."""


@dataclass(slots=True)
class Rule:
    id: str
    type: Literal["node-affinity", "resource-affinity"]
    resources: list[str]
    nodes: dict[str, int] | None = None
    strict: bool = False
    affinity: Literal["positive", "negative"] | None = None
    disable: bool = False
    origin: str = "rules.cfg"


@dataclass(slots=True)
class Crs:
    """The ``crs`` property of datacenter.cfg, threshold and margin always in percent."""

    ha: Literal["basic", "static", "dynamic"] = "basic"
    rebalance_on_start: bool = False
    auto_rebalance: bool = False
    threshold: float = 30.0
    method: Literal["bruteforce", "topsis"] = "bruteforce"
    hold_duration: int = 3
    margin: float = 10.0

    PVE_NAMES: ClassVar[dict[str, str]] = {
        "ha": "ha",
        "rebalance_on_start": "ha-rebalance-on-start",
        "auto_rebalance": "ha-auto-rebalance",
        "threshold": "ha-auto-rebalance-threshold",
        "method": "ha-auto-rebalance-method",
        "hold_duration": "ha-auto-rebalance-hold-duration",
        "margin": "ha-auto-rebalance-margin",
    }

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr, pve in self.PVE_NAMES.items():
            value = getattr(self, attr)
            out[pve] = int(value) if isinstance(value, bool) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Crs:
        kwargs: dict[str, Any] = {}
        for attr, pve in cls.PVE_NAMES.items():
            if pve in data:
                kwargs[attr] = data[pve]
        for flag in ("rebalance_on_start", "auto_rebalance"):
            if flag in kwargs:
                kwargs[flag] = bool(kwargs[flag])
        return cls(**kwargs)


@dataclass(slots=True)
class Finding:
    """A data-quality finding: what is wrong, where (file[:line] or guest sid), how bad."""

    kind: str
    where: str
    message: str
    severity: Severity = "warning"


@dataclass(slots=True)
class Storage:
    node: str
    storage: str
    total: float | None
    used: float | None


@dataclass(slots=True)
class Snapshot:
    timestamp: int
    nodes: list[Node]
    guests: list[Guest]
    rules: list[Rule] = field(default_factory=list)
    crs: Crs = field(default_factory=Crs)
    issues: list[Finding] = field(default_factory=list)
    usage_view: str = "last"
    cluster: str | None = None
    storages: list[Storage] = field(default_factory=list)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def guest(self, sid: str) -> Guest | None:
        return next((g for g in self.guests if g.sid == sid), None)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_plain(self)
        data["crs"] = self.crs.to_json()
        return data

    def dumps(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_json(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        guests = []
        for g in data.get("guests", []):
            g = dict(g)
            if g.get("ha") is not None:
                g["ha"] = HaConfig(**g["ha"])
            guests.append(Guest(**g))
        return cls(
            timestamp=int(data["timestamp"]),
            nodes=[Node(**n) for n in data.get("nodes", [])],
            guests=guests,
            rules=[Rule(**r) for r in data.get("rules", [])],
            crs=Crs.from_json(data.get("crs", {})),
            issues=[Finding(**f) for f in data.get("issues", [])],
            usage_view=data.get("usage_view", "last"),
            cluster=data.get("cluster"),
            storages=[Storage(**s) for s in data.get("storages", [])],
        )

    @classmethod
    def loads(cls, text: str) -> Snapshot:
        return cls.from_json(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> Snapshot:
        return cls.loads(Path(path).read_text())


SCHEMA_PATH = Path(__file__).with_name("snapshot.schema.json")
