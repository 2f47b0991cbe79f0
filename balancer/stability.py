"""What the balancer remembers between rounds, and the rules that keep it calm.

``BalancerState`` holds the trigger counters, per-guest cooldowns (sid -> unix time until
which the guest may not move again: nothing ping-pongs), the moves in flight, and whether a
trigger is still active (hysteresis). It is plain JSON so the service can persist it.
Every function here takes ``now`` explicitly; nothing reads a clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from model import Snapshot
from model.plan import Move

MOVING_SERVICE_STATES = frozenset({"migrate", "relocate"})


@dataclass(slots=True)
class InFlight:
    source: str
    target: str
    since: float


@dataclass(slots=True)
class BalancerState:
    hold_count: int = 0
    overload_counts: dict[str, int] = field(default_factory=dict)
    cooldowns: dict[str, float] = field(default_factory=dict)
    in_flight: dict[str, InFlight] = field(default_factory=dict)
    active: bool = False
    """A trigger fired and the stop level has not been reached yet."""
    crs_hold_count: int = 0
    crs_in_flight: dict[str, str] = field(default_factory=dict)
    """The CRS-compatible path's own counters (see balancer.crs.CrsState): sid -> target."""
    crs_in_flight_rounds: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BalancerState:
        data = dict(data)
        data["in_flight"] = {
            sid: InFlight(**item) for sid, item in data.get("in_flight", {}).items()
        }
        return cls(**data)


def cooling(state: BalancerState, now: float) -> set[str]:
    """Sids that may not move this round (cooling down or in flight)."""
    return {sid for sid, until in state.cooldowns.items() if until > now} | set(state.in_flight)


def settle(
    state: BalancerState, snapshot: Snapshot, now: float, timeout_s: float
) -> tuple[dict[str, InFlight], dict[str, float], list[str]]:
    """In-flight moves still pending, live cooldowns, and notes on moves that timed out.

    A move has landed when the guest runs on its target, or has vanished; it is forgotten
    (with a note) after ``timeout_s``. HA services the snapshot shows migrating count as in
    flight too.
    """
    guests = {g.sid: g for g in snapshot.guests}
    pending: dict[str, InFlight] = {}
    notes: list[str] = []
    for sid, item in state.in_flight.items():
        guest = guests.get(sid)
        if guest is None or guest.node == item.target:
            continue
        if now - item.since > timeout_s:
            notes.append(f"{sid}: move {item.source}->{item.target} not seen to land; dropped")
            continue
        pending[sid] = item
    for guest in snapshot.guests:
        if guest.ha is not None and guest.ha.service_state in MOVING_SERVICE_STATES:
            target = guest.ha.target or ""
            pending.setdefault(guest.sid, InFlight(guest.node, target, now))
    cooldowns = {sid: until for sid, until in state.cooldowns.items() if until > now}
    return pending, cooldowns, notes


def record(
    moves: list[Move], now: float, cooldown_s: float, in_flight: dict[str, InFlight]
) -> tuple[dict[str, InFlight], dict[str, float]]:
    """In-flight entries and cooldowns (sid -> until) for the moves just decided."""
    flights = dict(in_flight)
    cooldowns: dict[str, float] = {}
    for move in moves:
        for sid in move.members or [move.sid]:
            flights[sid] = InFlight(move.source, move.target, now)
            cooldowns[sid] = now + cooldown_s
    return flights, cooldowns
