"""What a balancing round decided: the contract between the balancer and the exporters.

The balancer fills a :class:`RoundResult`; exporters publish it (metrics, status page,
JSON API) and the actuator carries out its moves. Plain data, JSON-serialisable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from model.plain import to_plain
from model.snapshot import Finding


@dataclass(slots=True)
class Move:
    rank: int
    """1-based order of execution (or of preference, for the manual top-N list)."""
    sid: str
    source: str
    target: str
    imbalance_after: float
    """Cluster imbalance (0..1) expected once this move and every earlier one is done."""
    cost_seconds: float = 0.0
    """Estimated migration duration."""
    members: list[str] = field(default_factory=list)
    """All sids moved together (a positive-affinity bundle); [sid] for a single guest."""
    gib_moved: float = 0.0
    reason: str = ""


@dataclass(slots=True)
class NodeLoad:
    name: str
    cpu: float
    """Cores in use, as the mode counts them."""
    mem: float
    """Bytes in use, as the mode counts them."""
    maxcpu: float
    maxmem: float
    load: float
    """(cpu/maxcpu + mem/maxmem) / 2, the CRS node load."""
    usable: bool = True
    """Online and not in maintenance: may receive guests."""


@dataclass(slots=True)
class RoundResult:
    imbalance: float
    """CV / sqrt(n-1) of the node loads, 0..1 (PVE 9.2)."""
    imbalance_cv: float
    """Raw coefficient of variation of the node loads."""
    triggered: bool
    reason: str
    threshold: float
    """Imbalance threshold in force, percent."""
    margin: float
    """Minimum relative improvement in force, percent."""
    mode: str = "dynamic"
    method: str = "bruteforce"
    hold_count: int = 0
    """Consecutive rounds with the imbalance above the threshold."""
    moves: list[Move] = field(default_factory=list)
    top_moves: list[Move] = field(default_factory=list)
    """The best single moves for manual action, best first."""
    imbalance_after: float | None = None
    """Expected imbalance once the whole plan is carried out."""
    node_loads: list[NodeLoad] = field(default_factory=list)
    cpu_spread: float = 0.0
    mem_spread: float = 0.0
    optimality_gap: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    """Milliseconds per phase (candidates, scoring, selection, ...)."""
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    """Problems met while deciding (invalid rules left out, guests too big to place, ...)."""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = to_plain(self)
        return document

    def dumps(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_json(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundResult:
        data = dict(data)
        data["moves"] = [Move(**m) for m in data.get("moves", [])]
        data["top_moves"] = [Move(**m) for m in data.get("top_moves", [])]
        data["node_loads"] = [NodeLoad(**n) for n in data.get("node_loads", [])]
        data["findings"] = [Finding(**f) for f in data.get("findings", [])]
        return cls(**data)
