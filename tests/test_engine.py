"""The engine entry point: settings, delegation to the CRS, strategies, the result filled in."""

from __future__ import annotations

import json
import math

import pytest

from balancer.crs import CrsState, crs_round
from balancer.engine import decide
from balancer.stability import BalancerState
from balancer.strategies import STRATEGIES, strategy_for
from model import Crs, Rule, Snapshot
from model.plan import RoundResult
from tests.test_plan_support import cluster, even_cluster, options, run, vm


def skewed() -> Snapshot:
    return even_cluster({"a": 8, "b": 2, "c": 2})


def test_result_is_filled_and_serialisable() -> None:
    result, _ = run(skewed(), threshold=10.0)
    assert result.triggered
    assert result.moves
    assert set(result.timings) >= {"rules", "candidates", "triggers", "selection", "total"}
    assert {"selection.scoring", "selection.search", "selection.ordering"} <= set(result.timings)
    assert [n.name for n in result.node_loads] == ["a", "b", "c"]
    assert math.isclose(result.node_loads[0].load, 0.8)
    assert result.imbalance_after == result.moves[-1].imbalance_after
    assert any(n.startswith("efficacy: imbalance") for n in result.notes)
    again = RoundResult.from_json(json.loads(result.dumps()))
    assert again.moves == result.moves


def test_crs_compatible_delegates_to_the_crs_round() -> None:
    snap = skewed()
    snap.crs = Crs(ha="dynamic", auto_rebalance=True, threshold=10.0, hold_duration=0)
    ours, state = run(snap, crs_compatible=True, bandwidth_gib_s=2.0, migration_overhead_s=1.0)
    theirs, crs_state = crs_round(snap, snap.crs, CrsState())
    assert [(m.sid, m.source, m.target) for m in ours.moves] == [
        (m.sid, m.source, m.target) for m in theirs.moves
    ]
    assert [m.imbalance_after for m in ours.moves] == [m.imbalance_after for m in theirs.moves]
    assert ours.moves[0].cost_seconds == 10.0 / 2.0 + 1.0  # 10 GiB over 2 GiB/s, +1 s
    assert ours.imbalance == theirs.imbalance
    assert len(ours.moves) == 1
    assert state.crs_in_flight == crs_state.in_flight


def test_settings_come_from_the_snapshot_crs_without_options() -> None:
    snap = skewed()
    snap.crs = Crs(ha="static", auto_rebalance=True, threshold=20.0, margin=5.0, hold_duration=2,
                   method="topsis")  # fmt: skip
    result, state = decide(snap, None, BalancerState(), now=0.0)
    assert (result.mode, result.method, result.threshold, result.margin) == (
        "static",
        "topsis",
        20.0,
        5.0,
    )
    assert not result.triggered
    assert result.hold_count == 1
    assert state.hold_count == 1


@pytest.mark.parametrize("method", ["bruteforce", "topsis"])
def test_crs_methods_pick_one_legal_move(method: str) -> None:
    # a 40+10+10, b 0, c 40 GiB: moving the 40 GiB guest to b is best (20/40/40) but
    # breaks b's headroom of 35%; a 10 GiB guest is taken instead (ties by sid)
    guests = [vm(100, "a", 0.0, 40.0), vm(101, "a", 0.0, 10.0), vm(102, "a", 0.0, 10.0),
              vm(300, "c", 0.0, 40.0)]  # fmt: skip
    snap = cluster(["a", "b", "c"], guests)
    free, _ = run(snap, method=method, threshold=5.0)
    assert len(free.moves) == 1
    assert free.moves[0].sid == "vm:100"
    limited, _ = run(snap, method=method, threshold=5.0, mem_headroom=0.35)
    assert len(limited.moves) == 1
    assert limited.moves[0].sid == "vm:101"
    assert limited.moves[0].target == "b"
    assert limited.moves[0].reason.startswith(f"crs {method}")
    assert limited.top_moves
    assert all(m.sid != "vm:100" or m.target != "b" for m in limited.top_moves)


def test_margin_drops_a_plan_that_improves_too_little() -> None:
    snap = cluster(["a", "b"], [vm(100, "a", 0.0, 30.0), vm(101, "b", 0.0, 20.0),
                                vm(102, "a", 0.0, 4.0)])  # fmt: skip
    kept, _ = run(snap, threshold=1.0, stop_threshold=0.0, margin=10.0)
    assert kept.moves  # 34/20 -> 30/24: imbalance .259 -> .111
    dropped, _ = run(snap, threshold=1.0, stop_threshold=0.0, margin=70.0)
    assert dropped.moves == []
    assert any("below the margin" in n for n in dropped.notes)


def test_rule_findings_are_reported_in_the_result() -> None:
    rules = [Rule("bad", "resource-affinity", ["vm:100", "vm:404"], affinity="negative")]
    snap = cluster(["a", "b"], [vm(100, "a", 0.0, 30.0)], rules=rules)
    result, _ = run(snap, threshold=10.0)
    assert any("'bad'" in f.where + f.message and "vm:404" in f.message for f in result.findings)


def test_guest_on_an_unknown_node_is_reported() -> None:
    snap = cluster(["a", "b"], [vm(100, "a", 0.0, 30.0)])
    snap.guests.append(vm(101, "ghost", 0.0, 5.0))
    result, _ = run(snap, threshold=10.0)
    assert "vm:101: its node is not in the snapshot; ignored" in result.notes
    assert all(m.sid != "vm:101" for m in result.moves)


def test_every_method_is_a_registered_strategy() -> None:
    assert set(STRATEGIES) == {"greedy", "optimal", "bruteforce", "topsis", "consolidate"}
    assert all(strategy_for(name).name == name for name in STRATEGIES)
    with pytest.raises(KeyError, match="unknown method"):
        strategy_for("random")


def test_options_json_round_trip() -> None:
    opts = options(exclude_tags=["x"], pair_bandwidth_gib_s={"a:b": 2.0})
    assert type(opts).from_json(json.loads(json.dumps(opts.to_json()))) == opts


@pytest.mark.parametrize("crs_compatible", [False, True])
def test_recommend_only_rounds_keep_recommending_the_same_plan(crs_compatible: bool) -> None:
    snap = skewed()
    snap.crs = Crs(ha="dynamic", auto_rebalance=True, threshold=10.0, hold_duration=1)
    opts = options(crs_compatible=crs_compatible, hold_duration=1)
    state = BalancerState()
    plans = []
    for now in (1000.0, 1010.0, 1020.0):
        result, state = decide(snap, opts, state, now, carry_out=False)
        plans.append([(m.sid, m.source, m.target) for m in result.moves])
        assert state.in_flight == {}
        assert state.crs_in_flight == {}
        assert state.cooldowns == {}
    assert plans[0] != []
    assert plans[0] == plans[1] == plans[2]


@pytest.mark.parametrize("crs_compatible", [False, True])
def test_carried_out_moves_are_in_flight_and_not_repeated(crs_compatible: bool) -> None:
    snap = skewed()
    snap.crs = Crs(ha="dynamic", auto_rebalance=True, threshold=10.0, hold_duration=1)
    opts = options(crs_compatible=crs_compatible, hold_duration=1)
    first, state = decide(snap, opts, BalancerState(), 1000.0)
    assert first.moves
    assert state.in_flight or state.crs_in_flight
    second, _ = decide(snap, opts, state, 1010.0)
    assert second.moves == []
