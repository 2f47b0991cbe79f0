"""Evacuation of nodes in maintenance (or offline but still reported running): guests in scope
are moved off first, to legal targets only, whatever the imbalance, margin or cost-benefit."""

from __future__ import annotations

import numpy as np
import pytest

from balancer.cluster import from_snapshot
from balancer.planner import plan_evacuation
from balancer.rules import resolve_rules
from balancer.safety import build_problem, move_violation
from balancer.stability import BalancerState, InFlight
from model import HaConfig, Rule, Snapshot
from model.plan import RoundResult
from tests.test_plan_support import GIB, cluster, options, run, vm


def replay_is_legal(snap: Snapshot, result: RoundResult, **overrides: object) -> None:
    """Every move, replayed in order, passes the safety checks of the same options."""
    c = from_snapshot(snap)
    opts = options(**overrides)
    problem, _ = build_problem(snap, c, resolve_rules(snap.rules, c), opts, opts.mode, set())
    index = {name: i for i, name in enumerate(problem.node_names)}
    bundle_of = {members[0]: b for b, members in enumerate(problem.bundle_members)}
    cpu, mem = problem.node_cpu.copy(), problem.node_mem.copy()
    where = problem.bundle_node.copy()
    for move in result.moves:
        bundle, target = bundle_of[move.sid], index[move.target]
        assert move_violation(problem, cpu, mem, where, bundle, target) is None, move
        source = int(where[bundle])
        cpu[source] -= problem.bundle_cpu[bundle]
        mem[source] -= problem.bundle_mem[bundle]
        cpu[target] += problem.bundle_cpu[bundle]
        mem[target] += problem.bundle_mem[bundle]
        where[bundle] = target


def balanced_with_c_in_maintenance(**kwargs: object) -> Snapshot:
    guests = [
        vm(100, "a", 1.0, 20.0),
        vm(101, "b", 1.0, 20.0),
        vm(102, "c", 1.0, 10.0),
        vm(103, "c", 1.0, 10.0),
    ]
    return cluster(["a", "b", "c"], guests, maintenance=["c"], **kwargs)  # type: ignore[arg-type]


CALM = {"threshold": 90.0, "margin": 99.0, "min_gain_per_gib": 100.0, "hold_duration": 3}


@pytest.mark.parametrize("method", ["greedy", "optimal", "bruteforce", "topsis", "consolidate"])
def test_both_guests_leave_the_maintenance_node_even_when_balanced(method: str) -> None:
    snap = balanced_with_c_in_maintenance()
    result, state = run(snap, method=method, **CALM)
    assert result.triggered
    assert result.reason.startswith("node c in maintenance: 2 guest(s) to evacuate")
    evacuated = [m for m in result.moves if m.source == "c"]
    assert sorted(m.sid for m in evacuated) == ["vm:102", "vm:103"]
    assert {m.target for m in evacuated} <= {"a", "b"}
    assert result.moves[: len(evacuated)] == evacuated  # evacuation first
    assert all("evacuate off c" in m.reason for m in evacuated)
    # the imbalance is over the usable nodes: a and b, 20 GiB each, one 10 GiB guest each
    assert {m.target for m in evacuated} == {"a", "b"}
    replay_is_legal(snap, result, method=method, **CALM)
    assert set(state.in_flight) >= {"vm:102", "vm:103"}
    assert not state.active  # an evacuation alone does not start the hysteresis


def test_maintenance_node_is_left_out_of_the_imbalance() -> None:
    result, _ = run(balanced_with_c_in_maintenance(), **CALM)
    assert result.imbalance == pytest.approx(0.0, abs=1e-12)
    assert [n.usable for n in result.node_loads] == [True, True, False]
    assert result.imbalance_after == pytest.approx(0.0, abs=1e-12)


def test_evacuation_is_forced_even_if_it_raises_the_imbalance() -> None:
    guests = [vm(100, "a", 4.0, 40.0), vm(101, "b", 0.5, 5.0), vm(102, "c", 1.0, 10.0)]
    snap = cluster(["a", "b", "c"], guests, maintenance=["c"])
    result, _ = run(snap, threshold=90.0, margin=50.0)
    # the best target is b (the emptier node): the imbalance drops there
    assert [(m.sid, m.target) for m in result.moves][:1] == [("vm:102", "b")]
    guests = [vm(100, "a", 1.0, 20.0), vm(101, "b", 1.0, 20.0), vm(102, "c", 1.0, 10.0)]
    snap = cluster(["a", "b", "c"], guests, maintenance=["c"])
    result, _ = run(snap, threshold=90.0, margin=50.0)
    assert [m.sid for m in result.moves] == ["vm:102"]
    assert result.imbalance_after is not None
    assert result.imbalance_after > result.imbalance


def test_headroom_holds_and_a_guest_that_fits_nowhere_is_reported() -> None:
    guests = [
        vm(100, "a", 1.0, 44.0),
        vm(101, "b", 1.0, 44.0),
        vm(102, "c", 1.0, 10.0),
        vm(103, "c", 1.0, 4.0),
    ]
    snap = cluster(["a", "b", "c"], guests, maintenance=["c"])
    result, _ = run(snap, mem_headroom=0.5, **CALM)
    assert [(m.sid, m.source) for m in result.moves] == [("vm:103", "c")]
    replay_is_legal(snap, result, mem_headroom=0.5, **CALM)
    blocked = [f for f in result.findings if f.kind == "evacuation-blocked"]
    assert [f.where for f in blocked] == ["vm:102"]
    assert "vm:102" in blocked[0].message
    assert " c " in blocked[0].message
    assert any(n.startswith("evacuation blocked: vm:102") for n in result.notes)


def test_strict_node_affinity_is_respected() -> None:
    guests = [vm(100, "a", 1.0, 30.0), vm(101, "c", 1.0, 10.0), vm(102, "c", 1.0, 10.0)]
    rules = [
        Rule("pin", "node-affinity", ["vm:101"], nodes={"a": 0, "c": 0}, strict=True),
        Rule("home", "node-affinity", ["vm:102"], nodes={"c": 0}, strict=True),
    ]
    snap = cluster(["a", "b", "c"], guests, rules=rules, maintenance=["c"])
    result, _ = run(snap, **CALM)
    assert [(m.sid, m.target) for m in result.moves] == [("vm:101", "a")]  # b is emptier
    assert [f.where for f in result.findings if f.kind == "evacuation-blocked"] == ["vm:102"]


def test_negative_affinity_partners_are_split_over_targets() -> None:
    guests = [vm(100, "c", 1.0, 10.0), vm(101, "c", 1.0, 10.0), vm(102, "a", 0.0, 1.0)]
    rules = [Rule("apart", "resource-affinity", ["vm:100", "vm:101"], affinity="negative")]
    snap = cluster(["a", "b", "c", "d"], guests, rules=rules, maintenance=["c", "d"])
    result, _ = run(snap, **CALM)
    assert {m.target for m in result.moves} == {"a", "b"}
    replay_is_legal(snap, result, **CALM)


def test_containers_stay_when_excluded() -> None:
    guests = [vm(100, "a", 1.0, 20.0), vm(101, "c", 1.0, 10.0), vm(102, "c", 1.0, 10.0, kind="lxc")]
    snap = cluster(["a", "b", "c"], guests, maintenance=["c"])
    result, _ = run(snap, include_containers=False, **CALM)
    assert result.reason.startswith("node c in maintenance: 1 guest(s) to evacuate")
    assert [m.sid for m in result.moves] == ["vm:101"]
    result, _ = run(snap, include_containers=True, **CALM)
    assert sorted(m.sid for m in result.moves) == ["ct:102", "vm:101"]


def test_crs_scope_leaves_non_ha_guests_and_nothing_triggers_without_evacuees() -> None:
    guests = [vm(100, "a", 1.0, 20.0), vm(101, "c", 1.0, 10.0, ha=False)]
    snap = cluster(["a", "b", "c"], guests, maintenance=["c"])
    result, _ = run(snap, scope="crs", **CALM)
    assert not result.triggered
    assert not result.moves
    result, _ = run(snap, scope="all", **CALM)
    assert [m.sid for m in result.moves] == ["vm:101"]


def test_ha_resource_already_migrating_is_left_alone() -> None:
    moving = vm(100, "c", 1.0, 10.0)
    moving.ha = HaConfig("started", service_state="migrate", target="a")
    plain = vm(101, "c", 1.0, 10.0, ha=False)
    snap = cluster(["a", "b", "c"], [moving, plain], maintenance=["c"])
    c = from_snapshot(snap)
    opts = options(scope="all")
    problem, _ = build_problem(snap, c, resolve_rules([], c), opts, "dynamic", set())
    by_sid = {m[0]: b for b, m in enumerate(problem.bundle_members)}
    assert not problem.bundle_evacuate[by_sid["vm:100"]]
    assert problem.bundle_evacuate[by_sid["vm:101"]]
    # the HA manager's move is in flight: no new plan until it has landed
    result, state = run(snap, scope="all", **CALM)
    assert not result.moves
    assert "in flight" in result.reason
    landed = vm(100, "a", 1.0, 10.0)
    snap = cluster(["a", "b", "c"], [landed, plain], maintenance=["c"])
    result, _ = run(snap, state, scope="all", **CALM)
    assert [m.sid for m in result.moves] == ["vm:101"]


def test_moves_in_flight_and_cooldowns_still_hold() -> None:
    snap = balanced_with_c_in_maintenance()
    busy = BalancerState(in_flight={"vm:100": InFlight("a", "b", 990.0)})
    result, _ = run(snap, busy, **CALM)
    assert not result.triggered
    assert not result.moves
    cooling = BalancerState(cooldowns={"vm:102": 5000.0})
    result, _ = run(snap, cooling, **CALM)
    assert result.reason.startswith("node c in maintenance: 1 guest(s) to evacuate")
    assert [m.sid for m in result.moves] == ["vm:103"]


def test_engine_triggers_at_once_despite_the_hold_duration() -> None:
    snap = balanced_with_c_in_maintenance()
    result, state = run(snap, hold_duration=3, threshold=1.0)
    assert result.triggered
    assert len(result.moves) >= 2
    assert result.hold_count == 0  # balanced usable nodes: nothing held
    assert state.hold_count == 0


def test_offline_node_still_reporting_guests_is_evacuated() -> None:
    snap = balanced_with_c_in_maintenance()
    snap.nodes[2].maintenance = False
    snap.nodes[2].online = False
    result, _ = run(snap, **CALM)
    assert result.reason.startswith("node c offline: 2 guest(s) to evacuate")
    assert sorted(m.sid for m in result.moves) == ["vm:102", "vm:103"]


def test_evacuation_may_exceed_max_moves_and_balancing_gets_the_rest() -> None:
    guests = [vm(100 + i, "c", 0.5, 5.0) for i in range(3)]
    guests += [vm(110 + i, "a", 1.0, 10.0) for i in range(6)]
    snap = cluster(["a", "b", "c"], guests, maintenance=["c"])
    result, _ = run(snap, max_moves=1, stop_threshold=0.0)
    assert len(result.moves) == 3  # max_moves raised to the 3 evacuees, nothing left over
    assert all(m.source == "c" for m in result.moves)
    result, _ = run(snap, max_moves=5, stop_threshold=0.0)
    assert len(result.moves) == 5
    assert [m.source for m in result.moves[:3]] == ["c", "c", "c"]
    assert [m.source for m in result.moves[3:]] == ["a", "a"]  # balancing, 2 left
    assert [m.rank for m in result.moves] == [1, 2, 3, 4, 5]
    replay_is_legal(snap, result, max_moves=5, stop_threshold=0.0)


def test_margin_drops_only_the_balancing_part() -> None:
    guests = [vm(100, "c", 0.5, 5.0)] + [vm(110 + i, "a", 1.0, 10.0) for i in range(3)]
    guests.append(vm(120, "b", 1.0, 10.0))
    snap = cluster(["a", "b", "c"], guests, maintenance=["c"])
    result, _ = run(snap, margin=99.9, threshold=1.0, stop_threshold=0.0)
    assert [m.sid for m in result.moves] == ["vm:100"]
    assert any("below the margin" in n for n in result.notes)


def test_waves_follow_concurrency_and_evacuation_comes_first() -> None:
    guests = [vm(100 + i, "c", 0.5, 5.0) for i in range(3)]
    snap = cluster(["a", "b", "c"], guests, maintenance=["c"])
    c = from_snapshot(snap)
    problem, _ = build_problem(snap, c, resolve_rules([], c), options(), "dynamic", set())
    evac = plan_evacuation(problem, concurrency=2)
    assert [item.wave for item in evac.ordered] == [1, 1, 2]
    assert evac.blocked == []
    assert not evac.problem.bundle_movable[np.flatnonzero(problem.bundle_evacuate)].any()
    assert evac.problem.node_mem[2] == pytest.approx(0.0)
    assert evac.problem.node_mem[:2].sum() == pytest.approx(15.0 * GIB)
