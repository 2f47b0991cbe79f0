"""Consolidation: empty the least-loaded node of a quiet cluster, keeping N+1 headroom."""

from __future__ import annotations

from model import Rule
from tests.test_plan_support import cluster, run, vm


def quiet_guests() -> list:  # type: ignore[type-arg]
    return [
        vm(100, "a", 0.5, 10.0), vm(101, "a", 0.5, 10.0),
        vm(200, "b", 0.5, 10.0), vm(201, "b", 0.5, 10.0),
        vm(300, "c", 0.5, 10.0), vm(301, "c", 0.5, 10.0),
        vm(400, "d", 0.2, 5.0),
    ]  # fmt: skip


def test_quiet_cluster_names_the_least_loaded_node() -> None:
    snap = cluster(list("abcd"), quiet_guests())
    result, state = run(snap, method="consolidate", concurrency=2)
    assert result.triggered
    assert [(m.sid, m.source) for m in result.moves] == [("vm:400", "d")]
    assert result.moves[0].target in {"a", "b", "c"}
    assert any("node d could be powered down after 1 move(s)" in n for n in result.notes)
    assert "vm:400" in state.cooldowns
    assert not state.active


def test_a_guest_that_may_not_move_keeps_its_node_up() -> None:
    guests = quiet_guests()
    guests[-1] = vm(400, "d", 0.2, 5.0, ha=False)  # out of the CRS scope
    snap = cluster(list("abcd"), guests)
    result, _ = run(snap, method="consolidate", scope="crs")
    assert any("d keeps vm:400" in n for n in result.notes)
    assert all(m.source != "d" for m in result.moves)
    assert not any("node d could be powered down" in n for n in result.notes)
    everything, _ = run(snap, method="consolidate", scope="all")
    assert [m.sid for m in everything.moves] == ["vm:400"]


def test_no_consolidation_when_the_remaining_nodes_lack_n_plus_one_headroom() -> None:
    guests = [vm(100 + i, "abc"[i], 0.0, 40.0) for i in range(3)]
    snap = cluster(list("abc"), guests)
    result, _ = run(snap, method="consolidate")
    # emptying any node leaves two at 60 GiB: losing one needs 60 GiB free on the other (30)
    assert result.moves == []
    assert sum("cannot be emptied" in n for n in result.notes) == 3


def test_no_consolidation_when_the_cluster_is_busy() -> None:
    guests = [vm(100 + i, "ab"[i % 2], 3.0, 40.0) for i in range(4)]
    result, _ = run(cluster(["a", "b"], guests), method="consolidate")
    assert not result.triggered
    assert result.moves == []
    assert "not below 30%" in result.reason


def test_strict_rules_keep_a_node_needed() -> None:
    rules = [Rule("pin", "node-affinity", ["vm:400"], nodes={"d": 0}, strict=True)]
    snap = cluster(list("abcd"), quiet_guests(), rules=rules)
    result, _ = run(snap, method="consolidate")
    assert all(m.source != "d" for m in result.moves)
    assert any("vm:400 has no legal target" in n for n in result.notes)
