"""Safety checks the actuator makes against a fresh snapshot just before starting a move.

A plan is computed from one snapshot and carried out later, move after move; the cluster may
have changed in between. Each check returns ``None`` when the move may start, or the reason
it must not (and the rest of the plan with it, since later moves assumed the earlier ones).
Pure functions of the snapshots, the move and the policy flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporters.actuator_calls import is_ha_managed
from model.plan import Move
from model.snapshot import Guest, Node, Rule, Snapshot

UNUSABLE_HA_NODE_STATES = frozenset({"maintenance", "unknown", "fence", "gone"})
MOVING_SERVICE_STATES = frozenset({"migrate", "relocate"})


@dataclass(frozen=True, slots=True)
class Policy:
    """What kinds of move the operator allows."""

    allow_containers: bool = False
    """Containers restart when moved (HA relocate or ``restart=1``): off unless allowed."""
    allow_ha_when_crs_auto_rebalance: bool = False
    """Act on HA resources even though the built-in CRS rebalances them itself."""


def node_problem(node: Node | None, name: str, role: str) -> str | None:
    """Why ``node`` may not take part in a move (offline, maintenance, ...), or None."""
    if node is None:
        return f"{role} node {name} is no longer in the cluster"
    if not node.online:
        return f"{role} node {name} is offline"
    if node.maintenance or node.ha_state == "maintenance":
        return f"{role} node {name} is in maintenance"
    if node.ha_state in UNUSABLE_HA_NODE_STATES:
        return f"{role} node {name} is in HA state {node.ha_state}"
    return None


def _rule_key(rule: Rule) -> tuple[object, ...]:
    nodes = tuple(sorted((rule.nodes or {}).items()))
    return (rule.id, rule.type, tuple(sorted(rule.resources)), nodes, rule.strict,
            rule.affinity, rule.disable)  # fmt: skip


def rules_changed(planned: Snapshot, fresh: Snapshot) -> bool:
    """Whether the HA rules differ (order of rules and of their lists does not count)."""
    return sorted(map(_rule_key, planned.rules), key=repr) != sorted(
        map(_rule_key, fresh.rules), key=repr
    )


def guest_problem(guest: Guest | None, sid: str, move: Move) -> str | None:
    """Why ``guest`` (fresh) no longer fits the move: gone, moved, moving or stopped."""
    if guest is None:
        return f"guest {sid} is no longer in the cluster"
    if guest.node == move.target:
        return f"guest {sid} moved already: it is on {move.target}"
    if guest.node != move.source:
        return f"guest {sid} moved already: it is on {guest.node}, not {move.source}"
    if guest.ha is not None and guest.ha.service_state in MOVING_SERVICE_STATES:
        return f"guest {sid} is already moving (HA state {guest.ha.service_state})"
    if guest.status != "running":
        return f"guest {sid} is not running (status {guest.status})"
    return None


def policy_problem(guest: Guest, fresh: Snapshot, planned: Snapshot, policy: Policy) -> str | None:
    """Why the operator's policy forbids moving ``guest``, or None."""
    if guest.type == "lxc" and not policy.allow_containers:
        return f"{guest.sid} is a container and moving containers is not allowed"
    crs_rebalances = fresh.crs.auto_rebalance or planned.crs.auto_rebalance
    if is_ha_managed(guest) and crs_rebalances and not policy.allow_ha_when_crs_auto_rebalance:
        return (
            f"{guest.sid} is an HA resource and the built-in CRS rebalances "
            "(ha-auto-rebalance=1): left to it"
        )
    return None


def move_problem(planned: Snapshot, fresh: Snapshot, move: Move, policy: Policy) -> str | None:
    """The first reason ``move`` must not start now, or None when it may."""
    problem = node_problem(fresh.node(move.target), move.target, "target") or node_problem(
        fresh.node(move.source), move.source, "source"
    )
    if problem:
        return problem
    if rules_changed(planned, fresh):
        return "the HA rules changed since the plan was made"
    for sid in move.members or [move.sid]:
        guest = fresh.guest(sid)
        problem = guest_problem(guest, sid, move)
        if problem is None and guest is not None:
            problem = policy_problem(guest, fresh, planned, policy)
        if problem:
            return problem
    return None


def ha_moves_blocked(snapshot: Snapshot, policy: Policy) -> bool:
    """True when HA resources are only recommended (CRS auto-rebalance on, not overridden)."""
    return snapshot.crs.auto_rebalance and not policy.allow_ha_when_crs_auto_rebalance
