"""The one entry point of a balancing round: snapshot, options and state in, decision out.

``decide`` is pure: it reads no clock (``now`` is passed in), does no I/O and logs nothing;
the only time it measures is its own phases, for ``RoundResult.timings``. A round:

1. usage and imbalance as the mode counts them (engineer A's usage/imbalance);
2. moves in flight settle, cooldowns expire (:mod:`balancer.stability`);
3. triggers: imbalance above the threshold for the hold duration, a node overloaded for the
   overload hold, or an earlier trigger still above the stop level (:mod:`balancer.triggers`);
   consolidation has its own trigger, a quiet cluster; a running guest in scope on a node in
   maintenance (or offline) triggers at once, with every method; moves in flight still
   block any new plan;
4. rules resolve into bundles and masks, the planning problem is built with the safety limits
   (:mod:`balancer.safety`);
5. guests that must leave a node in maintenance (or offline) are evacuated first: forced
   moves to the best legal target, then the strategy named by ``options.method`` proposes
   moves on the state after them (:func:`balancer.strategies.propose_round`); the balancing
   part of a plan that does not reach the margin is dropped (unless a node is overloaded),
   the evacuation never is; a guest that fits nowhere stays, with an ``evacuation-blocked``
   finding;
6. the state records the moves in flight and the guests' cooldowns.

Evacuation choices:

- The imbalance (and the mean load, the spreads, the CV) is measured over the usable nodes
  only (``PlanProblem.node_counted``); the CRS, and this engine before, count every node.
  Counting the maintenance node would not hold the evacuation back (its moves are forced,
  not judged by the imbalance, the margin or the cost-benefit rule), but once it is empty
  it keeps the imbalance above the threshold for the whole maintenance, a gap no legal move
  can close: every round would trigger and chase it (seen in the closed-loop simulation:
  61% of rounds under the threshold instead of over 80%). ``node_loads`` still lists every
  node, with ``usable`` False for those left out.
- Move budget: evacuation moves count against ``max_moves``, which is raised to at least the
  number of units to evacuate that round; balancing gets what is left. So a round never
  leaves an evacuable guest behind for lack of budget, and never plans more balancing moves
  than ``max_moves``. The plan is still ordered in waves of ``concurrency`` moves.
- Scope, exclusions and cooldowns apply as to any move: a guest moved onto the node shortly
  before maintenance leaves when its cooldown ends (no ping-pong). A move in flight (also an
  HA resource the HA manager is already migrating, e.g. evacuating) blocks new plans as
  before; the non-HA guests follow once it has landed.
- Hysteresis (``active``) follows the balancing moves only: an evacuation alone does not keep
  later rounds planning. A guest that fits nowhere keeps triggering rounds (and its finding)
  until it can leave or the node is usable again.
- Dynamic mode counts a node's usage as at least its newest measurement and its running
  guests' sum (:mod:`balancer.safety`): the smoothed view lagged behind the guests moved onto
  a node just back from maintenance, and the refill broke the memory headroom.

``options.crs_compatible`` hands the round to engineer A's ``crs_round`` instead. Without
options, ``BalancerOptions.from_crs(snapshot.crs)`` applies.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from balancer.cluster import from_snapshot
from balancer.cost import GIB, bandwidth_matrix, guest_bytes_to_copy
from balancer.crs import CrsState, crs_round, node_loads_of
from balancer.imbalance import imbalance, imbalance_cv, node_load, resource_spread
from balancer.options import BalancerOptions
from balancer.rules import resolve_rules
from balancer.safety import build_problem, evacuation_counts
from balancer.stability import BalancerState, cooling, record, settle
from balancer.strategies import StrategyContext, propose_round
from balancer.triggers import evacuation_reason, evaluate, overloaded_mask
from model import Snapshot
from model.plan import Move, RoundResult


def _price_moves(snapshot: Snapshot, opts: BalancerOptions, moves: list[Move]) -> None:
    """Fill bytes copied and estimated duration into moves decided elsewhere (the CRS)."""
    names = [node.name for node in snapshot.nodes]
    index = {name: i for i, name in enumerate(names)}
    copied = dict(zip((g.sid for g in snapshot.guests), guest_bytes_to_copy(snapshot), strict=True))
    bandwidth, _ = bandwidth_matrix(names, opts.bandwidth_gib_s, opts.pair_bandwidth_gib_s)
    for move in moves:
        if move.source not in index or move.target not in index:
            continue
        nbytes = float(sum(copied.get(sid, 0.0) for sid in move.members or [move.sid]))
        link = float(bandwidth[index[move.source], index[move.target]])
        move.gib_moved = nbytes / GIB
        move.cost_seconds = nbytes / link + opts.migration_overhead_s


def _decide_crs(
    snapshot: Snapshot, opts: BalancerOptions, state: BalancerState, carry_out: bool
) -> tuple[RoundResult, BalancerState]:
    crs_state = CrsState(
        state.crs_hold_count, dict(state.crs_in_flight), dict(state.crs_in_flight_rounds)
    )
    result, after = crs_round(snapshot, snapshot.crs, crs_state)
    _price_moves(snapshot, opts, result.moves + result.top_moves)
    if not carry_out and result.moves:
        # Only recommended: nothing is in flight, and the trigger stays held.
        return result, replace(state, crs_hold_count=result.hold_count)
    new = replace(
        state,
        crs_hold_count=after.hold_count,
        crs_in_flight=dict(after.in_flight),
        crs_in_flight_rounds=dict(after.in_flight_rounds),
    )
    return result, new


def _refused(opts: BalancerOptions, problems: list[str]) -> RoundResult:
    """A round that decides nothing because the options are unusable (the state is kept)."""
    return RoundResult(
        imbalance=0.0,
        imbalance_cv=0.0,
        triggered=False,
        reason="invalid balancer options: " + "; ".join(problems),
        threshold=opts.threshold,
        margin=opts.margin,
        mode=str(opts.mode),
        method=str(opts.method),
        notes=[f"option error: {p}" for p in problems],
    )


class _Clock:
    """Phase timer for RoundResult.timings (milliseconds)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = (now - self._last) * 1000.0
        self._last = now

    def total(self) -> dict[str, float]:
        self.timings["total"] = (time.perf_counter() - self._start) * 1000.0
        return self.timings


def decide(
    snapshot: Snapshot,
    options: BalancerOptions | None,
    state: BalancerState,
    now: float,
    *,
    carry_out: bool = True,
) -> tuple[RoundResult, BalancerState]:
    """Decide one round; returns the result and the state for the next round.

    ``carry_out=False`` (recommend-only service, or a move set that will not be executed):
    the moves are not recorded as in flight and start no cooldown, and the trigger counters
    are not reset, so the next round on an unchanged cluster recommends the same plan again.
    """
    opts = BalancerOptions.from_crs(snapshot.crs) if options is None else options
    if opts.crs_compatible:
        return _decide_crs(snapshot, opts, state, carry_out)
    clock = _Clock()
    problems = opts.validate()
    if problems:
        return _refused(opts, problems), state

    c = from_snapshot(snapshot)
    notes: list[str] = []
    unplaced = [
        sid for sid, node in zip(c.guest_sids, c.guest_node.tolist(), strict=True) if node < 0
    ]
    notes += [f"{sid}: its node is not in the snapshot; ignored" for sid in unplaced]
    flights, cooldowns, landed_notes = settle(state, snapshot, now, opts.in_flight_timeout_s)
    notes += landed_notes
    frozen = cooling(BalancerState(cooldowns=cooldowns, in_flight=flights), now)
    clock.lap("state")

    rs = resolve_rules(snapshot.rules, c)
    clock.lap("rules")

    problem, problem_notes = build_problem(snapshot, c, rs, opts, opts.mode, frozen)
    notes += problem_notes
    cpu, mem = problem.node_cpu, problem.node_mem
    loads = node_load(cpu, mem, c.node_maxcpu, c.node_maxmem)
    counted = problem.node_counted
    current = imbalance(loads[counted])
    cpu_spread, mem_spread = resource_spread(
        cpu[counted], mem[counted], c.node_maxcpu[counted], c.node_maxmem[counted]
    )
    clock.lap("candidates")

    measured_cpu = np.divide(
        c.node_cpu, c.node_maxcpu, out=np.zeros(c.n_nodes), where=c.node_maxcpu > 0
    )
    measured_mem = np.divide(
        c.node_mem, c.node_maxmem, out=np.zeros(c.n_nodes), where=c.node_maxmem > 0
    )
    over = overloaded_mask(measured_cpu, measured_mem, c.node_usable, opts.overload_percent)
    offline = {node.name for node in snapshot.nodes if not node.online}
    evacuating = evacuation_counts(problem)
    trigger = evaluate(
        current,
        c.node_names,
        over,
        opts,
        state.hold_count,
        state.overload_counts,
        state.active,
        evacuating=evacuating,
        offline=offline,
    )
    triggered, reason = trigger.triggered, trigger.reason
    mean_load = float(loads[counted].mean()) if counted.any() else 0.0
    if opts.method == "consolidate":
        quiet = mean_load * 100.0 < opts.consolidate_below_percent
        reason = (
            f"mean node load {mean_load * 100:.1f}% "
            f"{'below' if quiet else 'not below'} {opts.consolidate_below_percent:g}%"
        )
        triggered = quiet or trigger.evacuating
        if trigger.evacuating:
            reason = f"{evacuation_reason(evacuating, offline)}; {reason}"
    if triggered and flights:
        triggered = False
        reason = f"{len(flights)} move(s) in flight; waiting for them to land"
    clock.lap("triggers")

    overload_level = opts.overload_percent / 100.0 if trigger.overloaded_nodes else None
    if opts.mode != "dynamic":
        overload_level = None
    ctx = StrategyContext(
        c, rs, problem, opts, opts.stop_level, overload_level, None if triggered else 0
    )
    proposal = propose_round(ctx)
    outcome = proposal.outcome
    notes += outcome.notes
    clock.lap("selection")
    clock.timings.update({f"selection.{k}": v for k, v in outcome.timings.items()})
    if "scoring" in outcome.timings:
        clock.timings["scoring"] = outcome.timings["scoring"]

    forced = outcome.moves[: proposal.evacuation_moves]
    balancing = outcome.moves[proposal.evacuation_moves :]
    after = outcome.imbalance_after
    base = forced[-1].imbalance_after if forced else current
    if balancing and opts.method != "consolidate" and not trigger.overloaded_nodes and base > 0:
        improvement = (base - after) / base * 100.0
        if improvement < opts.margin:
            notes.append(f"plan improves {improvement:.2f}%, below the margin {opts.margin:g}%")
            balancing, after = [], base
    moves = forced + balancing
    if triggered and not moves:
        reason += "; no move found that is legal, worth its cost and lowers the imbalance"
    if moves:
        gib = sum(m.gib_moved for m in moves)
        seconds = sum(m.cost_seconds for m in moves)
        notes.append(
            f"efficacy: imbalance {current * 100:.2f}% -> {after * 100:.2f}%, "
            f"{len(moves)} move(s), {gib:.1f} GiB, ~{seconds:.0f} s of migration"
        )

    committed = moves if carry_out else []
    new_flights, new_cooldowns = record(committed, now, opts.cooldown_seconds, flights)
    new_state = BalancerState(
        hold_count=0 if committed else trigger.hold_count,
        overload_counts={} if committed else trigger.overload_counts,
        cooldowns={**cooldowns, **new_cooldowns},
        in_flight=new_flights,
        active=bool(balancing) and after > opts.stop_level and opts.method != "consolidate",
        crs_hold_count=state.crs_hold_count,
        crs_in_flight=dict(state.crs_in_flight),
        crs_in_flight_rounds=dict(state.crs_in_flight_rounds),
    )
    result = RoundResult(
        imbalance=current,
        imbalance_cv=imbalance_cv(loads[counted]),
        triggered=triggered,
        reason=reason,
        threshold=opts.threshold,
        margin=opts.margin,
        mode=opts.mode,
        method=opts.method,
        hold_count=trigger.hold_count,
        moves=moves,
        top_moves=outcome.top_moves,
        imbalance_after=after if moves else (current if triggered else None),
        node_loads=node_loads_of(c, cpu, mem, loads),
        cpu_spread=cpu_spread,
        mem_spread=mem_spread,
        optimality_gap=proposal.optimality_gap,
        notes=notes,
        findings=list(rs.findings) + proposal.findings,
    )
    result.timings = clock.total()
    return result, new_state
