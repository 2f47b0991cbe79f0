"""The greedy multi-move planner: plans, chain collapsing, wave ordering, top moves."""

from __future__ import annotations

import itertools
import math

import numpy as np

from balancer.cluster import from_snapshot
from balancer.planner import Step, collapse, order_in_waves, plan_greedy, replay_violations
from balancer.rules import resolve_rules
from balancer.safety import build_problem
from model import Rule
from tests.test_plan_support import GIB, cluster, even_cluster, options, run, vm


def cv_imbalance(loads: list[float]) -> float:
    n = len(loads)
    mean = sum(loads) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in loads) / n)
    return std / mean / math.sqrt(n - 1)


def test_four_full_nodes_and_an_empty_one_trigger_and_fill_the_empty_node() -> None:
    # nodes a..d: 9 guests of 1 core / 10 GiB on 10 cores / 100 GiB = 90%; e is empty.
    snap = even_cluster({"a": 9, "b": 9, "c": 9, "d": 9, "e": 0})
    result, _ = run(snap, threshold=30.0, concurrency=2)
    assert math.isclose(result.imbalance, 0.25)  # below the 30% threshold on its own
    assert result.triggered
    assert "above 85%" in result.reason
    assert [m.target for m in result.moves] == ["e"] * 4
    assert sorted(m.source for m in result.moves) == ["a", "b", "c", "d"]
    # each of a..d gives one guest: loads .8 x4 and .4
    assert math.isclose(result.imbalance_after or 0.0, cv_imbalance([0.8] * 4 + [0.4]))
    afters = [result.imbalance] + [m.imbalance_after for m in result.moves]
    assert all(b < a for a, b in itertools.pairwise(afters))
    assert [m.rank for m in result.moves] == [1, 2, 3, 4]
    assert [m.reason.split(":")[0] for m in result.moves] == ["wave 1"] * 2 + ["wave 2"] * 2


def test_plan_stops_at_the_stop_level_not_at_the_threshold() -> None:
    snap = even_cluster({"a": 8, "b": 2}, mem_gib=10.0, cpu=1.0)
    # loads .8 / .2 -> imbalance 0.6; stop level 0 means plan until balanced (5 / 5)
    result, _ = run(snap, threshold=10.0, stop_threshold=0.0)
    assert len(result.moves) == 3
    assert result.imbalance_after is not None
    assert result.imbalance_after < 1e-9
    # stop at 30%: one move (.7/.3 -> 0.4) is not enough, two (.6/.4 -> 0.2) are
    result, _ = run(snap, threshold=50.0, stop_threshold=30.0)
    assert len(result.moves) == 2
    assert math.isclose(result.imbalance_after or 0.0, cv_imbalance([0.6, 0.4]))


def test_max_moves_caps_the_plan() -> None:
    snap = even_cluster({"a": 8, "b": 2})
    result, _ = run(snap, threshold=10.0, stop_threshold=0.0, max_moves=1)
    assert len(result.moves) == 1
    assert math.isclose(result.moves[0].imbalance_after, cv_imbalance([0.7, 0.3]))


def test_collapse_merges_chains_and_drops_round_trips() -> None:
    steps = [Step(7, 0, 1), Step(3, 2, 0), Step(7, 1, 2), Step(5, 1, 2), Step(5, 2, 1)]
    assert collapse(steps) == [Step(3, 2, 0), Step(7, 0, 2)]


def test_waves_put_the_move_that_frees_room_first() -> None:
    # b is full (90 of 100 GiB with headroom 90%): x (a->b) needs y (b->c) to go first.
    snap = cluster(
        ["a", "b", "c"],
        [vm(100, "a", 0.0, 20.0), vm(101, "a", 0.0, 30.0), vm(200, "b", 0.0, 20.0),
         vm(201, "b", 0.0, 70.0)],
    )  # fmt: skip
    c = from_snapshot(snap)
    problem, _ = build_problem(snap, c, resolve_rules([], c), options(), "dynamic", set())
    x = c.guest_sids.index("vm:100")
    y = c.guest_sids.index("vm:200")
    given = [Step(x, 0, 1), Step(y, 1, 2)]
    ordered = order_in_waves(problem, given, concurrency=2, require_improvement=False)
    assert ordered is not None
    assert [o.step for o in ordered] == [Step(y, 1, 2), Step(x, 0, 1)]
    assert [o.wave for o in ordered] == [1, 2]  # x may not run alongside y: b is still full


def test_top_moves_rank_single_moves_best_first() -> None:
    snap = cluster(
        ["a", "b"],
        [vm(100, "a", 0.0, 40.0), vm(101, "a", 0.0, 20.0), vm(102, "a", 0.0, 10.0)],
    )
    result, _ = run(snap, threshold=10.0, top_n=3)
    top = result.top_moves
    # moving 40 GiB gives 30/40 (loads .15/.2), 20 GiB gives 50/20, 10 GiB gives 60/10
    assert [m.sid for m in top] == ["vm:100", "vm:101", "vm:102"]
    assert [m.rank for m in top] == [1, 2, 3]
    assert math.isclose(top[0].imbalance_after, cv_imbalance([0.15, 0.20]))
    assert all(m.target == "b" for m in top)


def test_top_moves_are_listed_when_nothing_triggers() -> None:
    snap = even_cluster({"a": 6, "b": 2})  # loads .6 / .2: imbalance 0.5
    result, _ = run(snap, threshold=60.0, top_n=2)
    assert not result.triggered
    assert result.moves == []
    assert result.imbalance_after is None
    # only improving moves are listed: a -> b (5 / 3), never b -> a
    assert [(m.source, m.target) for m in result.top_moves] == [("a", "b"), ("a", "b")]
    assert math.isclose(result.top_moves[0].imbalance_after, cv_imbalance([0.5, 0.3]))


def test_positive_affinity_bundle_moves_together() -> None:
    snap = cluster(
        ["a", "b"],
        [vm(100, "a", 0.0, 20.0), vm(101, "a", 0.0, 20.0), vm(102, "a", 0.0, 40.0)],
        rules=[Rule("pair", "resource-affinity", ["vm:100", "vm:101"], affinity="positive")],
    )
    result, _ = run(snap, threshold=10.0, stop_threshold=0.0)
    assert len(result.moves) == 1
    move = result.moves[0]
    assert sorted(move.members) in (["vm:100", "vm:101"], ["vm:102"])
    assert move.imbalance_after < 1e-9  # 40 / 40 either way
    assert math.isclose(move.gib_moved, 40.0)


def test_plan_replays_cleanly() -> None:
    rng = np.random.default_rng(3)
    guests = [
        vm(
            100 + i,
            "abcd"[int(rng.integers(0, 2))],
            float(rng.uniform(0, 2)),
            float(rng.uniform(1, 12)),
        )
        for i in range(24)
    ]
    snap = cluster(list("abcd"), guests)
    c = from_snapshot(snap)
    rs = resolve_rules([], c)
    problem, _ = build_problem(snap, c, rs, options(), "dynamic", set())
    result, _ = run(snap, threshold=5.0, stop_threshold=0.0, max_moves=12, concurrency=3)
    assert result.moves
    assert replay_violations(problem, result.moves) == []
    guest_mem = {g.sid: (g.mem or 0.0) / GIB for g in snap.guests}
    assert math.isclose(
        sum(m.gib_moved for m in result.moves), sum(guest_mem[m.sid] for m in result.moves)
    )


def test_a_too_large_search_keeps_the_bundles_of_the_most_loaded_nodes() -> None:
    snap = even_cluster({"a": 8, "b": 2, "c": 5})
    c = from_snapshot(snap)
    problem, _ = build_problem(snap, c, resolve_rules([], c), options(), "dynamic", set())
    outcome = plan_greedy(problem, max_moves=3, stop_level=0.0, max_candidates=8 * 3 + 1)
    assert outcome.moves
    assert {m.source for m in outcome.moves} == {"a"}
    assert any(
        "search limited to the 8 movable units on the 1 most loaded" in n for n in outcome.notes
    )
