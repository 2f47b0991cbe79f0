"""crs_round against hand-worked PVE decisions: selection, ties, margin, hold, in-flight, rules."""

import math
from typing import Any

import pytest

from balancer.crs import CrsState, crs_round
from bench.synthetic import GIB, make_guest, make_node
from model import Crs, Rule, Snapshot


def ref_imbalance(loads: list[float]) -> float:
    n = len(loads)
    total = 0.0
    for x in loads:
        total += x
    if n < 2 or total == 0:
        return 0.0
    mean = total / n
    sq = 0.0
    for x in loads:
        sq += (x - mean) ** 2
    return math.sqrt(sq / n) / mean / math.sqrt(n - 1)


def trunc15(x: float) -> float:
    return math.trunc(x * 1e15) / 1e15


def crs(**kw: Any) -> Crs:
    base: dict[str, Any] = {
        "ha": "dynamic",
        "auto_rebalance": True,
        "threshold": 10.0,
        "hold_duration": 0,
        "margin": 10.0,
    }
    base.update(kw)
    return Crs(**base)


def simple(names=("n1", "n2", "n3"), maintenance=None) -> Snapshot:
    """n1 runs two identical guests (1 core, 2 GiB each); the others are empty."""
    nodes = [
        make_node(names[0], 4, 8 * GIB, cpu=2, mem=4 * GIB),
        make_node(names[1], 8, 16 * GIB, cpu=2, mem=4 * GIB),
        make_node(names[2], 4, 8 * GIB, maintenance=maintenance == names[2]),
    ]
    guests = [
        make_guest(101, names[0], 1.0, 2 * GIB),
        make_guest(102, names[0], 1.0, 2 * GIB),
        make_guest(201, names[1], 2.0, 4 * GIB, ha_state=None),
    ]
    return Snapshot(timestamp=0, nodes=nodes, guests=guests)


def test_bruteforce_by_hand_and_sid_tie_break():
    result, _ = crs_round(simple(), crs(), CrsState())
    before = ref_imbalance([0.5, 0.25, 0.0])
    assert result.imbalance == before
    # vm:101 or vm:102 to n3 gives loads 0.25/0.25/0.25 -> 0; identical guests tie -> lower sid
    assert result.triggered
    move = result.moves[0]
    assert (move.sid, move.source, move.target) == ("vm:101", "n1", "n3")
    assert move.imbalance_after == 0.0
    assert [(m.sid, m.target) for m in result.top_moves[:2]] == [("vm:101", "n3"), ("vm:102", "n3")]
    # third best: a guest to n2 -> loads 0.25, (3/8 + 6/16)/2, 0
    assert result.top_moves[2].imbalance_after == trunc15(ref_imbalance([0.25, 0.375, 0.0]))
    assert result.top_moves[2].target == "n2"


def test_sid_ties_compare_as_strings():
    snap = simple()
    snap.guests[0].vmid, snap.guests[0].sid = 200, "vm:200"
    snap.guests[1].vmid, snap.guests[1].sid = 1000, "vm:1000"
    result, _ = crs_round(snap, crs(), CrsState())
    assert result.moves[0].sid == "vm:1000"


def test_target_ties_by_node_name_not_position():
    nodes = [
        make_node("n1", 4, 8 * GIB, cpu=2, mem=4 * GIB),
        make_node("zz", 4, 8 * GIB),
        make_node("aa", 4, 8 * GIB),
    ]
    guests = [make_guest(101, "n1", 1.0, 2 * GIB), make_guest(102, "n1", 1.0, 2 * GIB)]
    result, _ = crs_round(Snapshot(0, nodes, guests), crs(), CrsState())
    assert [(m.sid, m.target) for m in result.top_moves[:4]] == [
        ("vm:101", "aa"),
        ("vm:101", "zz"),
        ("vm:102", "aa"),
        ("vm:102", "zz"),
    ]
    # loads 0.25, 0, 0.25 whichever empty node is chosen
    assert result.moves[0].imbalance_after == trunc15(ref_imbalance([0.25, 0.0, 0.25]))


def test_maintenance_and_offline_nodes_are_never_targets():
    result, _ = crs_round(simple(maintenance="n3"), crs(), CrsState())
    assert {m.target for m in result.top_moves} == {"n2"}
    assert [n.usable for n in result.node_loads] == [True, True, False]


def test_margin_blocks_small_improvements():
    # best: a guest n1 -> n2, loads 0.25, 0.375, 0 (n3 in maintenance)
    before = ref_imbalance([0.5, 0.25, 0.0])
    after = trunc15(ref_imbalance([0.25, 0.375, 0.0]))
    improvement = (before - after) / before
    snap = simple(maintenance="n3")
    result, _ = crs_round(snap, crs(margin=improvement * 100 + 0.1), CrsState())
    assert not result.triggered
    assert "margin" in result.reason
    result, _ = crs_round(snap, crs(margin=improvement * 100 - 0.1), CrsState())
    assert result.triggered
    assert result.imbalance_after == after


def test_threshold_and_hold_duration_over_rounds():
    snap = simple()
    state = CrsState()
    settings = crs(threshold=50.0, hold_duration=3)  # imbalance sqrt(1/3) = 0.577 > 0.5
    decisions = []
    for _ in range(3):
        result, state = crs_round(snap, settings, state)
        decisions.append((result.triggered, result.hold_count))
    assert decisions == [(False, 1), (False, 2), (True, 3)]
    assert state.hold_count == 0
    # a round at or below the threshold resets the count
    result, state2 = crs_round(snap, crs(threshold=60.0, hold_duration=3), CrsState(hold_count=2))
    assert (result.triggered, state2.hold_count) == (False, 0)
    assert "not above threshold" in result.reason


def test_move_in_flight_blocks_until_seen_on_target():
    snap = simple()
    result, state = crs_round(snap, crs(), CrsState())
    assert result.triggered
    assert state.in_flight == {"vm:101": "n3"}
    result, state = crs_round(snap, crs(), state)
    assert not result.triggered
    assert result.reason == "a move is in flight"
    # the migration finished: vm:101 is on n3 and the node usage moved with it
    snap.guests[0].node = "n3"
    snap.nodes[0].cpu, snap.nodes[0].mem = 1, 2 * GIB
    snap.nodes[2].cpu, snap.nodes[2].mem = 1, 2 * GIB
    result, state = crs_round(snap, crs(), state)
    assert state.in_flight == {}
    assert result.imbalance == 0.0
    assert not result.triggered


def test_service_in_migrate_state_blocks_new_moves():
    snap = simple()
    ha = snap.guests[1].ha
    assert ha is not None
    ha.service_state = "migrate"
    result, _ = crs_round(snap, crs(), CrsState())
    assert not result.triggered
    assert result.reason == "a move is in flight"
    assert {m.sid for m in result.top_moves} == {"vm:101"}


def test_auto_rebalance_flag_and_non_ha_guests_are_not_candidates():
    snap = simple()
    ha = snap.guests[0].ha
    assert ha is not None
    ha.auto_rebalance = False
    result, _ = crs_round(snap, crs(), CrsState())
    assert {m.sid for m in result.top_moves} == {"vm:102"}


def test_basic_mode_and_disabled_auto_rebalance_never_move():
    result, state = crs_round(simple(), crs(ha="basic"), CrsState())
    assert not result.triggered
    assert state.hold_count == 0
    assert [n.cpu for n in result.node_loads] == [2, 1, 0]  # running guest counts
    result, _ = crs_round(simple(), crs(auto_rebalance=False), CrsState())
    assert not result.triggered


def test_static_mode_counts_configured_sizes():
    snap = simple()
    result, _ = crs_round(snap, crs(ha="static"), CrsState())
    # n1: 2 x (1 core, 1 GiB) of 4 / 8 GiB; n2: 1 core 1 GiB of 8 / 16 GiB; n3 empty
    loads = [(2 / 4 + 2 / 8) / 2, (1 / 8 + 1 / 16) / 2, 0.0]
    assert [n.load for n in result.node_loads] == pytest.approx(loads, rel=1e-15)
    assert result.imbalance == pytest.approx(ref_imbalance(loads), rel=1e-15)


def test_positive_bundle_moves_together_with_summed_usage():
    snap = simple()
    snap.rules = [Rule("pair", "resource-affinity", ["vm:101", "vm:102"], affinity="positive")]
    result, _ = crs_round(snap, crs(margin=0.0), CrsState())
    moves = {(m.sid, m.target): m for m in result.top_moves}
    assert set(moves) == {("vm:101", "n2"), ("vm:101", "n3")}
    # the bundle (2 cores, 4 GiB) to n2: loads 0, (4/8 + 8/16)/2 = 0.5, 0
    assert moves[("vm:101", "n2")].imbalance_after == trunc15(ref_imbalance([0.0, 0.5, 0.0]))
    assert moves[("vm:101", "n2")].members == ["vm:101", "vm:102"]


def test_negative_and_strict_rules_limit_targets():
    snap = simple()
    snap.guests.append(make_guest(301, "n3", 0.1, 0.1 * GIB))
    snap.nodes[2].cpu, snap.nodes[2].mem = 0.1, 0.1 * GIB
    snap.rules = [
        Rule("apart", "resource-affinity", ["vm:101", "vm:301"], affinity="negative"),
        Rule("stay", "node-affinity", ["vm:102"], nodes={"n1": 1, "n2": 0}, strict=True),
    ]
    result, _ = crs_round(snap, crs(margin=0.0), CrsState())
    pairs = {(m.sid, m.target) for m in result.top_moves}
    assert ("vm:101", "n3") not in pairs
    assert ("vm:102", "n3") not in pairs
    assert ("vm:102", "n2") not in pairs  # preferred = highest priority n1, where it already is
    assert ("vm:101", "n2") in pairs


def test_invalid_rules_reported_in_findings_rest_applies():
    snap = simple()
    snap.rules = [
        Rule("ghost", "resource-affinity", ["vm:101", "vm:999"], affinity="positive"),
        Rule("stay", "node-affinity", ["vm:102"], nodes={"n1": 0}, strict=True),
    ]
    result, _ = crs_round(snap, crs(), CrsState())
    assert any(
        f.kind == "rule-unknown-resource" and "'ghost'" in f.where + f.message
        for f in result.findings
    )
    assert {m.sid for m in result.top_moves} == {"vm:101"}


def test_topsis_matches_reference_by_hand():
    snap = simple()
    result, _ = crs_round(snap, crs(method="topsis"), CrsState())

    # candidates: vm:101/vm:102 to n2/n3; post-move cpu and mem loads are equal here
    def criteria(loads: list[float]) -> list[float]:
        rms = math.sqrt(sum(x * x for x in loads) / len(loads))
        return [1 + rms, 1 + max(loads), 1 + rms, 1 + max(loads)]

    to_n2 = criteria([0.25, 3 / 8, 0.0])
    to_n3 = criteria([0.25, 0.25, 0.25])
    rows = [to_n2, to_n3, to_n2, to_n3]  # (vm:101,n2), (vm:101,n3), (vm:102,n2), (vm:102,n3)
    norms = [math.sqrt(sum(r[j] ** 2 for r in rows)) for j in range(4)]
    weights = [w / 18 for w in (1, 2, 5, 10)]
    scaled = [[r[j] / norms[j] for j in range(4)] for r in rows]
    best = [min(col) for col in zip(*scaled, strict=True)]
    worst = [max(col) for col in zip(*scaled, strict=True)]

    def closeness(r: list[float]) -> float:
        dp = math.sqrt(sum((weights[j] * (r[j] - best[j])) ** 2 for j in range(4)))
        dm = math.sqrt(sum((weights[j] * (r[j] - worst[j])) ** 2 for j in range(4)))
        return dm / (dp + dm)

    assert closeness(scaled[1]) == 1.0
    assert closeness(scaled[0]) == 0.0
    assert result.moves[0].sid == "vm:101"
    assert result.moves[0].target == "n3"
    assert result.moves[0].imbalance_after == 0.0


def test_bad_values_are_reported_not_fatal():
    snap = simple()
    snap.nodes[1].cpu = float("nan")
    snap.guests[0].mem = float("inf")
    result, _ = crs_round(snap, crs(), CrsState())
    assert any("node n2" in note and "node_cpu" in note for note in result.notes)
    assert any("guest vm:101" in note and "guest_mem" in note for note in result.notes)
    assert math.isfinite(result.imbalance)
    result.dumps()  # still valid JSON (no NaN)


def test_resolved_rules_are_cached_until_they_change():
    snap = simple()
    snap.rules = [Rule("stay", "node-affinity", ["vm:102"], nodes={"n1": 0}, strict=True)]
    _, state = crs_round(snap, crs(threshold=90.0), CrsState())
    first = state.ruleset
    _, state = crs_round(snap, crs(threshold=90.0), state)
    assert state.ruleset is first
    snap.rules = []
    result, state = crs_round(snap, crs(), state)
    assert state.ruleset is not first
    assert {m.sid for m in result.top_moves} == {"vm:101", "vm:102"}
