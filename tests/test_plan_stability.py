"""Triggers, hold counters, hysteresis, cooldowns (no ping-pong), in-flight moves, state."""

from __future__ import annotations

import json
import math

import numpy as np

from balancer.options import BalancerOptions
from balancer.stability import BalancerState, InFlight
from balancer.triggers import evaluate, overloaded_mask
from model import HaConfig, Snapshot
from tests.test_plan_support import cluster, options, run, vm

NAMES = ["a", "b"]
CALM = np.zeros(2, dtype=np.bool_)


def test_imbalance_trigger_waits_for_the_hold_duration() -> None:
    opts = BalancerOptions(threshold=30.0, hold_duration=3)
    hold = 0
    fired = []
    for _ in range(4):
        decision = evaluate(0.4, NAMES, CALM, opts, hold, {}, active=False)
        hold = decision.hold_count
        fired.append(decision.triggered)
    assert fired == [False, False, True, True]
    assert evaluate(0.2, NAMES, CALM, opts, hold, {}, active=False).hold_count == 0


def test_overload_trigger_counts_rounds_per_node() -> None:
    opts = BalancerOptions(threshold=30.0, overload_percent=85.0, overload_hold=2)
    over = overloaded_mask(np.array([0.9, 0.1]), np.array([0.5, 0.1]), np.array([True, True]), 85.0)
    assert over.tolist() == [True, False]
    first = evaluate(0.1, NAMES, over, opts, 0, {}, active=False)
    assert not first.triggered
    assert first.overload_counts == {"a": 1}
    second = evaluate(0.1, NAMES, over, opts, 0, first.overload_counts, active=False)
    assert second.triggered
    assert second.overloaded_nodes == ["a"]
    calm = evaluate(0.1, NAMES, CALM, opts, 0, second.overload_counts, active=False)
    assert calm.overload_counts == {}


def test_hysteresis_keeps_going_until_the_stop_level() -> None:
    opts = BalancerOptions(threshold=30.0, stop_threshold=10.0, hold_duration=0)
    assert not evaluate(0.2, NAMES, CALM, opts, 0, {}, active=False).triggered
    assert evaluate(0.2, NAMES, CALM, opts, 0, {}, active=True).triggered
    assert not evaluate(0.08, NAMES, CALM, opts, 0, {}, active=True).triggered
    assert opts.stop_level == 0.1
    assert BalancerOptions(threshold=30.0).stop_level == 0.3 * 0.6


def ping_pong_snapshots() -> tuple[Snapshot, Snapshot]:
    """Round 1: x (20 GiB) on a is best moved to b. Round 2: load moved so x back is best."""
    first = cluster(["a", "b"], [vm(100, "a", 0.0, 20.0), vm(101, "a", 0.0, 30.0)])
    second = cluster(
        ["a", "b"], [vm(100, "b", 0.0, 20.0), vm(101, "a", 0.0, 5.0), vm(102, "b", 0.0, 30.0)]
    )
    return first, second


def test_cooldown_blocks_ping_pong_until_it_expires() -> None:
    first, second = ping_pong_snapshots()
    r1, state = run(first, threshold=5.0, stop_threshold=0.0, max_moves=1, cooldown_seconds=600)
    assert [(m.sid, m.target) for m in r1.moves] == [("vm:100", "b")]
    assert state.cooldowns == {"vm:100": 1600.0}
    assert state.in_flight["vm:100"].target == "b"
    # 60 s later x has landed on b; moving it back would be the best move, but it cools down
    r2, state2 = run(second, state, now=1060.0, threshold=5.0, stop_threshold=0.0, max_moves=1,
                     cooldown_seconds=600)  # fmt: skip
    assert "vm:100" not in state2.in_flight  # landed on b
    assert r2.moves
    assert r2.moves[0].sid != "vm:100"
    free, _ = run(second, BalancerState(), now=1060.0, threshold=5.0, max_moves=1)
    assert free.moves[0].sid == "vm:100"  # what the cooldown prevented
    # after the cooldown x may move again
    r3, _ = run(second, state, now=1700.0, threshold=5.0, stop_threshold=0.0, max_moves=1)
    assert r3.moves[0].sid == "vm:100"


def test_no_new_plan_while_moves_are_in_flight() -> None:
    first, _ = ping_pong_snapshots()
    state = BalancerState(in_flight={"vm:999": InFlight("a", "b", 990.0)})
    # vm:999 is not in the snapshot: it vanished, so the move counts as landed
    result, after = run(first, state, threshold=5.0)
    assert result.moves
    assert after.in_flight.keys() == {m.sid for m in result.moves}
    state = BalancerState(in_flight={"vm:101": InFlight("a", "b", 990.0)})
    result, after = run(first, state, threshold=5.0)
    assert not result.triggered
    assert "in flight" in result.reason
    assert result.moves == []
    assert "vm:101" in after.in_flight
    # forgotten after the timeout, with a note
    result, after = run(first, state, now=990.0 + 4000.0, threshold=5.0, in_flight_timeout_s=60.0)
    assert any("not seen to land" in n for n in result.notes)
    assert result.moves


def test_ha_services_migrating_count_as_in_flight() -> None:
    snap = cluster(["a", "b"], [vm(100, "a", 0.0, 20.0), vm(101, "a", 0.0, 30.0)])
    moving = snap.guests[1]
    moving.ha = HaConfig(state="started", service_state="migrate", target="b")
    result, state = run(snap, threshold=5.0)
    assert result.moves == []
    assert state.in_flight["vm:101"].target == "b"


def test_state_round_trips_through_json() -> None:
    first, _ = ping_pong_snapshots()
    _, state = run(first, threshold=5.0, max_moves=1)
    state.overload_counts = {"a": 2}
    text = json.dumps(state.to_json())
    again = BalancerState.from_json(json.loads(text))
    assert again == state
    assert isinstance(again.in_flight["vm:100"], InFlight)


def test_hold_counter_is_carried_between_rounds() -> None:
    first, _ = ping_pong_snapshots()
    r1, s1 = run(first, threshold=5.0, hold_duration=2)
    assert not r1.triggered
    assert r1.hold_count == 1
    assert s1.hold_count == 1
    r2, s2 = run(first, s1, threshold=5.0, hold_duration=2)
    assert r2.triggered
    assert r2.moves
    assert s2.hold_count == 0
    assert options().hold_duration == 0


def test_engine_hysteresis_carries_a_trigger_below_the_threshold() -> None:
    # loads .8 / .2 (imbalance 0.6) with one move per round; threshold 50, stop 10
    snap = cluster(["a", "b"], [vm(100 + i, "a" if i < 8 else "b", 1.0, 10.0) for i in range(10)])
    r1, s1 = run(snap, threshold=50.0, stop_threshold=10.0, max_moves=1, cooldown_seconds=0.0)
    assert r1.triggered
    assert math.isclose(r1.imbalance_after or 0.0, 0.4)  # .7 / .3
    assert s1.active
    moved = r1.moves[0].sid
    after = cluster(
        ["a", "b"],
        [vm(100 + i, "b" if i >= 8 or f"vm:{100 + i}" == moved else "a", 1.0, 10.0)
         for i in range(10)],
    )  # fmt: skip
    r2, _ = run(after, s1, now=1100.0, threshold=50.0, stop_threshold=10.0, max_moves=1,
                cooldown_seconds=0.0)  # fmt: skip
    assert math.isclose(r2.imbalance, 0.4)  # below the threshold of 50%
    assert r2.triggered
    assert "hysteresis" in r2.reason
    assert len(r2.moves) == 1
    fresh, _ = run(after, now=1100.0, threshold=50.0, stop_threshold=10.0, max_moves=1)
    assert not fresh.triggered
