"""Safety limits and scope: headroom, cpu cap, rules, exclusions, oversized guests."""

from __future__ import annotations

import math

import pytest

from balancer.options import BalancerOptions
from model import Rule
from tests.test_plan_support import cluster, run, vm


def two_node_case() -> list:  # type: ignore[type-arg]
    # a: 60 + 20 GiB (80%), b: 35 GiB (35%); no cpu, so load = mem / 2.
    return [vm(100, "a", 0.0, 60.0), vm(101, "a", 0.0, 20.0), vm(200, "b", 0.0, 35.0)]


def test_best_move_is_taken_within_the_default_headroom() -> None:
    result, _ = run(cluster(["a", "b"], two_node_case()), threshold=10.0, stop_threshold=0.0)
    assert [(m.sid, m.target) for m in result.moves] == [("vm:101", "b")]  # 60 / 55


def test_headroom_blocks_the_otherwise_best_move() -> None:
    # with 50% headroom b (35 GiB) may not receive the 20 GiB guest: 55 > 50.
    result, _ = run(
        cluster(["a", "b"], two_node_case()), threshold=10.0, stop_threshold=0.0, mem_headroom=0.5
    )
    assert result.triggered
    assert result.moves == []
    assert "no move found" in result.reason
    assert result.top_moves == []


def test_cpu_cap_blocks_a_target() -> None:
    # b would reach 9.5 of 10 cores, above the 90% cap; c (roomier) receives the guest.
    guests = [vm(100, "a", 4.0, 1.0), vm(101, "a", 4.0, 1.0), vm(200, "b", 5.5, 1.0)]
    snap = cluster(["a", "b", "c"], guests, sizes={"c": (8.0, 100.0)})
    result, _ = run(snap, threshold=10.0, stop_threshold=0.0, max_moves=1)
    assert [m.target for m in result.moves] == ["c"]
    result, _ = run(snap, threshold=10.0, stop_threshold=0.0, max_moves=1, cpu_cap=0.3)
    assert result.moves == []


def test_a_guest_larger_than_any_allowed_node_is_reported_not_moved() -> None:
    guests = [vm(100, "a", 0.0, 120.0), vm(101, "a", 0.0, 10.0)]
    snap = cluster(["a", "b", "c"], guests, sizes={"a": (10.0, 200.0)})
    result, _ = run(snap, threshold=10.0, stop_threshold=0.0)
    assert any("vm:100" in n and "not moved" in n for n in result.notes)
    assert all(m.sid != "vm:100" for m in result.moves)
    assert all(m.sid != "vm:100" for m in result.top_moves)


def test_targets_must_be_online_and_not_in_maintenance() -> None:
    guests = [vm(100, "a", 1.0, 30.0), vm(101, "a", 1.0, 30.0)]
    snap = cluster(["a", "b", "c", "d"], guests, offline=["b"], maintenance=["c"])
    result, _ = run(snap, threshold=10.0, stop_threshold=0.0)
    assert result.moves
    assert {m.target for m in result.moves} == {"d"}


def test_strict_node_affinity_keeps_a_guest_on_its_nodes() -> None:
    guests = [vm(100, "a", 0.0, 40.0), vm(101, "a", 0.0, 40.0)]
    rules = [
        Rule("pin", "node-affinity", ["vm:100", "vm:101"], nodes={"a": 0, "b": 0}, strict=True)
    ]
    snap = cluster(["a", "b", "c"], guests, rules=rules, sizes={"c": (10.0, 400.0)})
    result, _ = run(snap, threshold=10.0, stop_threshold=0.0)
    assert result.moves
    assert {m.target for m in result.moves} == {"b"}


def test_negative_affinity_partners_never_share_a_node() -> None:
    guests = [
        vm(100, "a", 0.0, 30.0),
        vm(101, "a", 0.0, 30.0),
        vm(200, "b", 0.0, 5.0),
        vm(300, "c", 0.0, 10.0),
    ]
    rules = [Rule("apart", "resource-affinity", ["vm:100", "vm:200"], affinity="negative")]
    result, _ = run(
        cluster(["a", "b", "c"], guests, rules=rules), threshold=10.0, stop_threshold=0.0
    )
    assert ("vm:100", "b") not in [(m.sid, m.target) for m in result.moves]
    assert result.moves


@pytest.mark.parametrize(
    ("overrides", "kept"),
    [
        ({"exclude_tags": ["pinned"]}, "vm:100"),
        ({"exclude_ids": ["100"]}, "vm:100"),
        ({"exclude_ids": ["vm:100"]}, "vm:100"),
        ({"exclude_pools": ["db"]}, "vm:100"),
    ],
)
def test_exclusions_by_tag_id_and_pool(overrides: dict[str, list[str]], kept: str) -> None:
    guests = [
        vm(100, "a", 0.0, 40.0, tags=["pinned", "x"], pool="db"),
        vm(101, "a", 0.0, 10.0),
        vm(102, "a", 0.0, 10.0),
    ]
    snap = cluster(["a", "b"], guests)
    free, _ = run(snap, threshold=10.0, stop_threshold=0.0, max_moves=1)
    assert [m.sid for m in free.moves] == ["vm:100"]  # 20 / 40 beats 50 / 10
    result, _ = run(snap, threshold=10.0, stop_threshold=0.0, max_moves=1, **overrides)
    assert [m.sid for m in result.moves] == ["vm:101"]
    assert kept not in [m.sid for m in result.top_moves]


def test_containers_move_unless_excluded_and_templates_never_move() -> None:
    guests = [
        vm(200, "a", 0.0, 40.0, kind="lxc"),
        vm(100, "a", 0.0, 40.0, template=True),
        vm(101, "a", 0.0, 10.0),
    ]
    snap = cluster(["a", "b"], guests)
    with_ct, _ = run(snap, threshold=10.0, stop_threshold=0.0)
    assert with_ct.moves[0].sid == "ct:200"
    without, _ = run(snap, threshold=10.0, stop_threshold=0.0, include_containers=False)
    assert [m.sid for m in without.moves] == ["vm:101"]
    assert all(m.sid != "vm:100" for m in with_ct.moves + without.moves)


def test_scope_crs_moves_only_ha_guests_and_all_moves_the_rest_too() -> None:
    guests = [vm(100, "a", 0.0, 40.0, ha=False), vm(101, "a", 0.0, 10.0), vm(102, "a", 0.0, 10.0)]
    snap = cluster(["a", "b"], guests)
    crs, _ = run(snap, threshold=10.0, stop_threshold=0.0, scope="crs", max_moves=1)
    assert [m.sid for m in crs.moves] == ["vm:101"]
    everything, _ = run(snap, threshold=10.0, stop_threshold=0.0, scope="all", max_moves=1)
    assert [m.sid for m in everything.moves] == ["vm:100"]
    no_rebalance = [vm(100, "a", 0.0, 40.0, auto_rebalance=False), vm(101, "a", 0.0, 10.0)]
    opted_out, _ = run(cluster(["a", "b"], no_rebalance), threshold=10.0, scope="all")
    assert "vm:100" not in [m.sid for m in opted_out.moves]


def test_static_mode_limits_count_configured_sizes() -> None:
    # static: a holds 2 x 8 vCPU / 40 GiB configured; b 0. Headroom 90 GiB on b.
    guests = [
        vm(100, "a", 0.5, 5.0, maxcpu=8.0, maxmem_gib=40.0),
        vm(101, "a", 0.5, 5.0, maxcpu=8.0, maxmem_gib=40.0),
    ]
    snap = cluster(["a", "b"], guests, cores=16.0)
    result, _ = run(snap, mode="static", threshold=10.0, stop_threshold=0.0)
    assert len(result.moves) == 1
    assert math.isclose(result.moves[0].imbalance_after, 0.0, abs_tol=1e-12)
    assert math.isclose(result.node_loads[0].mem, 80.0 * 2**30)


def test_invalid_options_are_rejected_with_their_names() -> None:
    problems = BalancerOptions(mem_headroom=1.5, concurrency=0).validate()
    assert any("mem_headroom" in p for p in problems)
    assert any("concurrency" in p for p in problems)
    refused, state = run(cluster(["a", "b"], [vm(100, "a", 1.0, 50.0)]), mem_headroom=2.0,
                         method="magic")  # fmt: skip
    assert not refused.triggered
    assert refused.moves == []
    assert "mem_headroom 2.0 must be in (0, 1]" in refused.reason
    assert "method 'magic' must be one of" in refused.reason
    assert state.hold_count == 0
    with pytest.raises(ValueError, match="unknown balancer options: bogus"):
        BalancerOptions.from_json({"bogus": 1})


def test_a_split_group_still_blocks_every_node_its_members_run_on() -> None:
    # vm:101 (a) and vm:109 (b) should be together but are not: the group cannot move, and
    # vm:100, which must stay apart from vm:109, may not go to b although b is emptiest.
    guests = [vm(100, "a", 0.0, 10.0), vm(101, "a", 0.0, 10.0), vm(102, "a", 0.0, 40.0),
              vm(109, "b", 0.0, 1.0)]  # fmt: skip
    rules = [
        Rule("apart", "resource-affinity", ["vm:100", "vm:109"], affinity="negative"),
        Rule("together", "resource-affinity", ["vm:101", "vm:109"], affinity="positive"),
    ]
    snap = cluster(["a", "b", "c"], guests, rules=rules, sizes={"c": (10.0, 400.0)})
    result, _ = run(snap, threshold=1.0, stop_threshold=0.0)
    assert any("split across nodes" in n for n in result.notes)
    assert ("vm:100", "b") not in [(m.sid, m.target) for m in result.moves]
    assert ("vm:100", "b") not in [(m.sid, m.target) for m in result.top_moves]
    assert all(m.sid not in ("vm:101", "vm:109") for m in result.moves)
