"""The closed loop behind ``pve-rebalancer simulate``: rounds on a simulated cluster, audited.

Each round advances the simulator by one step, collects it from its files, decides through
the service's own :class:`~cli.service.RoundRunner` and, when actuating, carries the moves out
in the simulator (``carry_out=True``). Scenario events (guests stopping and starting, a node
in maintenance from 40% to 70% of the run) are drawn from the seed, so a run is reproducible.

An :class:`Auditor` checks every round's collected snapshot independently of the balancer:
strict node-affinity and resource-affinity rules, memory headroom broken by a move, ping-pong
moves, guests seen to change node, and whether the maintenance node was evacuated. Nothing
here sleeps or schedules: the loop runs as fast as the collector and the balancer allow.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from balancer.options import BalancerOptions
from balancer.stability import MOVING_SERVICE_STATES, BalancerState
from cli.demo_service import simulated_collector
from cli.service import RoundRunner
from collector.pvecfg.guestcache import GuestConfigCache
from exporters.state import RoundPublisher
from model import Snapshot
from model.plan import RoundResult
from simulator.cluster import SimulatedCluster

MAINTENANCE_ENTER = 0.4
MAINTENANCE_LEAVE = 0.7
GIB = float(2**30)


@dataclass(frozen=True, slots=True)
class ScenarioEvent:
    round: int
    action: str
    """stop, start, maintenance-on or maintenance-off."""
    subject: str
    """A vmid (as text) or a node name."""


def plan_scenario(cluster: SimulatedCluster, rounds: int, seed: int) -> list[ScenarioEvent]:
    """Seeded events over ``rounds`` rounds: one guest in twenty stops (in the first 60%)
    and starts again a while later, and one node is in maintenance from 40% to 70%."""
    rng = random.Random(f"pve-rebalancer-simulate:{seed}")
    events: list[ScenarioEvent] = []
    if rounds < 3:
        return events
    node = rng.choice(cluster.node_names)
    events.append(ScenarioEvent(int(rounds * MAINTENANCE_ENTER), "maintenance-on", node))
    events.append(ScenarioEvent(int(rounds * MAINTENANCE_LEAVE), "maintenance-off", node))
    candidates = [g.vmid for g in cluster.spec.guests if g.running and not g.template]
    for vmid in rng.sample(candidates, min(len(candidates), max(1, len(candidates) // 20))):
        stop = rng.randrange(1, max(2, int(rounds * 0.6)))
        start = stop + 1 + rng.randrange(max(1, int(rounds * 0.3)))
        events.append(ScenarioEvent(stop, "stop", str(vmid)))
        if start < rounds:
            events.append(ScenarioEvent(start, "start", str(vmid)))
    return sorted(events, key=lambda e: (e.round, e.action, e.subject))


@dataclass(slots=True)
class RoundRecord:
    time: int
    imbalance: float
    triggered: bool
    moves: list[str]
    """Planned moves as ``sid source->target``."""
    node_loads: dict[str, float]
    ok: bool = True
    reason: str = ""


@dataclass(slots=True)
class MoveRecord:
    time: int
    sid: str
    source: str
    target: str
    gib: float


@dataclass(slots=True)
class AuditFinding:
    time: int
    kind: str
    subject: str
    detail: str


@dataclass(slots=True)
class Auditor:
    """Independent checks over the collected snapshots and the moves carried out."""

    cooldown_s: float
    mem_headroom: float
    rounds: list[RoundRecord] = field(default_factory=list)
    moves: list[MoveRecord] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    violations: list[AuditFinding] = field(default_factory=list)
    headroom_violations: list[AuditFinding] = field(default_factory=list)
    ping_pong: list[AuditFinding] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    observed_relocations: int = 0
    """Guests seen on another node than in the previous snapshot (whatever moved them)."""
    maintenance_node: str | None = None
    maintenance_entered: int | None = None
    maintenance_left: int | None = None
    evacuated_at: int | None = None
    still_running_on_maintenance: int | None = None
    """Running guests on the maintenance node in the last round it was in maintenance."""
    _last_node: dict[str, str] = field(default_factory=dict)
    _moved_in: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """sid -> (node the loop moved it to, seen there yet), until it leaves that node."""

    def record_event(self, time: int, event: ScenarioEvent, outcome: str) -> None:
        self.events.append(
            {"time": time, "action": event.action, "subject": event.subject, "outcome": outcome}
        )
        if event.action == "maintenance-on" and outcome == "done":
            self.maintenance_node, self.maintenance_entered = event.subject, time
        elif event.action == "maintenance-off" and outcome == "done":
            self.maintenance_left = time

    def record_move(self, time: int, sid: str, source: str, target: str, gib: float) -> None:
        for previous in reversed(self.moves):
            if previous.sid != sid:
                continue
            if time - previous.time < self.cooldown_s:
                self.ping_pong.append(
                    AuditFinding(time, "within-cooldown", sid, _pp(previous, time, source, target))
                )
            elif target == previous.source:
                self.ping_pong.append(
                    AuditFinding(time, "moved-back", sid, _pp(previous, time, source, target))
                )
            break
        self.moves.append(MoveRecord(time, sid, source, target, gib))
        self._moved_in[sid] = (target, False)

    def check(self, snapshot: Snapshot, result: RoundResult | None) -> None:
        """Audit one round's collected snapshot (and record its decision)."""
        now = snapshot.timestamp
        self._relocations(snapshot)
        self._rules(snapshot)
        self._headroom(snapshot)
        self._maintenance(snapshot)
        if result is not None:
            self.rounds.append(
                RoundRecord(
                    time=now,
                    imbalance=result.imbalance,
                    triggered=result.triggered,
                    moves=[f"{m.sid} {m.source}->{m.target}" for m in result.moves],
                    node_loads={n.name: n.load for n in result.node_loads},
                    reason=result.reason,
                )
            )

    def record_failed(self, time: int, error: str) -> None:
        self.rounds.append(RoundRecord(time, 0.0, False, [], {}, ok=False, reason=error))

    def _relocations(self, snapshot: Snapshot) -> None:
        for guest in snapshot.guests:
            before = self._last_node.get(guest.sid)
            if before is not None and before != guest.node:
                self.observed_relocations += 1
            self._last_node[guest.sid] = guest.node
            moved = self._moved_in.get(guest.sid)
            if moved is not None and guest.node == moved[0]:
                self._moved_in[guest.sid] = (moved[0], True)
            elif moved is not None and moved[1]:
                del self._moved_in[guest.sid]

    def _rules(self, snapshot: Snapshot) -> None:
        guests = {g.sid: g for g in snapshot.guests}
        now = snapshot.timestamp
        for rule in snapshot.rules:
            if rule.disable:
                continue
            members = [guests[sid] for sid in rule.resources if sid in guests]
            if rule.type == "node-affinity" and rule.strict and rule.nodes:
                for guest in members:
                    if guest.node not in rule.nodes:
                        detail = f"{guest.sid} on {guest.node}, allowed {sorted(rule.nodes)}"
                        self.violations.append(
                            AuditFinding(now, "strict-node-affinity", rule.id, detail)
                        )
                continue
            if rule.type != "resource-affinity":
                continue
            running = [g for g in members if g.status == "running"]
            if rule.affinity == "negative":
                nodes = [g.node for g in running]
                if len(nodes) != len(set(nodes)):
                    detail = ", ".join(f"{g.sid}@{g.node}" for g in running)
                    self.violations.append(
                        AuditFinding(now, "resource-affinity-apart", rule.id, detail)
                    )
            elif (
                rule.affinity == "positive"
                and not any(_moving(g) for g in members)
                and len({g.node for g in running}) > 1
            ):
                detail = ", ".join(f"{g.sid}@{g.node}" for g in running)
                self.violations.append(
                    AuditFinding(now, "resource-affinity-together", rule.id, detail)
                )

    def _headroom(self, snapshot: Snapshot) -> None:
        """A node above the headroom that would be within it without the guests moved in."""
        arrived: dict[str, float] = {}
        for guest in snapshot.guests:
            moved = self._moved_in.get(guest.sid)
            if moved is not None and moved[0] == guest.node and guest.status == "running":
                arrived[guest.node] = arrived.get(guest.node, 0.0) + (guest.mem or 0.0)
        for node in snapshot.nodes:
            limit = self.mem_headroom * node.maxmem
            moved_mem = arrived.get(node.name, 0.0)
            if moved_mem > 0.0 and node.mem > limit >= node.mem - moved_mem:
                detail = (
                    f"{node.mem / GIB:.1f} GiB used > {limit / GIB:.1f} GiB headroom; "
                    f"{moved_mem / GIB:.1f} GiB of it moved in"
                )
                self.headroom_violations.append(
                    AuditFinding(snapshot.timestamp, "memory-headroom", node.name, detail)
                )

    def _maintenance(self, snapshot: Snapshot) -> None:
        node = self.maintenance_node
        if node is None or self.maintenance_left is not None:
            return
        running = sum(1 for g in snapshot.guests if g.node == node and g.status == "running")
        self.still_running_on_maintenance = running
        if running == 0 and self.evacuated_at is None:
            self.evacuated_at = snapshot.timestamp

    def report(self, threshold: float) -> dict[str, Any]:
        """The JSON-ready summary of the run (threshold in percent)."""
        good = [r for r in self.rounds if r.ok]
        under = [r for r in good if r.imbalance * 100.0 <= threshold]
        first_plan = next((i for i, r in enumerate(good) if r.moves), None)
        after = good[first_plan + 1 :] if first_plan is not None else []
        under_after = [r for r in after if r.imbalance * 100.0 <= threshold]
        return {
            "rounds": len(self.rounds),
            "failed_rounds": len(self.rounds) - len(good),
            "migrations": len(self.moves),
            "gib_moved": round(sum(m.gib for m in self.moves), 3),
            "observed_relocations": self.observed_relocations,
            "rounds_under_threshold": _fraction(len(under), len(good)),
            "first_plan_time": None if first_plan is None else good[first_plan].time,
            "rounds_under_threshold_after_first_plan": _fraction(len(under_after), len(after)),
            "rule_violations": [_plain(f) for f in self.violations],
            "headroom_violations": [_plain(f) for f in self.headroom_violations],
            "ping_pong": [_plain(f) for f in self.ping_pong],
            "maintenance": {
                "node": self.maintenance_node,
                "entered": self.maintenance_entered,
                "left": self.maintenance_left,
                "evacuated": self.evacuated_at is not None,
                "evacuated_at": self.evacuated_at,
                "running_guests_left": self.still_running_on_maintenance,
            },
            "events": list(self.events),
            "refused_moves": list(self.refused),
            "moves": [_plain(m) for m in self.moves],
            "timeline": [_plain(r) for r in self.rounds],
        }


def _pp(previous: MoveRecord, time: int, source: str, target: str) -> str:
    return (
        f"{previous.source}->{previous.target} at {previous.time}, "
        f"then {source}->{target} {time - previous.time} s later"
    )


def _moving(guest: Any) -> bool:
    return guest.ha is not None and guest.ha.service_state in MOVING_SERVICE_STATES


def _fraction(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _plain(item: Any) -> dict[str, Any]:
    return {name: getattr(item, name) for name in item.__dataclass_fields__}


class ClosedLoop:
    """Runs rounds on ``cluster`` through a RoundRunner, applying the scenario and the moves."""

    def __init__(
        self,
        cluster: SimulatedCluster,
        options: BalancerOptions,
        *,
        step_s: int,
        actuate: bool,
        events: list[ScenarioEvent],
        state: BalancerState | None = None,
        auditor: Auditor | None = None,
    ) -> None:
        self.cluster = cluster
        self.options = options
        self.actuate = actuate
        self.events = events
        self.auditor = auditor or Auditor(options.cooldown_seconds, options.mem_headroom)
        cache = GuestConfigCache()
        self.runner = RoundRunner(
            collect=lambda: simulated_collector(cluster, step_s, cache),
            publisher=RoundPublisher(),
            options=options,
            state=state or BalancerState(),
            automation_enabled=actuate,
            on_result=self._after_round,
        )

    @property
    def state(self) -> BalancerState:
        return self.runner.state

    def run(self, first: int, last: int, progress: Callable[[int], None] | None = None) -> None:
        """Run rounds ``first`` .. ``last - 1`` of the scenario."""
        for index in range(first, last):
            for event in (e for e in self.events if e.round == index):
                self._apply_event(event)
            published = self.runner.run_once()
            if not published.ok:
                self.auditor.record_failed(self.cluster.now, published.error or "failed")
            if progress is not None:
                progress(index + 1)

    def _after_round(self, snapshot: Snapshot, result: RoundResult) -> None:
        self.auditor.check(snapshot, result)
        if not self.actuate:
            return
        for move in result.moves:
            members = move.members or [move.sid]
            share = move.gib_moved / len(members)
            for sid in members:
                try:
                    self.cluster.migrate(int(sid.split(":")[1]), move.target)
                except (ValueError, KeyError) as error:
                    self.auditor.refused.append(f"{snapshot.timestamp} {sid}: {error}")
                    continue
                self.auditor.record_move(snapshot.timestamp, sid, move.source, move.target, share)

    def _apply_event(self, event: ScenarioEvent) -> None:
        cluster, outcome = self.cluster, "done"
        try:
            if event.action == "maintenance-on":
                cluster.set_maintenance(event.subject, True)
            elif event.action == "maintenance-off":
                cluster.set_maintenance(event.subject, False)
            elif event.action == "stop":
                cluster.stop_guest(int(event.subject))
            else:
                guest = cluster.spec.guests[cluster.guest_index(int(event.subject))]
                if cluster.node_status.get(guest.node) == "maintenance":
                    outcome = f"skipped: {guest.node} is in maintenance"
                else:
                    cluster.start_guest(int(event.subject))
        except ValueError as error:
            outcome = f"skipped: {error}"
        self.auditor.record_event(cluster.now, event, outcome)


def round_count(hours: float, step_s: int) -> int:
    return max(1, int(hours * 3600 // step_s))
