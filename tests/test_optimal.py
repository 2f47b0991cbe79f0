"""The exact K-move reference (MILP): no worse than greedy, swaps greedy cannot find, rules."""

from __future__ import annotations

import math

import numpy as np

from balancer.cluster import from_snapshot
from balancer.optimal import plan_optimal
from balancer.planner import plan_greedy, replay_violations
from balancer.rules import resolve_rules
from balancer.safety import PlanProblem, build_problem
from model import Rule, Snapshot
from tests.test_plan_support import cluster, even_cluster, options, run, vm


def problem_of(snap: Snapshot, **overrides: object) -> PlanProblem:
    c = from_snapshot(snap)
    problem, _ = build_problem(
        snap, c, resolve_rules(snap.rules, c), options(**overrides), "dynamic", set()
    )
    return problem


def swap_case() -> Snapshot:
    # a: 60 + 40 GiB, b: 50 + 30 GiB on 200 GiB nodes: no single move helps, a swap of
    # 40 and 30 balances perfectly (90 / 90).
    guests = [vm(100, "a", 0.0, 60.0), vm(101, "a", 0.0, 40.0), vm(200, "b", 0.0, 50.0),
              vm(201, "b", 0.0, 30.0)]  # fmt: skip
    return cluster(["a", "b"], guests, mem_gib=200.0)


def test_optimal_finds_the_swap_greedy_cannot() -> None:
    problem = problem_of(swap_case())
    greedy = plan_greedy(problem, max_moves=2, stop_level=0.0)
    assert greedy.moves == []
    exact = plan_optimal(problem, max_moves=2, concurrency=1, time_limit_s=10.0)
    moves = exact.outcome.moves
    assert sorted((m.sid, m.target) for m in moves) == [("vm:101", "b"), ("vm:201", "a")]
    assert exact.outcome.imbalance_after < 1e-12
    assert exact.gap is not None
    assert 0.0 <= exact.gap < 1e-6
    assert any("do not lower" in n for n in exact.outcome.notes)


def test_optimal_respects_the_move_limit() -> None:
    problem = problem_of(even_cluster({"a": 8, "b": 2}))
    one = plan_optimal(problem, max_moves=1, concurrency=1, time_limit_s=10.0)
    assert len(one.outcome.moves) == 1
    three = plan_optimal(problem, max_moves=3, concurrency=1, time_limit_s=10.0)
    assert len(three.outcome.moves) == 3
    assert three.outcome.imbalance_after < 1e-12  # 5 / 5


def test_optimal_respects_rules_and_headroom() -> None:
    guests = [vm(100, "a", 0.0, 40.0), vm(101, "a", 0.0, 40.0), vm(200, "b", 0.0, 10.0),
              vm(300, "c", 0.0, 10.0)]  # fmt: skip
    rules = [
        Rule("apart", "resource-affinity", ["vm:100", "vm:200"], affinity="negative"),
        Rule("pin", "node-affinity", ["vm:101"], nodes={"a": 0, "b": 0}, strict=True),
    ]
    snap = cluster(["a", "b", "c"], guests, rules=rules)
    exact = plan_optimal(problem_of(snap), max_moves=4, concurrency=1, time_limit_s=10.0)
    placed = {m.sid: m.target for m in exact.outcome.moves}
    assert placed.get("vm:100") != "b"
    assert placed.get("vm:101", "a") in {"a", "b"}
    tight = problem_of(snap, mem_headroom=0.45)
    limited = plan_optimal(tight, max_moves=4, concurrency=1, time_limit_s=10.0)
    assert limited.outcome.moves
    broken = replay_violations(tight, limited.outcome.moves)
    assert [b for b in broken if "did not drop" not in b] == []


def test_optimal_method_is_no_worse_than_greedy_and_reports_its_gap() -> None:
    rng = np.random.default_rng(11)
    for _ in range(3):
        guests = [
            vm(100 + i, "abc"[int(rng.integers(0, 2))], float(rng.uniform(0, 3)),
               float(rng.integers(2, 15)))
            for i in range(14)
        ]  # fmt: skip
        snap = cluster(["a", "b", "c"], guests)
        greedy, _ = run(snap, threshold=1.0, stop_threshold=0.0, max_moves=3)
        exact, _ = run(snap, method="optimal", threshold=1.0, stop_threshold=0.0, max_moves=3)
        assert exact.imbalance_after is not None
        assert greedy.imbalance_after is not None
        assert exact.imbalance_after <= greedy.imbalance_after + 1e-12
        assert exact.optimality_gap is not None
        assert exact.optimality_gap >= 0.0
        assert len(exact.moves) <= 3
        assert math.isfinite(exact.imbalance_after)
