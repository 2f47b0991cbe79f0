"""HA rule resolution: every rule kind, invalid-rule reporting, bundles and node masks."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from balancer.cluster import from_snapshot
from balancer.rules import blocked_nodes, bundle_nodes, resolve_rules
from bench.synthetic import GIB, make_guest, make_node, synthetic_arrays
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


def test_negative_rule_restricted_to_fewer_nodes_than_members_is_dropped():
    # pve-ha-manager rules_cfgs/inconsistent-node-resource-affinity-rules.cfg, cases 2 and 4
    rules = [
        Rule("vm100-on-n1", "node-affinity", ["vm:100"], nodes={"n1": 0}, strict=True),
        Rule("vm101-on-n1", "node-affinity", ["vm:101"], nodes={"n1": 0}, strict=True),
        Rule("apart", "resource-affinity", ["vm:100", "vm:101"], affinity="negative"),
        Rule("vm102-on-n1", "node-affinity", ["vm:102"], nodes={"n1": 0}, strict=True),
        Rule("vm103-on-n2", "node-affinity", ["vm:103"], nodes={"n2": 0}, strict=True),
        Rule("fine", "resource-affinity", ["vm:102", "vm:103"], affinity="negative"),
    ]
    c, rs = resolve(rules)
    assert [(f.kind, f.where) for f in rs.findings] == [
        ("rule-negative-node-affinity", "rules.cfg rule 'apart'"),
        ("rule-negative-node-affinity", "rules.cfg rule 'vm100-on-n1'"),
        ("rule-negative-node-affinity", "rules.cfg rule 'vm101-on-n1'"),
    ]
    assert rs.applied_rules == ["fine", "vm102-on-n1", "vm103-on-n2"]
    assert rs.allowed[bundle_of(c, rs, "vm:100")].all()
    assert rs.neg_bundle.size == 2


# --- property test: the array resolver against a plain per-rule reference -----------------


def reference_resolve(rules: list[Rule], c) -> dict:
    """Plain-Python resolution with the same checks, in the same order."""
    sid_index, node_index = c.sid_index(), c.node_index()
    findings: list[tuple[str, str, str]] = []
    live: dict[str, Rule] = {}
    members: dict[str, list[int]] = {}

    def where(rule: Rule) -> str:
        return f"{rule.origin} rule '{rule.id}'"

    def drop(rid: str, kind: str, message: str) -> None:
        if rid in live:
            findings.append((kind, where(live.pop(rid)), f"rule dropped: {message}"))

    def of(rtype: str, affinity: str | None = None) -> list[str]:
        return [r for r, x in live.items() if x.type == rtype and affinity in (None, x.affinity)]

    for rule in rules:
        if rule.disable:
            continue
        if rule.id in live:
            findings.append(
                ("rule-duplicate-id", where(rule), "duplicate rule id, later one ignored")
            )
            continue
        guests: list[int] = []
        for sid in rule.resources:
            g = sid_index.get(sid)
            if g is None:
                findings.append(
                    ("rule-unknown-resource", where(rule), f"unknown resource {sid} ignored")
                )
            elif not c.guest_ha[g]:
                findings.append(
                    ("rule-resource-not-ha", where(rule), f"{sid} is not HA-managed, ignored")
                )
            elif g not in guests:
                guests.append(g)
        if rule.type == "node-affinity":
            unknown = [n for n in (rule.nodes or {}) if n not in node_index]
            for n in unknown:
                findings.append(("rule-unknown-node", where(rule), f"unknown node {n} ignored"))
            if not guests or len(unknown) == len(rule.nodes or {}):
                findings.append(
                    ("rule-ineffective", where(rule), "no known resource or node, ignored")
                )
                continue
        elif len(guests) < 2:
            findings.append(
                ("rule-ineffective", where(rule), "fewer than two known resources, ignored")
            )
            continue
        live[rule.id] = rule
        members[rule.id] = guests

    holders: dict[int, list[str]] = {}
    for rid in of("node-affinity"):
        for g in members[rid]:
            holders.setdefault(g, []).append(rid)
    for rid in sorted({r for ids in holders.values() if len(ids) > 1 for r in ids}):
        drop(rid, "rule-multiple-node-affinity", "a resource is in several node-affinity rules")
    for rid in of("resource-affinity", "negative"):
        if len(members[rid]) > c.n_nodes:
            msg = f"{len(members[rid])} resources to keep apart on {c.n_nodes} nodes"
            drop(rid, "rule-negative-too-many", msg)
    bad: set[str] = set()
    for neg in of("resource-affinity", "negative"):
        for pos in of("resource-affinity", "positive"):
            if len(set(members[neg]) & set(members[pos])) >= 2:
                bad |= {neg, pos}
    for rid in sorted(bad):
        drop(rid, "rule-affinity-conflict", "positive and negative rule share 2+ resources")
    bad = set()
    for neg in of("resource-affinity", "negative"):
        located: set[int] = set()
        nodes: set[str] = set()
        paired = []
        for na in of("node-affinity"):
            common = set(members[neg]) & set(members[na])
            if common:
                located |= common
                nodes |= {n for n in (live[na].nodes or {}) if n in node_index}
                paired.append(na)
        if len(nodes) < len(located):
            bad |= {neg, *paired}
    for rid in sorted(bad):
        drop(
            rid,
            "rule-negative-node-affinity",
            "resources to keep apart are restricted by node affinity to fewer nodes than resources",
        )

    def groups() -> list[int]:
        label = list(range(c.n_guests))

        def find(x: int) -> int:
            while label[x] != x:
                x = label[x]
            return x

        for rid in of("resource-affinity", "positive"):
            for a, b in zip(members[rid], members[rid][1:], strict=False):
                ra, rb = find(a), find(b)
                label[max(ra, rb)] = min(ra, rb)
        return [find(g) for g in range(c.n_guests)]

    label = groups()
    rules_of: dict[int, set[str]] = {}
    for rid in of("node-affinity"):
        for g in members[rid]:
            rules_of.setdefault(label[g], set()).add(rid)
    conflicted = {grp for grp, ids in rules_of.items() if len(ids) > 1}
    if conflicted:
        for rid in of("resource-affinity", "positive"):
            if label[members[rid][0]] in conflicted:
                drop(
                    rid, "rule-group-node-affinity", "resources are in several node-affinity rules"
                )
        for grp in sorted(conflicted):
            for rid in sorted(rules_of[grp]):
                drop(
                    rid,
                    "rule-group-node-affinity",
                    "a positive group spans several node-affinity rules",
                )
        label = groups()
    for rid in of("resource-affinity", "negative"):
        if len({label[g] for g in members[rid]}) < len(members[rid]):
            drop(rid, "rule-affinity-conflict", "two resources to keep apart must stay together")

    n = c.n_nodes
    pref = {g: [bool(x) for x in c.node_usable] for g in range(c.n_guests)}
    allow = {g: [True] * n for g in range(c.n_guests)}
    for rid in of("node-affinity"):
        rule = live[rid]
        listed = {node_index[k]: p for k, p in (rule.nodes or {}).items() if k in node_index}
        usable = {k: p for k, p in listed.items() if c.node_usable[k]}
        top = max(usable.values(), default=None)
        row_pref = [top is not None and usable.get(i) == top for i in range(n)]
        if top is None and not rule.strict:
            row_pref = [bool(x) for x in c.node_usable]
        row_allow = [not rule.strict or i in listed for i in range(n)]
        for g in range(c.n_guests):
            if label[g] in {label[m] for m in members[rid]}:
                pref[g], allow[g] = row_pref, row_allow
    apart = set()
    for rid in of("resource-affinity", "negative"):
        for a in members[rid]:
            for b in members[rid]:
                if label[a] != label[b]:
                    apart.add((label[a], label[b]))
    return {
        "findings": findings,
        "applied": sorted(live),
        "groups": label,
        "pref": pref,
        "allow": allow,
        "apart": apart,
    }


@st.composite
def rule_sets(draw):
    n_nodes = draw(st.integers(1, 5))
    n_guests = draw(st.integers(1, 10))
    sids = [f"vm:{100 + i}" for i in range(n_guests)] + ["vm:999", "ct:5"]
    names = [f"node{i:04d}" for i in range(n_nodes)] + ["nX"]
    rules = []
    for _ in range(draw(st.integers(0, 9))):
        rid = f"r{draw(st.integers(0, 7))}"
        res = draw(st.lists(st.sampled_from(sids), max_size=4))
        disable = draw(st.integers(0, 9)) == 0
        if draw(st.booleans()):
            nodes = draw(st.dictionaries(st.sampled_from(names), st.integers(0, 2), max_size=3))
            strict = draw(st.booleans())
            rules.append(
                Rule(rid, "node-affinity", res, nodes=nodes, strict=strict, disable=disable)
            )
        else:
            aff = draw(st.sampled_from(["positive", "negative"]))
            rules.append(Rule(rid, "resource-affinity", res, affinity=aff, disable=disable))
    seed = draw(st.integers(0, 1000))
    unusable = draw(st.integers(0, n_nodes - 1))
    not_ha = draw(st.lists(st.integers(0, n_guests - 1), max_size=2))
    return n_nodes, n_guests, seed, unusable, not_ha, rules


@settings(max_examples=300, deadline=None)
@given(rule_sets())
def test_resolver_equals_plain_reference(case):
    n_nodes, n_guests, seed, unusable, not_ha, rules = case
    c = synthetic_arrays(n_nodes, n_guests, seed=seed, unusable_nodes=unusable)
    c.guest_ha[not_ha] = False
    rs = resolve_rules(rules, c)
    ref = reference_resolve(rules, c)
    assert [(f.kind, f.where, f.message) for f in rs.findings] == ref["findings"]
    assert rs.applied_rules == ref["applied"]
    # same partition into bundles
    label = ref["groups"]
    for a in range(n_guests):
        for b in range(n_guests):
            assert (rs.bundle_of[a] == rs.bundle_of[b]) == (label[a] == label[b])
    for g in range(n_guests):
        assert rs.preferred[rs.bundle_of[g]].tolist() == ref["pref"][g]
        assert rs.allowed[rs.bundle_of[g]].tolist() == ref["allow"][g]
    leader_label = {int(rs.bundle_of[g]): label[g] for g in range(n_guests)}
    pairs = {
        (leader_label[int(a)], leader_label[int(b)])
        for a, b in zip(rs.neg_bundle, rs.neg_partner, strict=True)
    }
    assert pairs == ref["apart"]
