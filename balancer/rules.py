"""HA rules resolved into per-bundle placement masks, the way the PVE HA manager applies them.

Semantics (pve-ha-manager ``PVE::HA::Rules``, ``Rules/NodeAffinity.pm``,
``Rules/ResourceAffinity.pm`` and the ``src/test/rules_cfgs/*.expect`` logs):

- disabled rules are ignored; sids that are not in the snapshot or not HA-managed are reported
  and left out of the rule; node names not in the cluster are reported and left out;
- a resource-affinity rule with fewer than two resources is ineffective and dropped;
- a resource in more than one node-affinity rule: every node-affinity rule involved is dropped;
- a negative rule with more resources than the cluster has nodes is dropped;
- a positive and a negative rule sharing two or more resources: both are dropped;
- connected positive rules merge into one group (a *bundle*) that moves as one; when the
  members of a group are in more than one node-affinity rule, the group's positive rules and
  those node-affinity rules are dropped (as in ``inconsistent-node-resource-affinity-rules``);
  a group inherits the node-affinity rule of any member (``infer-node-affinity-for-positive``);
- a negative rule with two members in the same bundle is contradictory and dropped;
- (checked before grouping) a negative rule whose members in node-affinity rules are
  restricted by those rules to fewer nodes (the union of their listed nodes) than such
  members: the negative rule and those node-affinity rules are dropped (PVE ``Rules.pm``
  ``check_negative_resource_affinity_node_affinity_consistency``, case 4 of
  ``inconsistent-node-resource-affinity-rules.cfg``; PVE counts strict and non-strict
  node-affinity rules alike, and so do we).

Every dropped rule becomes a :class:`model.Finding` naming the rule id; the rest still applies.
The checks run one after the other on the surviving rules (PVE runs them all on the same set).
Not reproduced: PVE's ``check_single_priority_node_affinity_in_resource_affinity_rules``
(resource-affinity members in a node-affinity rule with several priorities).

Every rule is flattened once into index arrays (members, nodes, priorities); the checks,
the positive groups (``scipy.sparse.csgraph.connected_components``) and the node masks are
array operations, so only reported rules cost per-rule Python work.

Node affinity per bundle: a strict rule allows only its listed nodes; the *preferred* nodes are
the usable (online, not in maintenance) listed nodes of the highest priority present; a
non-strict rule with no usable listed node falls back to every other usable node (priority -1).
Every guest is in exactly one bundle (singletons included); the bundle's leader is its
lexicographically smallest sid, which is the sid PVE's tie-break compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import attrgetter, itemgetter

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from balancer.cluster import I64, Bool, ClusterArrays
from model import Finding, Rule


@dataclass(slots=True)
class RuleSet:
    bundle_of: I64
    """Bundle id of each guest."""
    bundle_ptr: I64
    """CSR row pointers: bundle b's guests are bundle_guests[bundle_ptr[b]:bundle_ptr[b+1]]."""
    bundle_guests: I64
    bundle_leader: I64
    """Guest index of each bundle's smallest sid."""
    preferred: Bool
    """[b, n] nodes the bundle may be moved to per node affinity (usable nodes only).

    Read-only (a broadcast view when there is no node-affinity rule); index it, never write."""
    allowed: Bool
    """[b, n] nodes a strict rule allows at all (all True without a strict rule)."""
    neg_bundle: I64
    """Negative-affinity pairs, both directions: neg_bundle[i] must avoid neg_partner[i]."""
    neg_partner: I64
    constrained: Bool
    """[b] the bundle has a node-affinity rule or negative partners."""
    findings: list[Finding] = field(default_factory=list)
    applied_rules: list[str] = field(default_factory=list)

    @property
    def n_bundles(self) -> int:
        return int(self.bundle_ptr.size - 1)

    def members(self, bundle: int) -> I64:
        return self.bundle_guests[self.bundle_ptr[bundle] : self.bundle_ptr[bundle + 1]]


def _where(rule: Rule) -> str:
    return f"{rule.origin} rule '{rule.id}'"


_KIND_NODE, _KIND_POS, _KIND_NEG, _KIND_OTHER = 0, 1, 2, 3
_RA_KIND = {"positive": _KIND_POS, "negative": _KIND_NEG}


_KIND_OF = {
    **{("node-affinity", a): _KIND_NODE for a in (None, "positive", "negative")},
    ("resource-affinity", "positive"): _KIND_POS,
    ("resource-affinity", "negative"): _KIND_NEG,
}
_TYPE_AFFINITY = attrgetter("type", "affinity")
_RESOURCES = attrgetter("resources")


def _or_empty(nodes: dict[str, int] | None) -> dict[str, int]:
    return {} if nodes is None else nodes


def _unique(keys: I64) -> I64:
    """Sorted distinct values (a sort and a compare: np.unique's hash path is slower here)."""
    ordered = np.sort(keys)
    if ordered.size < 2:
        return ordered
    keep = np.empty(ordered.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _unique_counts(keys: I64) -> tuple[I64, I64]:
    """Sorted distinct values and how often each occurs."""
    ordered = np.sort(keys)
    keep = np.ones(ordered.size, dtype=np.bool_)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    starts = np.flatnonzero(keep)
    return ordered[starts], np.diff(np.append(starts, ordered.size))


def _first_of_each(keys: I64) -> I64:
    """Position of the first occurrence of each distinct value, in value order."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    keep = np.ones(ordered.size, dtype=np.bool_)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return order[keep]


def _expand(starts: I64, counts: I64) -> I64:
    """Concatenated ranges starts[i] .. starts[i] + counts[i] - 1."""
    total = int(counts.sum())
    offsets = np.arange(total, dtype=np.int64)
    offsets -= np.repeat(np.cumsum(counts) - counts, counts)
    offsets += np.repeat(starts, counts)
    return offsets


class _Resolver:
    """Every rule flattened once into index arrays; the checks are array operations.

    ``e_rule``/``e_guest``: one entry per (admitted rule, distinct known HA member), in rule
    order; ``n_rule``/``n_node``/``n_prio``: one entry per (node-affinity rule, known node).
    ``alive`` marks the rules still applied; only rules that are reported cost Python work.
    """

    def __init__(self, rules: list[Rule], c: ClusterArrays) -> None:
        self.c = c
        self.findings: list[Finding] = []
        enabled = [rule for rule in rules if not rule.disable]
        self.rules = enabled
        r = len(enabled)
        self.ids: list[str] = list(map(attrgetter("id"), enabled))
        self.kind = np.fromiter(
            map(_KIND_OF.get, map(_TYPE_AFFINITY, enabled), repeat(_KIND_OTHER)),
            dtype=np.int64,
            count=r,
        )
        sid_index = c.sid_index() if enabled else {}
        node_index = c.node_index()
        m = c.n_guests

        # Members: flatten, map to guest indices, keep known HA ones, first occurrence per rule.
        lens = np.fromiter(map(len, map(_RESOURCES, enabled)), np.int64, count=r)
        flat: list[str] = list(chain.from_iterable(map(_RESOURCES, enabled)))
        gidx = np.fromiter(map(sid_index.get, flat, repeat(-1)), np.int64, count=len(flat))
        entry_rule = np.repeat(np.arange(r, dtype=np.int64), lens)
        known = gidx >= 0
        is_ha = known.copy()
        is_ha[known] = c.guest_ha[gidx[known]]
        ok = np.flatnonzero(is_ha)
        ok = ok[np.sort(_first_of_each(entry_rule[ok] * max(m, 1) + gidx[ok]))]
        v_rule, v_guest = entry_rule[ok], gidx[ok]
        count = np.bincount(v_rule, minlength=r)

        # Node-affinity nodes: flatten the node dicts of node-affinity rules once.
        na = np.flatnonzero(self.kind == _KIND_NODE)
        node_dicts = (
            list(map(_or_empty, map(attrgetter("nodes"), itemgetter(*na.tolist())(enabled))))
            if na.size > 1
            else [_or_empty(enabled[i].nodes) for i in na.tolist()]
        )
        n_lens = np.fromiter(map(len, node_dicts), np.int64, count=na.size)
        names = list(chain.from_iterable(node_dicts))
        prios = np.fromiter(
            chain.from_iterable(map(dict.values, node_dicts)), np.int64, count=len(names)
        )
        nidx = np.fromiter(map(node_index.get, names, repeat(-1)), np.int64, count=len(names))
        n_rule_all = np.repeat(na, n_lens)
        n_known = nidx >= 0
        known_nodes = np.bincount(n_rule_all[n_known], minlength=r)

        effective = count >= 2
        effective[na] = (count[na] > 0) & (known_nodes[na] > 0)
        dup = np.zeros(r, dtype=np.bool_)
        if len(set(self.ids)) != r:
            admitted_ids: set[str] = set()
            for i, rid in enumerate(self.ids):
                if rid in admitted_ids:
                    dup[i] = True
                elif effective[i]:
                    admitted_ids.add(rid)
        self.alive = effective & ~dup
        self._admission_findings(
            dup, effective, entry_rule, flat, known, is_ha, n_rule_all, names, n_known
        )

        keep = self.alive[v_rule]
        self.e_rule, self.e_guest = v_rule[keep], v_guest[keep]
        self.count = count
        self.n_rule, self.n_node, self.n_prio = (
            n_rule_all[n_known],
            nidx[n_known],
            prios[n_known],
        )

    def _admission_findings(
        self,
        dup: Bool,
        effective: Bool,
        entry_rule: I64,
        flat: list[str],
        known: Bool,
        is_ha: Bool,
        n_rule: I64,
        names: list[str],
        n_known: Bool,
    ) -> None:
        """Findings of rule admission, in rule order then member, node, ineffective order."""
        found: list[tuple[int, int, int, Finding]] = []
        for i in np.flatnonzero(dup).tolist():
            rule = self.rules[i]
            found.append((i, 0, 0, self._finding(rule, "rule-duplicate-id", _DUP, "error")))
        for pos in np.flatnonzero(~is_ha & ~dup[entry_rule]).tolist():
            rule, sid = self.rules[int(entry_rule[pos])], flat[pos]
            if known[pos]:
                f = self._finding(rule, "rule-resource-not-ha", f"{sid} is not HA-managed, ignored")
            else:
                f = self._finding(rule, "rule-unknown-resource", f"unknown resource {sid} ignored")
            found.append((int(entry_rule[pos]), 1, pos, f))
        for pos in np.flatnonzero(~n_known & ~dup[n_rule]).tolist():
            i = int(n_rule[pos])
            f = self._finding(
                self.rules[i], "rule-unknown-node", f"unknown node {names[pos]} ignored"
            )
            found.append((i, 2, pos, f))
        for i in np.flatnonzero(~effective & ~dup).tolist():
            rule = self.rules[i]
            message = (
                "no known resource or node, ignored"
                if self.kind[i] == _KIND_NODE
                else "fewer than two known resources, ignored"
            )
            found.append((i, 3, 0, self._finding(rule, "rule-ineffective", message)))
        found.sort(key=lambda item: item[:3])
        self.findings.extend(item[3] for item in found)

    @staticmethod
    def _finding(rule: Rule, kind: str, message: str, severity: str = "warning") -> Finding:
        return Finding(kind, _where(rule), message, severity)  # type: ignore[arg-type]

    def drop(self, rule: int, kind: str, message: str) -> None:
        if self.alive[rule]:
            self.alive[rule] = False
            self.findings.append(
                self._finding(self.rules[rule], kind, f"rule dropped: {message}", "error")
            )

    def drop_sorted(self, rules: I64, kind: str, message: str) -> None:
        """Drop the given rules in rule-id order (as PVE logs them)."""
        for rule in sorted(set(rules.tolist()), key=self.ids.__getitem__):
            self.drop(rule, kind, message)

    def entries(self, kind: int) -> tuple[I64, I64]:
        """(rule, guest) entries of the live rules of one kind, in rule order."""
        keep = self.alive[self.e_rule] & (self.kind[self.e_rule] == kind)
        return self.e_rule[keep], self.e_guest[keep]

    def check_single_node_affinity(self) -> None:
        rules, guests = self.entries(_KIND_NODE)
        shared = np.bincount(guests, minlength=self.c.n_guests) > 1
        self.drop_sorted(
            rules[shared[guests]],
            "rule-multiple-node-affinity",
            "a resource is in several node-affinity rules",
        )

    def check_negative_size(self) -> None:
        n = self.c.n_nodes
        wide = self.alive & (self.kind == _KIND_NEG) & (self.count > n)
        for rule in np.flatnonzero(wide).tolist():
            size = int(self.count[rule])
            self.drop(
                rule, "rule-negative-too-many", f"{size} resources to keep apart on {n} nodes"
            )

    def check_negative_node_affinity(self) -> None:
        """PVE ``check_negative_resource_affinity_node_affinity_consistency``.

        For each negative rule: the members that are in a node-affinity rule, and the union of
        the nodes those node-affinity rules list; fewer nodes than such members drops the
        negative rule and every node-affinity rule paired with it.
        """
        na_rules, na_guests = self.entries(_KIND_NODE)
        neg_rules, neg_guests = self.entries(_KIND_NEG)
        if na_rules.size == 0 or neg_rules.size == 0:
            return
        r = len(self.rules)
        na_of = np.full(self.c.n_guests, -1, dtype=np.int64)
        na_of[na_guests] = na_rules
        paired = na_of[neg_guests]
        located = paired >= 0
        neg, na = neg_rules[located], paired[located]
        n_located = np.bincount(neg, minlength=r)
        pairs = _unique(neg * r + na)
        pair_neg, pair_na = pairs // r, pairs % r
        # Nodes of each node-affinity rule (entries are grouped by rule, in rule order).
        node_start = np.searchsorted(self.n_rule, pair_na, side="left")
        node_count = np.searchsorted(self.n_rule, pair_na, side="right") - node_start
        # The union has at least as many nodes as the widest paired rule: only the negative
        # rules with more located members than that need the exact union.
        widest = np.zeros(r, dtype=np.int64)
        np.maximum.at(widest, pair_neg, node_count)
        maybe = n_located > widest
        if not maybe.any():
            return
        sel = maybe[pair_neg]
        nodes = self.n_node[_expand(node_start[sel], node_count[sel])]
        owner = np.repeat(pair_neg[sel], node_count[sel])
        n = max(self.c.n_nodes, 1)
        allowed = np.bincount(_unique(owner * n + nodes) // n, minlength=r)
        short = maybe & (n_located > allowed)
        if not short.any():
            return
        bad_pairs = short[pair_neg]
        self.drop_sorted(
            np.concatenate([np.flatnonzero(short), pair_na[bad_pairs]]),
            "rule-negative-node-affinity",
            "resources to keep apart are restricted by node affinity to fewer nodes than resources",
        )

    def check_positive_negative_overlap(self) -> None:
        pos_rules, pos_guests = self.entries(_KIND_POS)
        neg_rules, neg_guests = self.entries(_KIND_NEG)
        if pos_rules.size == 0 or neg_rules.size == 0:
            return
        order = np.argsort(pos_guests, kind="stable")
        by_guest, rule_by_guest = pos_guests[order], pos_rules[order]
        lo = np.searchsorted(by_guest, neg_guests, side="left")
        hits = np.searchsorted(by_guest, neg_guests, side="right") - lo
        neg = np.repeat(neg_rules, hits)
        pos = rule_by_guest[_expand(lo, hits)]
        r = len(self.rules)
        keys, shared = _unique_counts(neg * r + pos)
        both = keys[shared >= 2]
        if both.size:
            self.drop_sorted(
                np.concatenate([both // r, both % r]),
                "rule-affinity-conflict",
                "positive and negative rule share 2+ resources",
            )

    def components(self) -> I64:
        m = self.c.n_guests
        rules, guests = self.entries(_KIND_POS)
        same = rules[:-1] == rules[1:]
        heads, tails = guests[:-1][same], guests[1:][same]
        graph = coo_matrix(
            (np.ones(heads.size, dtype=np.int8), (heads, tails)),
            shape=(m, m),
        )
        _, labels = connected_components(graph, directed=False)
        return np.asarray(labels, dtype=np.int64)

    def check_group_node_affinity(self, labels: I64) -> bool:
        na_rules, na_guests = self.entries(_KIND_NODE)
        r = len(self.rules)
        pairs = _unique(labels[na_guests] * r + na_rules)
        groups = pairs // r
        per_group = np.bincount(groups, minlength=self.c.n_guests)
        conflicted = per_group > 1
        if not conflicted.any():
            return False
        pos_rules, pos_guests = self.entries(_KIND_POS)
        first = np.flatnonzero(np.diff(pos_rules, prepend=-1) != 0)
        for rule in pos_rules[first][conflicted[labels[pos_guests[first]]]].tolist():
            self.drop(
                rule, "rule-group-node-affinity", "resources are in several node-affinity rules"
            )
        bad = conflicted[groups]
        for group in _unique(groups[bad]).tolist():
            self.drop_sorted(
                pairs[groups == group] % r,
                "rule-group-node-affinity",
                "a positive group spans several node-affinity rules",
            )
        return True

    def check_negative_within_bundle(self, labels: I64) -> None:
        neg_rules, neg_guests = self.entries(_KIND_NEG)
        r = len(self.rules)
        m = max(self.c.n_guests, 1)
        distinct = np.bincount(_unique(neg_rules * m + labels[neg_guests]) // m, minlength=r)
        clash = np.bincount(neg_rules, minlength=r) > distinct
        for rule in np.flatnonzero(clash).tolist():
            self.drop(
                rule, "rule-affinity-conflict", "two resources to keep apart must stay together"
            )

    def node_affinity_rows(self) -> tuple[I64, Bool, Bool]:
        """Live node-affinity rules (rule order) and their preferred / allowed node rows."""
        c = self.c
        n = c.n_nodes
        rule_ids = np.flatnonzero(self.alive & (self.kind == _KIND_NODE))
        k = rule_ids.size
        row_of = np.full(len(self.rules), -1, dtype=np.int64)
        row_of[rule_ids] = np.arange(k)
        row = row_of[self.n_rule]
        node, prio = self.n_node, self.n_prio
        live = row >= 0
        if not live.all():
            row, node, prio = row[live], node[live], prio[live]
        strict = np.fromiter(
            map(attrgetter("strict"), map(self.rules.__getitem__, rule_ids.tolist())),
            np.bool_,
            count=k,
        )
        allow = np.ones((k, n), dtype=np.bool_)
        allow[strict] = False
        on_strict = strict[row]
        allow[row[on_strict], node[on_strict]] = True
        usable = c.node_usable[node]
        top = np.full(k, np.iinfo(np.int64).min, dtype=np.int64)
        u_row, u_prio = row[usable], prio[usable]
        if u_row.size:
            # Entries are grouped by row: a segmented maximum.
            starts = np.flatnonzero(np.diff(u_row, prepend=-1) != 0)
            top[u_row[starts]] = np.maximum.reduceat(u_prio, starts)
        pref = np.zeros((k, n), dtype=np.bool_)
        best = usable & (prio == top[row])
        pref[row[best], node[best]] = True
        fallback = ~np.bincount(row[usable], minlength=k).astype(np.bool_) & ~strict
        pref[fallback] = c.node_usable
        return rule_ids, pref, allow


_DUP = "duplicate rule id, later one ignored"


def resolve_rules(rules: list[Rule], c: ClusterArrays) -> RuleSet:
    """Validate the rules like PVE, build bundles and per-bundle node masks."""
    r = _Resolver(rules, c)
    r.check_single_node_affinity()
    r.check_negative_size()
    r.check_positive_negative_overlap()
    r.check_negative_node_affinity()
    labels = r.components()
    if r.check_group_node_affinity(labels):
        labels = r.components()
    r.check_negative_within_bundle(labels)

    # Bundle ids in order of each bundle's first guest, then CSR membership.
    # (connected_components labels are dense, 0 .. count-1.)
    b = int(labels.max()) + 1 if labels.size else 0
    first = np.full(b, labels.size, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(labels.size, dtype=np.int64))
    order = np.argsort(first, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(order.size)
    bundle_of = remap[labels].astype(np.int64)
    bundle_guests = np.argsort(bundle_of, kind="stable").astype(np.int64)
    bundle_ptr = np.zeros(b + 1, dtype=np.int64)
    np.cumsum(np.bincount(bundle_of, minlength=b), out=bundle_ptr[1:])
    sid_rank = sid_ranks(c.guest_sids)
    by_rank = np.lexsort((sid_rank, bundle_of))
    bundle_leader = by_rank[bundle_ptr[:-1]].astype(np.int64)

    n = c.n_nodes
    rule_ids, pref, allow = r.node_affinity_rows()
    k = rule_ids.size
    pref_rows = np.ones((k + 1, n), dtype=np.bool_)
    pref_rows[:k] = pref
    pref_rows[-1] = c.node_usable
    allow_rows = np.ones((k + 1, n), dtype=np.bool_)
    allow_rows[:k] = allow
    bundle_rule = np.full(b, k, dtype=np.int64)
    na_rules, na_guests = r.entries(_KIND_NODE)
    bundle_rule[bundle_of[na_guests]] = np.searchsorted(rule_ids, na_rules)

    neg_rules, neg_guests = r.entries(_KIND_NEG)
    both = _negative_pairs(neg_rules, bundle_of[neg_guests], b)
    constrained = bundle_rule < k
    constrained[both[0]] = True
    return RuleSet(
        bundle_of=bundle_of,
        bundle_ptr=bundle_ptr,
        bundle_guests=bundle_guests,
        bundle_leader=bundle_leader,
        preferred=_rows_per_bundle(pref_rows, bundle_rule),
        allowed=_rows_per_bundle(allow_rows, bundle_rule),
        neg_bundle=both[0].astype(np.int64),
        neg_partner=both[1].astype(np.int64),
        constrained=constrained,
        findings=r.findings,
        applied_rules=sorted(compress(r.ids, r.alive.tolist())),
    )


def _negative_pairs(rules: I64, bundles: I64, n_bundles: int) -> I64:
    """[2, p] sorted distinct (bundle, partner) pairs of distinct bundles sharing a rule."""
    b = max(n_bundles, 1)
    keys = _unique(rules * b + bundles)
    rule, bundle = keys // b, keys % b
    starts = np.flatnonzero(np.diff(rule, prepend=-1) != 0)
    sizes = np.diff(np.append(starts, rule.size))
    size_of = np.repeat(sizes, sizes)
    first_of = np.repeat(starts, sizes)
    mine = np.repeat(np.arange(rule.size, dtype=np.int64), size_of)
    partner = _expand(first_of, size_of)
    a, p = bundle[mine], bundle[partner]
    distinct = a != p
    pairs = _unique(a[distinct] * b + p[distinct])
    return np.stack([pairs // b, pairs % b]).astype(np.int64).reshape(2, -1)


def _rows_per_bundle(rows: Bool, bundle_rule: I64) -> Bool:
    """rows[bundle_rule]; a read-only broadcast view when no bundle has a rule (saves b x n)."""
    if rows.shape[0] == 1:
        view: Bool = np.broadcast_to(rows[0], (bundle_rule.size, rows.shape[1]))
        return view
    gathered: Bool = rows[bundle_rule]
    return gathered


def sid_ranks(sids: list[str]) -> I64:
    """Position of each sid in byte-wise string order (Rust ``String`` ordering)."""
    order = sorted(range(len(sids)), key=sids.__getitem__)
    ranks = np.empty(len(sids), dtype=np.int64)
    ranks[np.array(order, dtype=np.int64)] = np.arange(len(sids))
    return ranks


def bundle_nodes(ruleset: RuleSet, guest_node: I64) -> I64:
    """The node of each bundle: its leader's node (-1 when unknown)."""
    return guest_node[ruleset.bundle_leader]


def blocked_nodes(ruleset: RuleSet, bundle_node: I64, guest_node: I64 | None = None) -> Bool:
    """[b, n] nodes holding a negative-affinity partner of each bundle.

    With ``guest_node`` every member of a partner bundle counts (a split group blocks all the
    nodes its members are on); without it, the partner bundle's ``bundle_node``.
    """
    n_nodes = int(ruleset.preferred.shape[1])
    blocked = np.zeros((ruleset.n_bundles, n_nodes), dtype=np.bool_)
    if guest_node is None:
        rows, where = ruleset.neg_bundle, bundle_node[ruleset.neg_partner]
    else:
        first = ruleset.bundle_ptr[ruleset.neg_partner]
        counts = ruleset.bundle_ptr[ruleset.neg_partner + 1] - first
        rows = np.repeat(ruleset.neg_bundle, counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        where = guest_node[ruleset.bundle_guests[np.repeat(first, counts) + offsets]]
    ok = where >= 0
    blocked[rows[ok], where[ok]] = True
    return blocked
