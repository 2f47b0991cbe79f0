"""One round of the PVE 9.2 HA manager's automatic rebalancing, decided exactly as PVE does.

Per round (pve-ha-manager ``Manager.pm`` with the RFC "dynamic scheduler + load rebalancer",
facts page section 4): only in static or dynamic mode with ``ha-auto-rebalance`` on; the
imbalance must exceed the threshold for ``hold-duration`` consecutive rounds (a count of 0
triggers at once); no new move while one is in flight; then ONE move is chosen (bruteforce
or TOPSIS over the candidates) and committed only if (before - after) / before reaches the
margin. "before" is the exact current imbalance, "after" the truncated score PVE reports.
The hold count restarts at 0 once a move is committed or the imbalance drops to the
threshold or below.

Candidates are bundles whose every member is HA-managed with auto-rebalance on, none of
which is being moved, at least one of which is started and running on a usable node, and
whose started members all run on the leader's node (a split group is left to PVE's
placement to reunite);
the bundle's usage is the sum over its started, running members (the members that put load
on the node) and all members move together. A move stays in flight until its sid is seen
on the target, or for at most :data:`IN_FLIGHT_MAX_ROUNDS` rounds; snapshot service states
``migrate``/``relocate`` also count as in flight. Resolved rules are cached in the state
and reused while the rules, guests, HA flags and usable nodes are unchanged (PVE likewise
re-reads rules only when their digest changes).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from balancer.candidates import Candidates, dominant_targets, generate_candidates
from balancer.cluster import F64, MOVING_SERVICE_STATES, Bool, ClusterArrays, from_snapshot
from balancer.imbalance import imbalance, imbalance_cv, node_load, resource_spread
from balancer.rules import RuleSet, bundle_nodes, resolve_rules, sid_ranks
from balancer.selection import NodeState, Scored, select_bruteforce, select_topsis
from balancer.usage import Mode, guest_usage, node_usage
from model import Crs, Snapshot
from model.plan import Move, NodeLoad, RoundResult

IN_FLIGHT_MAX_ROUNDS = 60
TOP_MOVES = 5
NARROW_ABOVE = 200_000
"""Above this many bundle x node pairs bruteforce scores only non-dominated targets
(:func:`balancer.candidates.dominant_targets`): same winner, but ``top_moves`` after the first
are then the best moves among those targets."""


@dataclass(slots=True)
class CrsState:
    hold_count: int = 0
    in_flight: dict[str, str] = field(default_factory=dict)
    """sid -> target node of moves committed and not yet seen completed."""
    in_flight_rounds: dict[str, int] = field(default_factory=dict)
    rules_digest: str = ""
    """Digest of what the resolved rules depend on; like PVE's last_rules_digest."""
    ruleset: RuleSet | None = None


@dataclass(slots=True)
class Bundles:
    movable: Bool
    cpu: F64
    mem: F64


def movable_bundles(c: ClusterArrays, rs: RuleSet, mode: Mode, moving: Bool) -> Bundles:
    """Which bundles may be moved and what each move transfers (see module docstring)."""
    b = rs.n_bundles
    gcpu, gmem = guest_usage(c, mode)
    counted = c.guest_ha_started & c.guest_running & (c.guest_node >= 0)
    eligible = c.guest_ha & c.guest_auto_rebalance & ~moving
    all_eligible = np.bincount(rs.bundle_of, weights=~eligible, minlength=b) == 0
    any_counted = np.bincount(rs.bundle_of, weights=counted, minlength=b) > 0
    node_of = bundle_nodes(rs, c.guest_node)
    apart = counted & (c.guest_node != node_of[rs.bundle_of])
    together = np.bincount(rs.bundle_of, weights=apart, minlength=b) == 0
    on_usable = np.zeros(b, dtype=np.bool_)
    on_usable[node_of >= 0] = c.node_usable[node_of[node_of >= 0]]
    return Bundles(
        movable=all_eligible & any_counted & on_usable & together,
        cpu=np.bincount(rs.bundle_of, weights=np.where(counted, gcpu, 0.0), minlength=b).astype(
            np.float64
        ),
        mem=np.bincount(rs.bundle_of, weights=np.where(counted, gmem, 0.0), minlength=b).astype(
            np.float64
        ),
    )


def node_loads_of(c: ClusterArrays, cpu: F64, mem: F64, loads: F64) -> list[NodeLoad]:
    """The per-node part of a RoundResult: usage as the mode counts it, capacity, load."""
    return [
        NodeLoad(
            name,
            float(cpu[i]),
            float(mem[i]),
            float(c.node_maxcpu[i]),
            float(c.node_maxmem[i]),
            float(loads[i]),
            bool(c.node_usable[i]),
        )
        for i, name in enumerate(c.node_names)
    ]


def _sanitise(c: ClusterArrays) -> list[str]:
    """Zero non-finite usage or capacity figures in place; one note per affected node/guest."""
    notes: list[str] = []
    for owner, names, columns in (
        ("node", c.node_names, ("node_cpu", "node_mem", "node_maxcpu", "node_maxmem")),
        ("guest", c.guest_sids, ("guest_cpu", "guest_mem", "guest_maxcpu", "guest_maxmem")),
    ):
        for column in columns:
            values: F64 = getattr(c, column)
            bad = ~np.isfinite(values)
            for i in np.flatnonzero(bad).tolist():
                notes.append(f"bad-value {owner} {names[i]}: {column} is {values[i]}, counted as 0")
            values[bad] = 0.0
    return notes


def _rules_digest(snapshot: Snapshot, c: ClusterArrays) -> str:
    parts = (
        repr(snapshot.rules),
        "\n".join(c.guest_sids),
        c.guest_ha.tobytes().hex(),
        "\n".join(c.node_names),
        c.node_usable.tobytes().hex(),
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cached_rules(snapshot: Snapshot, c: ClusterArrays, state: CrsState) -> RuleSet:
    """Resolve the rules, reusing the last result while nothing they depend on changed."""
    digest = _rules_digest(snapshot, c)
    if state.ruleset is None or digest != state.rules_digest:
        state.ruleset = resolve_rules(snapshot.rules, c)
        state.rules_digest = digest
    return state.ruleset


def _update_in_flight(snapshot: Snapshot, state: CrsState) -> CrsState:
    flights: dict[str, str] = {}
    rounds: dict[str, int] = {}
    for sid, target in state.in_flight.items():
        guest = snapshot.guest(sid)
        age = state.in_flight_rounds.get(sid, 0) + 1
        if guest is None or guest.node == target or age > IN_FLIGHT_MAX_ROUNDS:
            continue
        flights[sid] = target
        rounds[sid] = age
    return CrsState(state.hold_count, flights, rounds, state.rules_digest, state.ruleset)


def _to_move(
    c: ClusterArrays, rs: RuleSet, cands: Candidates, scored: Scored, rank: int, method: str
) -> Move:
    picked = cands.take(np.array([scored.index]))
    bundle = int(picked.bundle[0])
    members = sorted(c.guest_sids[g] for g in rs.members(bundle).tolist())
    return Move(
        rank=rank,
        sid=c.guest_sids[int(rs.bundle_leader[bundle])],
        source=c.node_names[int(picked.source[0])],
        target=c.node_names[int(picked.target[0])],
        imbalance_after=scored.imbalance,
        members=members,
        gib_moved=float(picked.mem[0]) / 2**30,
        reason=f"crs {method}",
    )


def best_moves(
    c: ClusterArrays,
    rs: RuleSet,
    mode: Mode,
    method: str,
    moving: Bool,
    limit: int = TOP_MOVES,
    timings: dict[str, float] | None = None,
) -> tuple[Candidates, list[Scored], NodeState]:
    """Candidates and the ``limit`` best scored moves by the chosen method.

    ``timings`` receives milliseconds for ``candidates``, ``scoring`` and ``selection``.
    """
    started = time.perf_counter()
    cpu, mem = node_usage(c, mode)
    state = NodeState(cpu, mem, c.node_maxcpu, c.node_maxmem)
    bundles = movable_bundles(c, rs, mode, moving)
    narrowed = None
    if method == "bruteforce" and int(bundles.movable.sum()) * c.n_nodes > NARROW_ABOVE:
        loads = node_load(cpu, mem, c.node_maxcpu, c.node_maxmem)
        narrowed = dominant_targets(c.node_maxcpu, c.node_maxmem, loads, c.node_usable)
    cands = generate_candidates(
        c, rs, bundles.movable, bundles.cpu, bundles.mem, narrowed_targets=narrowed
    )
    sid_rank = sid_ranks(c.guest_sids)[rs.bundle_leader]
    node_rank = sid_ranks(c.node_names)
    if timings is not None:
        timings["candidates"] = (time.perf_counter() - started) * 1000
    select = select_topsis if method == "topsis" else select_bruteforce
    return cands, select(state, cands, sid_rank, node_rank, limit, timings), state


def crs_round(snapshot: Snapshot, crs: Crs, state: CrsState) -> tuple[RoundResult, CrsState]:
    """What PVE's HA manager decides in one round, and the state carried to the next."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    c = from_snapshot(snapshot)
    bad_values = _sanitise(c)
    mode: Mode = crs.ha
    cpu, mem = node_usage(c, mode)
    loads = node_load(cpu, mem, c.node_maxcpu, c.node_maxmem)
    current = imbalance(loads)
    cpu_spread, mem_spread = resource_spread(cpu, mem, c.node_maxcpu, c.node_maxmem)
    result = RoundResult(
        imbalance=current,
        imbalance_cv=imbalance_cv(loads),
        triggered=False,
        reason="",
        threshold=crs.threshold,
        margin=crs.margin,
        mode=mode,
        method=crs.method,
        node_loads=node_loads_of(c, cpu, mem, loads),
        cpu_spread=cpu_spread,
        mem_spread=mem_spread,
        notes=bad_values,
    )
    new = _update_in_flight(snapshot, state)
    exceeded = current > crs.threshold / 100.0
    new.hold_count = new.hold_count + 1 if exceeded else 0
    result.hold_count = new.hold_count
    timings["usage"] = (time.perf_counter() - started) * 1000

    if mode == "basic" or not crs.auto_rebalance:
        new.hold_count = result.hold_count = 0
        result.reason = (
            "automatic rebalancing is off (needs static or dynamic mode and ha-auto-rebalance)"
        )
        result.timings = timings
        return result, new

    step = time.perf_counter()
    rs = cached_rules(snapshot, c, new)
    result.findings = list(rs.findings)
    moving_states = [
        g.ha is not None and g.ha.service_state in MOVING_SERVICE_STATES for g in snapshot.guests
    ]
    moving = np.array(moving_states, dtype=np.bool_).reshape(c.n_guests)
    moving |= np.isin(np.array(c.guest_sids, dtype=object), list(new.in_flight))
    timings["rules"] = (time.perf_counter() - step) * 1000

    cands, scored, _ = best_moves(c, rs, mode, crs.method, moving, timings=timings)
    result.top_moves = [
        _to_move(c, rs, cands, s, rank, crs.method) for rank, s in enumerate(scored, 1)
    ]
    result.timings = timings
    result.notes.append(f"{len(cands)} migration candidates")

    if not exceeded:
        result.reason = f"imbalance {current:.4f} not above threshold {crs.threshold / 100:.4f}"
        return result, new
    if moving.any():
        result.reason = "a move is in flight"
        return result, new
    if new.hold_count < crs.hold_duration:
        result.reason = f"imbalance above threshold for {new.hold_count}/{crs.hold_duration} rounds"
        return result, new
    if not scored:
        result.reason = "no migration candidate"
        return result, new
    best = result.top_moves[0]
    improvement = (current - best.imbalance_after) / current
    if improvement < crs.margin / 100.0:
        result.reason = f"best move improves {improvement:.2%}, below margin {crs.margin:g}%"
        return result, new
    result.triggered = True
    result.reason = (
        f"imbalance above threshold for {new.hold_count} rounds; move improves {improvement:.2%}"
    )
    result.moves = [best]
    result.imbalance_after = best.imbalance_after
    new.hold_count = 0
    for sid in best.members:
        new.in_flight[sid] = best.target
        new.in_flight_rounds[sid] = 0
    return result, new
