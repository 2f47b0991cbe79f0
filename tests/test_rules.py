"""HA rule resolution: every rule kind, invalid-rule reporting, bundles and node masks."""

import numpy as np

from balancer.cluster import from_snapshot
from balancer.rules import blocked_nodes, bundle_nodes, resolve_rules
from bench.synthetic import GIB, make_guest, make_node
from model import Rule, Snapshot


def cluster(maintenance: str | None = None, offline: str | None = None) -> Snapshot:
    nodes = [
        make_node(name, 8, 32 * GIB, online=name != offline, maintenance=name == maintenance)
        for name in ("n1", "n2", "n3", "n4")
    ]
    guests = [make_guest(100 + i, f"n{1 + i % 4}", 1.0, GIB) for i in range(8)]
    guests.append(make_guest(900, "n1", 1.0, GIB, ha_state=None))
    return Snapshot(timestamp=0, nodes=nodes, guests=guests)


def row(mask: np.ndarray) -> list[str]:
    return [f"n{i + 1}" for i in np.flatnonzero(mask)]


def resolve(rules: list[Rule], **kw):
    snap = cluster(**kw)
    c = from_snapshot(snap)
    return c, resolve_rules(rules, c)


def bundle_of(c, rs, sid: str) -> int:
    return int(rs.bundle_of[c.sid_index()[sid]])


def test_no_rules_every_guest_alone_and_free():
    c, rs = resolve([])
    assert rs.n_bundles == c.n_guests
    assert rs.preferred.all()
    assert rs.allowed.all()
    assert rs.findings == []
    assert not rs.constrained.any()


def test_strict_node_affinity_uses_top_online_priority():
    rule = Rule("na", "node-affinity", ["vm:100"], nodes={"n2": 2, "n3": 2, "n4": 1}, strict=True)
    c, rs = resolve([rule])
    b = bundle_of(c, rs, "vm:100")
    assert row(rs.preferred[b]) == ["n2", "n3"]
    assert row(rs.allowed[b]) == ["n2", "n3", "n4"]
    # with both top-priority nodes unusable the next priority becomes preferred
    c, rs = resolve([rule], maintenance="n2", offline="n3")
    assert row(rs.preferred[bundle_of(c, rs, "vm:100")]) == ["n4"]


def test_non_strict_node_affinity_falls_back_to_other_nodes():
    rule = Rule("na", "node-affinity", ["vm:101"], nodes={"n3": 0}, strict=False)
    c, rs = resolve([rule])
    b = bundle_of(c, rs, "vm:101")
    assert row(rs.preferred[b]) == ["n3"]
    assert rs.allowed[b].all()
    c, rs = resolve([rule], offline="n3")
    assert row(rs.preferred[bundle_of(c, rs, "vm:101")]) == ["n1", "n2", "n4"]


def test_strict_rule_with_no_usable_node_leaves_nowhere():
    rule = Rule("na", "node-affinity", ["vm:101"], nodes={"n3": 0}, strict=True)
    c, rs = resolve([rule], maintenance="n3")
    assert row(rs.preferred[bundle_of(c, rs, "vm:101")]) == []


def test_connected_positive_rules_merge_and_inherit_node_affinity():
    rules = [
        Rule("p1", "resource-affinity", ["vm:100", "vm:101"], affinity="positive"),
        Rule("p2", "resource-affinity", ["vm:101", "vm:102"], affinity="positive"),
        Rule("na", "node-affinity", ["vm:102"], nodes={"n4": 0}, strict=True),
    ]
    c, rs = resolve(rules)
    b = bundle_of(c, rs, "vm:100")
    assert bundle_of(c, rs, "vm:101") == b == bundle_of(c, rs, "vm:102")
    assert sorted(c.guest_sids[g] for g in rs.members(b)) == ["vm:100", "vm:101", "vm:102"]
    assert c.guest_sids[rs.bundle_leader[b]] == "vm:100"
    assert rs.n_bundles == c.n_guests - 2
    assert row(rs.preferred[b]) == ["n4"]


def test_negative_rule_blocks_partner_nodes():
    rule = Rule("apart", "resource-affinity", ["vm:100", "vm:101", "vm:102"], affinity="negative")
    c, rs = resolve([rule])
    blocked = blocked_nodes(rs, bundle_nodes(rs, c.guest_node))
    # vm:100 on n1, vm:101 on n2, vm:102 on n3
    assert row(blocked[bundle_of(c, rs, "vm:100")]) == ["n2", "n3"]
    assert row(blocked[bundle_of(c, rs, "vm:102")]) == ["n1", "n2"]
    assert not blocked[bundle_of(c, rs, "vm:103")].any()


def test_disabled_rules_are_ignored():
    rule = Rule("off", "resource-affinity", ["vm:100", "vm:101"], affinity="positive", disable=True)
    c, rs = resolve([rule])
    assert bundle_of(c, rs, "vm:100") != bundle_of(c, rs, "vm:101")
    assert rs.findings == []


def test_unknown_and_non_ha_sids_reported_and_ignored():
    rule = Rule(
        "p", "resource-affinity", ["vm:100", "vm:101", "vm:4242", "vm:900"], affinity="positive"
    )
    c, rs = resolve([rule])
    kinds = sorted(f.kind for f in rs.findings)
    assert kinds == ["rule-resource-not-ha", "rule-unknown-resource"]
    assert all("'p'" in f.where for f in rs.findings)
    assert any("vm:4242" in f.message for f in rs.findings)
    assert bundle_of(c, rs, "vm:100") == bundle_of(c, rs, "vm:101")


def test_resource_in_two_node_affinity_rules_drops_both():
    rules = [
        Rule("a", "node-affinity", ["vm:100"], nodes={"n2": 0}, strict=True),
        Rule("b", "node-affinity", ["vm:100", "vm:101"], nodes={"n3": 0}, strict=True),
        Rule("c", "node-affinity", ["vm:102"], nodes={"n4": 0}, strict=True),
    ]
    c, rs = resolve(rules)
    dropped = sorted(f.where for f in rs.findings if f.kind == "rule-multiple-node-affinity")
    assert dropped == ["rules.cfg rule 'a'", "rules.cfg rule 'b'"]
    assert rs.allowed[bundle_of(c, rs, "vm:100")].all()
    assert row(rs.preferred[bundle_of(c, rs, "vm:102")]) == ["n4"]
    assert rs.applied_rules == ["c"]


def test_negative_rule_with_more_members_than_nodes_is_dropped():
    rule = Rule(
        "wide", "resource-affinity", [f"vm:{100 + i}" for i in range(5)], affinity="negative"
    )
    _, rs = resolve([rule])
    assert [(f.kind, f.where) for f in rs.findings] == [
        ("rule-negative-too-many", "rules.cfg rule 'wide'")
    ]
    assert rs.neg_bundle.size == 0


def test_positive_and_negative_sharing_two_resources_are_both_dropped():
    rules = [
        Rule("together", "resource-affinity", ["vm:100", "vm:101", "vm:102"], affinity="positive"),
        Rule("apart", "resource-affinity", ["vm:100", "vm:101"], affinity="negative"),
        Rule("fine", "resource-affinity", ["vm:103", "vm:104"], affinity="negative"),
    ]
    c, rs = resolve(rules)
    assert sorted(f.where for f in rs.findings) == [
        "rules.cfg rule 'apart'",
        "rules.cfg rule 'together'",
    ]
    assert bundle_of(c, rs, "vm:100") != bundle_of(c, rs, "vm:101")
    assert rs.applied_rules == ["fine"]
    assert rs.neg_bundle.size == 2


def test_positive_group_across_two_node_affinity_rules_is_dropped():
    rules = [
        Rule("together", "resource-affinity", ["vm:100", "vm:101"], affinity="positive"),
        Rule("na1", "node-affinity", ["vm:100"], nodes={"n1": 0}),
        Rule("na2", "node-affinity", ["vm:101"], nodes={"n2": 0}),
    ]
    c, rs = resolve(rules)
    assert sorted(f.where for f in rs.findings) == [
        "rules.cfg rule 'na1'",
        "rules.cfg rule 'na2'",
        "rules.cfg rule 'together'",
    ]
    assert bundle_of(c, rs, "vm:100") != bundle_of(c, rs, "vm:101")


def test_legacy_group_rule_behaves_like_node_affinity():
    rule = Rule(
        "grp",
        "node-affinity",
        ["vm:105"],
        nodes={"n1": 1, "n2": 1},
        strict=True,
        origin="groups.cfg",
    )
    c, rs = resolve([rule])
    assert row(rs.preferred[bundle_of(c, rs, "vm:105")]) == ["n1", "n2"]
    bad = Rule("grp2", "node-affinity", ["vm:105"], nodes={"nX": 1}, origin="groups.cfg")
    _, rs = resolve([bad])
    assert {f.kind for f in rs.findings} == {"rule-unknown-node", "rule-ineffective"}
    assert all(f.where == "groups.cfg rule 'grp2'" for f in rs.findings)


def test_split_partner_group_blocks_every_member_node():
    rules = [
        Rule("together", "resource-affinity", ["vm:101", "vm:102"], affinity="positive"),
        Rule("apart", "resource-affinity", ["vm:100", "vm:102"], affinity="negative"),
    ]
    c, rs = resolve(rules)
    # vm:101 (leader) on n2, vm:102 on n3: vm:100 must avoid both
    with_members = blocked_nodes(rs, bundle_nodes(rs, c.guest_node), c.guest_node)
    assert row(with_members[bundle_of(c, rs, "vm:100")]) == ["n2", "n3"]
    leader_only = blocked_nodes(rs, bundle_nodes(rs, c.guest_node))
    assert row(leader_only[bundle_of(c, rs, "vm:100")]) == ["n2"]
