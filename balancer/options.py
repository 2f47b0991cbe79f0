"""Every knob of the beyond-CRS balancer in one JSON-friendly dataclass.

Defaults are chosen so that a bare ``BalancerOptions()`` is safe on a production cluster;
``BalancerOptions.from_crs`` copies what datacenter.cfg says (threshold, margin, hold
duration, method, mode) so a service started without a config behaves like the CRS would,
plus the safety limits the CRS lacks.

Percent vs fraction: thresholds that PVE expresses in percent (threshold, margin, stop level,
overload level) stay in percent here; capacity limits (memory headroom, cpu cap) are
fractions of a node's capacity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from model import Crs

Scope = Literal["crs", "all"]
Method = Literal["greedy", "optimal", "bruteforce", "topsis", "consolidate"]
METHODS = ("greedy", "optimal", "bruteforce", "topsis", "consolidate")
UsageMode = Literal["static", "dynamic"]

DEFAULT_STOP_FRACTION = 0.6
"""Without an explicit stop level the plan aims at 60% of the trigger threshold (hysteresis)."""


@dataclass(slots=True)
class BalancerOptions:
    # --- what counts as imbalance, and when to act -------------------------------------
    mode: UsageMode = "dynamic"
    method: Method = "greedy"
    threshold: float = 30.0
    """Imbalance (percent of the 0..1 scale) above which a round may trigger."""
    stop_threshold: float | None = None
    """The plan stops once the imbalance is at or below this (percent); None = 60% of threshold."""
    margin: float = 10.0
    """A plan must lower the imbalance by at least this relative amount (percent)."""
    hold_duration: int = 3
    """Rounds the imbalance must stay above the threshold before a plan is made."""
    overload_percent: float = 85.0
    """A node whose cpu or memory use is above this percent of capacity is overloaded."""
    overload_hold: int = 3
    """Rounds a node must stay overloaded before the overload trigger fires."""
    crs_compatible: bool = False
    """Ignore everything below and decide exactly as the PVE HA manager does."""

    # --- what may move -----------------------------------------------------------------
    scope: Scope = "crs"
    """crs: started HA resources with auto-rebalance; all: every running guest."""
    include_containers: bool = True
    """Containers restart when moved; set False to leave them where they are."""
    exclude_tags: list[str] = field(default_factory=list)
    exclude_ids: list[str] = field(default_factory=list)
    """vmids ("100") or HA sids ("vm:100")."""
    exclude_pools: list[str] = field(default_factory=list)
    honour_preferred_nodes: bool = False
    """True: targets limited to non-strict node-affinity preferred nodes, as the CRS does."""

    # --- safety --------------------------------------------------------------------------
    mem_headroom: float = 0.90
    """No move may take a node's memory above this fraction of its maxmem."""
    cpu_cap: float = 0.90
    """Dynamic mode: no move may take a node's measured cpu above this fraction of its cores."""
    static_cpu_cap: float = 4.0
    """Static mode: vCPU overcommit ratio allowed on a target (configured vCPUs / cores)."""

    # --- plan shape ------------------------------------------------------------------------
    max_moves: int = 10
    """K: the most moves one plan may contain."""
    concurrency: int = 2
    """Moves carried out at once; the plan is ordered in waves of this size."""
    lookahead_width: int = 3
    """Greedy look-ahead: how many best first moves get their best follow-up evaluated."""
    lookahead_max_candidates: int = 50_000
    """Look-ahead is skipped when a step has more candidate moves than this."""
    top_n: int = 5
    """How many single moves to list for manual action."""

    # --- migration cost ------------------------------------------------------------------
    bandwidth_gib_s: float = 1.0
    """Effective migration bandwidth between any two nodes (GiB/s; ~10 GbE)."""
    pair_bandwidth_gib_s: dict[str, float] = field(default_factory=dict)
    """Per node pair overrides, key "nodeA:nodeB" (both directions)."""
    migration_overhead_s: float = 5.0
    """Fixed cost per move (setup, switchover, container restart)."""
    min_gain_per_gib: float = 0.01
    """A move must lower the imbalance by at least this many percentage points per GiB moved."""

    # --- stability -------------------------------------------------------------------------
    cooldown_seconds: float = 3600.0
    """A guest that was moved is not moved again within this time (no ping-pong)."""
    in_flight_timeout_s: float = 1800.0
    """An in-flight move not seen to land after this long is forgotten."""

    # --- optimal method ------------------------------------------------------------------
    optimal_time_limit_s: float = 10.0
    optimal_max_guests: int = 500
    """Above this many movable units the optimal method falls back to greedy."""

    # --- consolidation ---------------------------------------------------------------------
    consolidate_below_percent: float = 30.0
    """Consolidation is considered only when the mean node load is below this (percent)."""
    consolidate_max_nodes: int = 1
    """The most nodes one round proposes to empty."""

    @property
    def stop_level(self) -> float:
        """The imbalance (0..1) the plan aims for."""
        stop = self.stop_threshold
        if stop is None:
            stop = self.threshold * DEFAULT_STOP_FRACTION
        return min(stop, self.threshold) / 100.0

    def validate(self) -> list[str]:
        """Human-readable problems with these options; empty when they are usable."""
        problems: list[str] = []
        if not 0.0 < self.mem_headroom <= 1.0:
            problems.append(f"mem_headroom {self.mem_headroom} must be in (0, 1]")
        if self.cpu_cap <= 0.0 or self.static_cpu_cap <= 0.0:
            problems.append("cpu caps must be positive")
        if self.max_moves < 0 or self.concurrency < 1:
            problems.append("max_moves must be >= 0 and concurrency >= 1")
        if self.bandwidth_gib_s <= 0.0 or any(v <= 0.0 for v in self.pair_bandwidth_gib_s.values()):
            problems.append("bandwidths must be positive")
        if not 0.0 <= self.threshold <= 100.0:
            problems.append(f"threshold {self.threshold} must be a percent (0..100)")
        choices = {"method": METHODS, "mode": ("static", "dynamic"), "scope": ("crs", "all")}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                problems.append(f"{name} {value!r} must be one of {', '.join(allowed)}")
        return problems

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BalancerOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown balancer options: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_crs(cls, crs: Crs, **overrides: Any) -> BalancerOptions:
        """Options that follow datacenter.cfg's CRS settings (basic mode counts as static)."""
        base = cls(
            mode="dynamic" if crs.ha == "dynamic" else "static",
            method=crs.method,
            threshold=crs.threshold,
            margin=crs.margin,
            hold_duration=crs.hold_duration,
        )
        return replace(base, **overrides)
