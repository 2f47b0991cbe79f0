"""The limits every plan must respect, and the problem the planners search.

``PlanProblem`` is the cluster reduced to what a plan may change: per-node usage and hard
limits (memory headroom, cpu cap), and per-bundle (a positive-affinity group, or one guest)
usage, current node, allowed target nodes and negative-affinity partners. Planners move
bundles; this module says which moves are legal:

- the target is usable (online, not in maintenance), allowed by every strict node-affinity
  rule, and holds no negative-affinity partner of the bundle;
- after the move the target's memory stays within ``mem_headroom`` x maxmem and its cpu within
  the cap (dynamic: ``cpu_cap`` x cores measured; static: ``static_cpu_cap`` x cores of vCPUs).

It also decides which guests are candidates at all (scope, exclusions, templates).

Evacuation: a bundle in scope that runs on a node that is not usable (in maintenance, or
offline but still reported running) is movable and flagged in ``bundle_evacuate``; the
planners move it off first, whatever the gain (:func:`balancer.planner.plan_evacuation`).
Its targets obey every limit above. Scope, exclusions, cooldowns and moves in flight apply as
to any move (a guest moved onto the node shortly before waits for its cooldown: no ping-pong).
Bundles on unusable nodes that are not in scope stay where they are, as before.

Dynamic mode counts a node's usage as at least its newest measurement (``Node.cpu_last`` /
``mem_last``) and the sum of its running guests' usage: the usage view is smoothed and lags
behind guests that just arrived (a node refilled after maintenance looked emptier than it
was, and moves took it past the headroom).

The imbalance is measured over the usable nodes only (``node_counted``): a node in
maintenance or offline can take no load, and counting it (empty, once evacuated) would keep
the imbalance high for as long as it stays out, a gap no move can close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from balancer.cluster import F64, I64, Bool, ClusterArrays
from balancer.cost import GIB, bandwidth_matrix, guest_bytes_to_copy
from balancer.options import BalancerOptions
from balancer.rules import RuleSet, bundle_nodes
from balancer.usage import Mode, guest_usage, node_usage
from model import Snapshot


@dataclass(slots=True)
class PlanProblem:
    node_names: list[str]
    node_cpu: F64
    """Cores in use as the mode counts them."""
    node_mem: F64
    node_maxcpu: F64
    node_maxmem: F64
    node_usable: Bool
    """Online and not in maintenance: may receive guests."""
    node_counted: Bool
    """Nodes the imbalance is measured over: the usable ones (the CRS counts every node)."""
    cpu_limit: F64
    """Cores a move may fill a target up to."""
    mem_limit: F64
    """Bytes a move may fill a target up to."""
    bundle_node: I64
    bundle_cpu: F64
    """Cores that leave the source and arrive on the target when the bundle moves."""
    bundle_mem: F64
    bundle_bytes: F64
    """Bytes a migration of the bundle copies."""
    bundle_movable: Bool
    bundle_running: Bool
    """The bundle puts load on its node (a running member); pins the node if not movable."""
    bundle_evacuate: Bool
    """In scope and running on a node that is not usable: must move off first, whatever the gain.
    (May be unmovable when it fits on no allowed node even empty; it is then reported blocked.)"""
    bundle_targets: Bool
    """[b, n]: nodes the rules allow the bundle on (current node included)."""
    bundle_members: list[list[str]]
    partner_ptr: I64
    """CSR over bundles: negative-affinity partner bundles of b are partner_idx[ptr[b]:ptr[b+1]]."""
    partner_idx: I64
    pinned_partner_nodes: Bool
    """[b, n] nodes where a member of a partner bundle that never moves runs (split groups too)."""
    bandwidth: F64
    """[n, n] bytes/s between nodes."""
    overhead_s: float = 5.0
    min_gain_per_gib: float = 0.0

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_bundles(self) -> int:
        return len(self.bundle_members)

    def partners(self, bundle: int) -> I64:
        return self.partner_idx[self.partner_ptr[bundle] : self.partner_ptr[bundle + 1]]


def node_limits(
    node_maxcpu: F64, node_maxmem: F64, options: BalancerOptions, mode: str
) -> tuple[F64, F64]:
    """Per-node (cpu cores, memory bytes) a move may fill a target up to."""
    cap = options.static_cpu_cap if mode == "static" else options.cpu_cap
    return node_maxcpu * cap, node_maxmem * options.mem_headroom


def movable_guests(
    snapshot: Snapshot, c: ClusterArrays, options: BalancerOptions, cooling: set[str]
) -> Bool:
    """Guests this round may move: in scope, not excluded, not cooling down, not a template."""
    in_scope = c.guest_running & ~c.guest_starting & (c.guest_node >= 0) & c.guest_auto_rebalance
    if options.scope == "crs":
        in_scope &= c.guest_ha_started
    else:
        in_scope &= ~c.guest_ha | c.guest_ha_started
    if not options.include_containers:
        in_scope &= ~c.guest_is_ct
    tags = set(options.exclude_tags)
    ids = set(options.exclude_ids)
    pools = set(options.exclude_pools)
    guests = snapshot.guests
    excluded = np.array([g.template for g in guests], dtype=np.bool_).reshape(len(guests))
    if cooling or ids:
        excluded |= np.array(
            [g.sid in cooling or g.sid in ids or str(g.vmid) in ids for g in guests], dtype=np.bool_
        ).reshape(len(guests))
    if pools or tags:
        excluded |= np.array(
            [g.pool in pools or not tags.isdisjoint(g.tags) for g in guests], dtype=np.bool_
        ).reshape(len(guests))
    return np.asarray(in_scope & ~excluded, dtype=np.bool_)


def evacuation_counts(problem: PlanProblem) -> dict[str, int]:
    """Unusable node name -> guests (bundle members) in scope to evacuate from it."""
    counts: dict[str, int] = {}
    for bundle in np.flatnonzero(problem.bundle_evacuate).tolist():
        name = problem.node_names[int(problem.bundle_node[bundle])]
        counts[name] = counts.get(name, 0) + len(problem.bundle_members[bundle])
    return counts


def partner_blocked(problem: PlanProblem, bundle_node: I64) -> Bool:
    """[b, n]: True where a negative-affinity partner of the bundle currently runs."""
    blocked = problem.pinned_partner_nodes.copy()
    counts = np.diff(problem.partner_ptr)
    owners = np.repeat(np.arange(problem.n_bundles), counts)
    if owners.size:
        partner_nodes = bundle_node[problem.partner_idx]
        placed = partner_nodes >= 0
        blocked[owners[placed], partner_nodes[placed]] = True
    return blocked


def partner_blocked_row(problem: PlanProblem, bundle_node: I64, bundle: int) -> Bool:
    """[n]: True where a negative-affinity partner of ``bundle`` runs (one row of the above)."""
    blocked = np.array(problem.pinned_partner_nodes[bundle], dtype=np.bool_)
    nodes = bundle_node[problem.partners(bundle)]
    blocked[nodes[nodes >= 0]] = True
    return blocked


def oversized_bundles(problem: PlanProblem) -> I64:
    """Movable bundles that fit on no allowed usable node other than their own, even empty."""
    fits = (problem.bundle_mem[:, None] <= problem.mem_limit[None, :]) & (
        problem.bundle_cpu[:, None] <= problem.cpu_limit[None, :]
    )
    elsewhere = problem.bundle_targets & problem.node_usable[None, :]
    placed = np.flatnonzero(problem.bundle_node >= 0)
    elsewhere[placed, problem.bundle_node[placed]] = False
    has_target = elsewhere.any(axis=1)
    big = problem.bundle_movable & has_target & ~(fits & elsewhere).any(axis=1)
    return np.flatnonzero(big).astype(np.int64)


def move_violation(
    problem: PlanProblem,
    node_cpu: F64,
    node_mem: F64,
    bundle_node: I64,
    bundle: int,
    target: int,
) -> str | None:
    """Why moving ``bundle`` to ``target`` from the given state is illegal, or None."""
    name = problem.node_names[target]
    label = ",".join(problem.bundle_members[bundle])
    if not problem.node_usable[target]:
        return f"{label}: target {name} is offline or in maintenance"
    if not problem.bundle_targets[bundle, target]:
        return f"{label}: a strict node-affinity rule forbids {name}"
    if bundle_node[bundle] == target:
        return f"{label}: already on {name}"
    partners = problem.partners(bundle)
    if problem.pinned_partner_nodes[bundle, target] or (
        partners.size and bool((bundle_node[partners] == target).any())
    ):
        return f"{label}: a negative-affinity partner runs on {name}"
    if node_mem[target] + problem.bundle_mem[bundle] > problem.mem_limit[target] * (1 + 1e-12):
        return f"{label}: {name} memory would exceed its headroom"
    if node_cpu[target] + problem.bundle_cpu[bundle] > problem.cpu_limit[target] * (1 + 1e-12):
        return f"{label}: {name} cpu would exceed its cap"
    return None


def _per_bundle(rs: RuleSet, values: F64) -> F64:
    return np.bincount(rs.bundle_of, weights=values, minlength=rs.n_bundles).astype(np.float64)


def _partner_csr(rs: RuleSet) -> tuple[I64, I64]:
    order = np.argsort(rs.neg_bundle, kind="stable")
    ptr = np.zeros(rs.n_bundles + 1, dtype=np.int64)
    np.cumsum(np.bincount(rs.neg_bundle, minlength=rs.n_bundles), out=ptr[1:])
    return ptr, rs.neg_partner[order].astype(np.int64)


def _pinned_partner_nodes(rs: RuleSet, c: ClusterArrays, movable: Bool) -> Bool:
    """[b, n] nodes where any member of a non-movable negative partner of b runs."""
    occupied = np.zeros((rs.n_bundles, c.n_nodes), dtype=np.bool_)
    placed = c.guest_node >= 0
    occupied[rs.bundle_of[placed], c.guest_node[placed]] = True
    pinned = np.zeros_like(occupied)
    fixed = ~movable[rs.neg_partner]
    np.logical_or.at(pinned, rs.neg_bundle[fixed], occupied[rs.neg_partner[fixed]])
    return pinned


def build_problem(
    snapshot: Snapshot,
    c: ClusterArrays,
    rs: RuleSet,
    options: BalancerOptions,
    mode: Mode,
    cooling: set[str],
) -> tuple[PlanProblem, list[str]]:
    """The planning problem for this round, and notes on guests that cannot be moved."""
    notes: list[str] = []
    b = rs.n_bundles
    guest_cpu, guest_mem = guest_usage(c, mode)
    node_cpu, node_mem = node_usage(c, mode)
    movable = movable_guests(snapshot, c, options, cooling)
    running = c.guest_running & (c.guest_node >= 0)
    if mode == "dynamic":
        # A node uses at least its newest measurement and what its running guests use: the
        # usage view (smoothed) lags behind guests that just arrived, and a node refilled
        # after maintenance must not look emptier than it is.
        on = c.guest_node[running]
        cpu_last = np.array([n.cpu_last or 0.0 for n in snapshot.nodes], dtype=np.float64)
        mem_last = np.array([n.mem_last or 0.0 for n in snapshot.nodes], dtype=np.float64)
        node_cpu = np.maximum.reduce(
            [node_cpu, cpu_last, np.bincount(on, weights=guest_cpu[running], minlength=c.n_nodes)]
        )
        node_mem = np.maximum.reduce(
            [node_mem, mem_last, np.bincount(on, weights=guest_mem[running], minlength=c.n_nodes)]
        )
    node_of = bundle_nodes(rs, c.guest_node)

    all_movable = np.bincount(rs.bundle_of, weights=~movable, minlength=b) == 0
    any_running = np.bincount(rs.bundle_of, weights=running, minlength=b) > 0
    member_nodes = c.guest_node[rs.bundle_guests]
    starts = rs.bundle_ptr[:-1]
    together = np.ones(b, dtype=np.bool_)
    if member_nodes.size:
        together = np.minimum.reduceat(member_nodes, starts) == np.maximum.reduceat(
            member_nodes, starts
        )
    on_usable = np.zeros(b, dtype=np.bool_)
    placed = node_of >= 0
    on_usable[placed] = c.node_usable[node_of[placed]]
    bundle_movable = all_movable & any_running & together & placed
    bundle_evacuate = bundle_movable & ~on_usable

    members: list[list[str]] = [[] for _ in range(b)]
    for guest in sorted(range(c.n_guests), key=c.guest_sids.__getitem__):
        members[rs.bundle_of[guest]].append(c.guest_sids[guest])
    for bundle in np.flatnonzero(all_movable & any_running & ~together):
        notes.append(f"{','.join(members[bundle])}: affinity group split across nodes; not moved")

    targets = (rs.preferred if options.honour_preferred_nodes else rs.allowed).copy()
    targets[np.flatnonzero(placed), node_of[placed]] = True
    cpu_limit, mem_limit = node_limits(c.node_maxcpu, c.node_maxmem, options, mode)
    bandwidth, unknown = bandwidth_matrix(
        c.node_names, options.bandwidth_gib_s, options.pair_bandwidth_gib_s
    )
    notes += [f"pair_bandwidth_gib_s '{key}' names an unknown node; ignored" for key in unknown]
    ptr, partners = _partner_csr(rs)
    problem = PlanProblem(
        node_names=list(c.node_names),
        node_cpu=node_cpu,
        node_mem=node_mem,
        node_maxcpu=c.node_maxcpu,
        node_maxmem=c.node_maxmem,
        node_usable=c.node_usable,
        node_counted=c.node_usable.copy(),
        cpu_limit=cpu_limit,
        mem_limit=mem_limit,
        bundle_node=node_of.astype(np.int64),
        bundle_cpu=_per_bundle(rs, np.where(running, guest_cpu, 0.0)),
        bundle_mem=_per_bundle(rs, np.where(running, guest_mem, 0.0)),
        bundle_bytes=_per_bundle(rs, guest_bytes_to_copy(snapshot)),
        bundle_movable=bundle_movable,
        bundle_running=any_running,
        bundle_evacuate=bundle_evacuate,
        bundle_targets=targets,
        bundle_members=members,
        partner_ptr=ptr,
        partner_idx=partners,
        pinned_partner_nodes=_pinned_partner_nodes(rs, c, bundle_movable),
        bandwidth=bandwidth,
        overhead_s=options.migration_overhead_s,
        min_gain_per_gib=options.min_gain_per_gib,
    )
    for bundle in oversized_bundles(problem):
        problem.bundle_movable[bundle] = False
        gib = problem.bundle_mem[bundle] / GIB
        notes.append(
            f"{','.join(members[bundle])}: needs {gib:.1f} GiB / "
            f"{problem.bundle_cpu[bundle]:.1f} cores, more than any allowed node offers "
            "within the headroom; not moved"
        )
    return problem, notes
