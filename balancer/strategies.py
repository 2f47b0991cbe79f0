"""Balancing strategies behind one interface, in the manner of OpenStack Watcher.

Each strategy turns the round's :class:`StrategyContext` (the planning problem, rules and
options) into a :class:`Proposal`: ordered moves, manual top moves, the expected imbalance
and, where known, the optimality gap. The engine picks one by ``options.method``:

- ``bruteforce`` / ``topsis``: the CRS's single best move (engineer A's scorers), restricted
  to moves the safety limits allow;
- ``greedy``: the multi-move plan of :mod:`balancer.planner`;
- ``optimal``: the exact K-move MILP of :mod:`balancer.optimal` (greedy above the size
  limit); the better of the MILP and greedy plans is kept, the gap is HiGHS's;
- ``consolidate``: empty lightly loaded nodes (:mod:`balancer.consolidate`).

:func:`propose_round` is what the engine calls: when bundles must leave a node in
maintenance (or offline), it first plans their forced evacuation
(:func:`balancer.planner.plan_evacuation`), then runs the strategy on the state after it with
the rest of the move budget. The budget is ``max(max_moves, bundles to evacuate)``: the
evacuation counts against ``max_moves`` but is never cut short by it, so a round may plan more
than ``max_moves`` moves, all evacuations. A round that may not move (``max_moves`` override 0,
e.g. not triggered or moves in flight) evacuates nothing.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from balancer.candidates import generate_candidates
from balancer.cluster import Bool, ClusterArrays
from balancer.consolidate import plan_consolidation
from balancer.optimal import plan_optimal
from balancer.options import BalancerOptions
from balancer.planner import (
    OrderedStep,
    PlanOutcome,
    Step,
    plan_evacuation,
    plan_greedy,
    state_imbalance,
    to_moves,
)
from balancer.rules import RuleSet, sid_ranks
from balancer.safety import PlanProblem
from balancer.selection import NodeState, select_bruteforce, select_topsis
from model import Finding
from model.plan import Move


@dataclass(slots=True)
class StrategyContext:
    c: ClusterArrays
    ruleset: RuleSet
    problem: PlanProblem
    options: BalancerOptions
    stop_level: float
    """Imbalance (0..1) the plan aims for."""
    overload_level: float | None = None
    """Keep planning while a node is above this fraction of capacity (None: ignore)."""
    max_moves: int | None = None
    """Overrides options.max_moves (0: only the manual top moves)."""


@dataclass(slots=True)
class Proposal:
    outcome: PlanOutcome
    optimality_gap: float | None = None
    nodes_to_power_down: list[str] = field(default_factory=list)
    evacuation_moves: int = 0
    """The first this many ``outcome.moves`` are forced evacuations (no gain required)."""
    findings: list[Finding] = field(default_factory=list)
    """evacuation-blocked: a guest that must leave its node but fits on no legal target."""


class Strategy(Protocol):
    name: str

    def propose(self, ctx: StrategyContext) -> Proposal: ...


def _max_moves(ctx: StrategyContext) -> int:
    return ctx.options.max_moves if ctx.max_moves is None else ctx.max_moves


class GreedyPlan:
    name = "greedy"

    def propose(self, ctx: StrategyContext) -> Proposal:
        o = ctx.options
        outcome = plan_greedy(
            ctx.problem,
            _max_moves(ctx),
            ctx.stop_level,
            concurrency=o.concurrency,
            top_n=o.top_n,
            overload_level=ctx.overload_level,
            lookahead_width=o.lookahead_width,
            lookahead_max_candidates=o.lookahead_max_candidates,
        )
        return Proposal(outcome)


class OptimalPlan:
    name = "optimal"

    def propose(self, ctx: StrategyContext) -> Proposal:
        o = ctx.options
        greedy = GreedyPlan().propose(ctx)
        movable = int(ctx.problem.bundle_movable.sum())
        if movable > o.optimal_max_guests or _max_moves(ctx) == 0:
            if movable > o.optimal_max_guests:
                greedy.outcome.notes.append(
                    f"optimal: {movable} movable units exceed {o.optimal_max_guests}; greedy used"
                )
            return greedy
        started = time.perf_counter()
        exact = plan_optimal(ctx.problem, _max_moves(ctx), o.concurrency, o.optimal_time_limit_s)
        milp_ms = (time.perf_counter() - started) * 1000.0
        greedy.outcome.timings["milp"] = milp_ms
        outcome = exact.outcome
        outcome.top_moves = greedy.outcome.top_moves
        outcome.timings = {**greedy.outcome.timings, "milp": milp_ms}
        outcome.notes.append(f"optimal: {exact.status}")
        if greedy.outcome.imbalance_after < outcome.imbalance_after - 1e-12:
            greedy.outcome.notes += outcome.notes
            greedy.outcome.notes.append(
                f"optimal: the MILP placement ({outcome.imbalance_after * 100:.3f}%) is worse "
                "than greedy on the true imbalance (its objective is a proxy); greedy kept"
            )
            return Proposal(greedy.outcome, exact.gap)
        return Proposal(outcome, exact.gap)


class Consolidation:
    name = "consolidate"

    def propose(self, ctx: StrategyContext) -> Proposal:
        o = ctx.options
        if _max_moves(ctx) == 0:
            return GreedyPlan().propose(ctx)
        result = plan_consolidation(
            ctx.problem, o.consolidate_below_percent, o.consolidate_max_nodes, o.concurrency
        )
        manual = GreedyPlan().propose(
            StrategyContext(ctx.c, ctx.ruleset, ctx.problem, o, ctx.stop_level, max_moves=0)
        )
        result.outcome.top_moves = manual.outcome.top_moves
        return Proposal(result.outcome, None, result.nodes_to_power_down)


def legal_now(problem: PlanProblem) -> Bool:
    """[b, n] targets each bundle may move to from the current state (rules and limits)."""
    p = problem
    return np.asarray(
        p.bundle_targets
        & p.node_usable[None, :]
        & (p.node_cpu[None, :] + p.bundle_cpu[:, None] <= p.cpu_limit[None, :])
        & (p.node_mem[None, :] + p.bundle_mem[:, None] <= p.mem_limit[None, :]),
        dtype=np.bool_,
    )


class CrsSingleMove:
    """The CRS's choice of one move (bruteforce or TOPSIS), within the safety limits."""

    def __init__(self, method: str) -> None:
        self.name = method

    def propose(self, ctx: StrategyContext) -> Proposal:
        p, c, rs = ctx.problem, ctx.c, ctx.ruleset
        before = state_imbalance(p, p.node_cpu, p.node_mem)
        cands = generate_candidates(
            c, rs, p.bundle_movable, p.bundle_cpu, p.bundle_mem, target_mask=legal_now(p)
        )
        state = NodeState(p.node_cpu, p.node_mem, p.node_maxcpu, p.node_maxmem)
        sid_rank = sid_ranks(c.guest_sids)[rs.bundle_leader]
        node_rank = sid_ranks(c.node_names)
        select = select_topsis if self.name == "topsis" else select_bruteforce
        timings: dict[str, float] = {}
        scored = select(state, cands, sid_rank, node_rank, max(ctx.options.top_n, 1), timings)
        singles = [
            OrderedStep(
                Step(
                    int(cands.bundle[s.index]),
                    int(cands.source[s.index]),
                    int(cands.target[s.index]),
                ),
                1,
                s.imbalance,
            )
            for s in scored
        ]
        top = [to_moves(p, [single], before)[0] for single in singles]
        for rank, move in enumerate(top, start=1):
            move.rank = rank
            move.reason = f"crs {self.name}: {move.reason}"
        chosen = [
            single
            for single in singles[:1]
            if single.imbalance_after < before and _max_moves(ctx) > 0
        ]
        moves = to_moves(p, chosen, before)
        for move in moves:
            move.reason = f"crs {self.name}: {move.reason}"
        after = moves[-1].imbalance_after if moves else before
        outcome = PlanOutcome(moves, top, before, after)
        outcome.timings.update(timings)
        if moves and moves[0].gib_moved > 0:
            gain_pp = (before - after) * 100.0
            if gain_pp < ctx.options.min_gain_per_gib * moves[0].gib_moved:
                outcome.notes.append(
                    f"crs {self.name}: best move gains {gain_pp:.3f} points for "
                    f"{moves[0].gib_moved:.1f} GiB, below the cost-benefit minimum"
                )
                outcome.moves, outcome.imbalance_after = [], before
        return Proposal(outcome)


STRATEGIES: dict[str, Strategy] = {
    "greedy": GreedyPlan(),
    "optimal": OptimalPlan(),
    "consolidate": Consolidation(),
    "bruteforce": CrsSingleMove("bruteforce"),
    "topsis": CrsSingleMove("topsis"),
}


def strategy_for(method: str) -> Strategy:
    """The strategy registered under ``method``; KeyError names the known ones."""
    try:
        return STRATEGIES[method]
    except KeyError:
        raise KeyError(
            f"unknown method {method!r}; known: {', '.join(sorted(STRATEGIES))}"
        ) from None


_WAVE = re.compile(r"\bwave (\d+)")


def _later_waves(moves: list[Move], rank_offset: int, wave_offset: int) -> list[Move]:
    """Moves renumbered to follow ``rank_offset`` moves in ``wave_offset`` waves."""
    for move in moves:
        move.rank += rank_offset
        move.reason = _WAVE.sub(
            lambda m: f"wave {int(m.group(1)) + wave_offset}", move.reason, count=1
        )
    return moves


def propose_round(ctx: StrategyContext) -> Proposal:
    """Forced evacuation first (if any), then ``ctx.options.method`` (module docstring)."""
    strategy = strategy_for(ctx.options.method)
    p = ctx.problem
    evacuees = int(p.bundle_evacuate.sum())
    if evacuees == 0 or ctx.max_moves == 0:
        return strategy.propose(ctx)
    started = time.perf_counter()
    o = ctx.options
    calm = o.overload_percent / 100.0 if o.mode == "dynamic" else None
    evac = plan_evacuation(p, o.concurrency, calm)
    forced = to_moves(p, evac.ordered, evac.imbalance_before)
    for move in forced:
        move.reason = move.reason.replace(": ", f": evacuate off {move.source}, ", 1)
    notes: list[str] = []
    findings: list[Finding] = []
    for bundle in evac.blocked:
        members = p.bundle_members[bundle]
        node = p.node_names[int(p.bundle_node[bundle])]
        message = (
            f"{','.join(members)} must leave {node} (maintenance or offline) but no usable "
            "node may take it within the rules, memory headroom and cpu cap; it stays"
        )
        notes.append(f"evacuation blocked: {message}")
        findings.append(Finding("evacuation-blocked", members[0], message, "error"))
    evac_ms = (time.perf_counter() - started) * 1000.0

    # The balancing strategy sees the cluster as it will be after the evacuation.
    rs = ctx.ruleset
    guest_node = ctx.c.guest_node.copy()
    placed = guest_node >= 0
    guest_node[placed] = evac.problem.bundle_node[rs.bundle_of[placed]]
    budget = max(_max_moves(ctx), evacuees)
    inner_ctx = StrategyContext(
        replace(ctx.c, guest_node=guest_node),
        rs,
        evac.problem,
        ctx.options,
        ctx.stop_level,
        ctx.overload_level,
        budget - len(forced),
    )
    inner = strategy.propose(inner_ctx)
    waves = evac.ordered[-1].wave if evac.ordered else 0
    balancing = _later_waves(inner.outcome.moves, len(forced), waves)
    outcome = inner.outcome
    if forced:
        notes.append(
            f"evacuation: {len(forced)} forced move(s), imbalance "
            f"{evac.imbalance_before * 100:.2f}% -> {evac.imbalance_after * 100:.2f}%"
        )
    combined = PlanOutcome(
        moves=forced + balancing,
        top_moves=outcome.top_moves,
        imbalance_before=evac.imbalance_before,
        imbalance_after=outcome.imbalance_after if balancing else evac.imbalance_after,
        steps_searched=outcome.steps_searched + len(forced),
        notes=notes + outcome.notes,
        timings={"evacuation": evac_ms, **outcome.timings},
    )
    return Proposal(
        combined,
        inner.optimality_gap,
        inner.nodes_to_power_down,
        evacuation_moves=len(forced),
        findings=findings,
    )
