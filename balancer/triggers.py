"""When a round should plan: the imbalance trigger, the node overload trigger, hysteresis.

- Imbalance: the cluster imbalance must stay above the threshold for ``hold_duration``
  consecutive rounds (0 = at once), as the PVE CRS counts it.
- Overload: any usable node whose measured cpu or memory use is above ``overload_percent`` of
  its capacity for ``overload_hold`` consecutive rounds. The imbalance alone misses a cluster
  of four nodes at 90% and one at 0% (imbalance 25%), this trigger does not.
- Hysteresis: once triggered, later rounds keep planning while the imbalance is above the stop
  level (lower than the threshold) instead of waiting for the threshold again.
- Evacuation: a running guest in scope on a node in maintenance (or offline but still reported
  running) triggers the round by itself, at once (no hold), whatever the imbalance. The other
  counters still advance as usual.

Pure functions over plain values; the counters live in :class:`balancer.stability.BalancerState`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from balancer.cluster import F64, Bool
from balancer.options import BalancerOptions


@dataclass(slots=True)
class TriggerDecision:
    triggered: bool
    reason: str
    hold_count: int
    overload_counts: dict[str, int] = field(default_factory=dict)
    overloaded_nodes: list[str] = field(default_factory=list)
    """Nodes that fired the overload trigger this round."""
    evacuating: bool = False
    """Guests must leave a node in maintenance (or offline): triggered regardless of the rest."""


def evacuation_reason(evacuating: Mapping[str, int], offline: Collection[str] = ()) -> str:
    """``node X in maintenance: N guest(s) to evacuate`` for every node, by name."""
    return "; ".join(
        f"node {name} {'offline' if name in offline else 'in maintenance'}: "
        f"{count} guest(s) to evacuate"
        for name, count in sorted(evacuating.items())
        if count > 0
    )


def overloaded_mask(cpu_fraction: F64, mem_fraction: F64, usable: Bool, percent: float) -> Bool:
    """Usable nodes above ``percent`` of cpu or memory."""
    level = percent / 100.0
    return np.asarray(usable & ((cpu_fraction > level) | (mem_fraction > level)), dtype=np.bool_)


def evaluate(
    imbalance: float,
    node_names: list[str],
    overloaded: Bool,
    options: BalancerOptions,
    hold_count: int,
    overload_counts: dict[str, int],
    active: bool,
    *,
    evacuating: Mapping[str, int] | None = None,
    offline: Collection[str] = (),
) -> TriggerDecision:
    """This round's trigger decision and the updated counters.

    ``evacuating``: node -> running guests in scope that must leave it (``offline`` names the
    nodes that are offline rather than in maintenance, for the reason text).
    """
    decision = _evaluate(
        imbalance, node_names, overloaded, options, hold_count, overload_counts, active
    )
    evac = evacuation_reason(evacuating or {}, offline)
    if not evac:
        return decision
    decision.reason = f"{evac}; {decision.reason}" if decision.triggered else evac
    decision.triggered = decision.evacuating = True
    return decision


def _evaluate(
    imbalance: float,
    node_names: list[str],
    overloaded: Bool,
    options: BalancerOptions,
    hold_count: int,
    overload_counts: dict[str, int],
    active: bool,
) -> TriggerDecision:
    above = imbalance * 100.0 > options.threshold
    hold = hold_count + 1 if above else 0
    counts = {
        name: overload_counts.get(name, 0) + 1
        for name, over in zip(node_names, overloaded.tolist(), strict=True)
        if over
    }
    firing = sorted(name for name, count in counts.items() if count >= options.overload_hold)
    pct = imbalance * 100.0
    if above and hold >= options.hold_duration:
        reason = (
            f"imbalance {pct:.2f}% above threshold {options.threshold:g}% "
            f"for {hold} round(s) (hold {options.hold_duration})"
        )
        return TriggerDecision(True, reason, hold, counts, firing)
    if firing:
        reason = (
            f"node(s) {', '.join(firing)} above {options.overload_percent:g}% cpu or memory "
            f"for {options.overload_hold} round(s)"
        )
        return TriggerDecision(True, reason, hold, counts, firing)
    stop = options.stop_level * 100.0
    if active and pct > stop:
        reason = f"imbalance {pct:.2f}% still above the stop level {stop:.2f}% (hysteresis)"
        return TriggerDecision(True, reason, hold, counts, firing)
    if above:
        reason = (
            f"imbalance {pct:.2f}% above threshold {options.threshold:g}%, holding "
            f"({hold}/{options.hold_duration} rounds)"
        )
    elif counts:
        reason = f"node(s) {', '.join(sorted(counts))} overloaded, holding"
    else:
        reason = f"imbalance {pct:.2f}% within threshold {options.threshold:g}%"
    return TriggerDecision(False, reason, hold, counts, firing)
