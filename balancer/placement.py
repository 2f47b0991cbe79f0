"""Start placement: ranking the nodes a guest could be started on, as the CRS scores them.

PVE (proxmox-resource-scheduling ``score_nodes_to_start_resource``): for every node,
imagine the guest started there (adding its maxcpu, or the node's cores when unlimited, and
its maxmem), describe the whole cluster by the four TOPSIS criteria of
:func:`balancer.selection.topsis_criteria` and score with weights 1, 2, 5, 10; highest wins,
ties by node name. All usable nodes are scored together; the HA manager then picks among the
nodes the guest's rules allow (preferred node-affinity nodes without negative partners).

Base usage: static mode counts every running guest at its configured size; dynamic mode takes
the measured node usage and adds guests that are about to start (``guest_starting``) at
their configured size on their node. The batch variant places several starting guests one
after another (sorted by sid, like the HA manager's loop), each counting the earlier
placements, which avoids the RFC's known issue of a whole batch landing on one node.
Basic mode ranks by running guest count (fewest first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from balancer.cluster import F64, I64, Bool, ClusterArrays
from balancer.imbalance import _ratio
from balancer.rules import RuleSet, blocked_nodes, bundle_nodes
from balancer.selection import TOPSIS_WEIGHTS, topsis_scores
from balancer.usage import Mode, guest_static_size, node_usage


def start_base_usage(c: ClusterArrays, mode: Mode, exclude: Sequence[int] = ()) -> tuple[F64, F64]:
    """Node usage before placing: the mode's usage plus starting guests (dynamic mode)."""
    cpu, mem = node_usage(c, mode)
    if mode != "dynamic":
        return cpu, mem
    starting = c.guest_starting & (c.guest_node >= 0)
    starting[list(exclude)] = False
    size_cpu, size_mem = guest_static_size(c)
    cpu = cpu + np.bincount(c.guest_node[starting], weights=size_cpu[starting], minlength=c.n_nodes)
    mem = mem + np.bincount(c.guest_node[starting], weights=size_mem[starting], minlength=c.n_nodes)
    return cpu, mem


def start_allowed_nodes(c: ClusterArrays, ruleset: RuleSet, guest: int) -> Bool:
    """Usable nodes the guest's bundle may start on (node affinity, negative partners)."""
    bundle = int(ruleset.bundle_of[guest])
    allowed: Bool = ruleset.preferred[bundle] & c.node_usable
    if ruleset.neg_bundle.size:
        allowed &= ~blocked_nodes(ruleset, bundle_nodes(ruleset, c.guest_node), c.guest_node)[
            bundle
        ]
    return allowed


def start_scores(c: ClusterArrays, cpu: F64, mem: F64, guest_cpu: F64, guest_mem: F64) -> F64:
    """TOPSIS score of starting a guest of the given size on each usable node (else NaN)."""
    nodes = np.flatnonzero(c.node_usable)
    n = nodes.size
    out = np.full(c.n_nodes, np.nan)
    if n == 0:
        return out
    cap_cpu, cap_mem = c.node_maxcpu[nodes], c.node_maxmem[nodes]
    add_cpu = np.where(guest_cpu > 0, guest_cpu, cap_cpu)
    matrix = np.empty((n, 4))
    for col, (used, cap, add) in enumerate(
        ((cpu[nodes], cap_cpu, add_cpu), (mem[nodes], cap_mem, np.full(n, guest_mem)))
    ):
        loads = _ratio(used, cap)
        new = _ratio(used + add, cap)
        squares = float((loads * loads).sum()) - loads**2 + new**2
        matrix[:, 2 * col] = 1.0 + np.sqrt(np.maximum(squares, 0.0) / n)
        others = (
            np.max(np.where(np.eye(n, dtype=np.bool_), -np.inf, loads[None, :]), axis=1)
            if n > 1
            else np.zeros(1)
        )
        matrix[:, 2 * col + 1] = 1.0 + np.maximum(np.maximum(others, new), 0.0)
    out[nodes] = topsis_scores(matrix, TOPSIS_WEIGHTS)
    return out


def _ranked(
    c: ClusterArrays, allowed: Bool, score: F64, descending: bool
) -> list[tuple[str, float]]:
    nodes = np.flatnonzero(allowed & ~np.isnan(score))
    names = [c.node_names[i] for i in nodes.tolist()]
    values = score[nodes].tolist()
    sign = -1.0 if descending else 1.0
    order = sorted(range(nodes.size), key=lambda i: (sign * values[i], names[i]))
    return [(names[i], float(values[i])) for i in order]


def rank_start_nodes(
    c: ClusterArrays, ruleset: RuleSet, guest: int, mode: Mode
) -> list[tuple[str, float]]:
    """Nodes the guest may start on, best first, with their score (basic: guest count)."""
    allowed = start_allowed_nodes(c, ruleset, guest)
    cpu, mem = start_base_usage(c, mode, exclude=[guest])
    if mode == "basic":
        return _ranked(c, allowed, np.where(c.node_usable, cpu, np.nan), descending=False)
    size_cpu, size_mem = guest_static_size(c, np.full(c.n_guests, -1, dtype=np.int64))
    score = start_scores(c, cpu, mem, size_cpu[guest], size_mem[guest])
    return _ranked(c, allowed, score, descending=True)


def place_starting_guests(
    c: ClusterArrays, ruleset: RuleSet, guests: Sequence[int], mode: Mode
) -> list[tuple[str, str | None]]:
    """Place several starting guests one after another; (sid, node or None if nowhere)."""
    order = sorted(guests, key=lambda g: c.guest_sids[g])
    cpu, mem = start_base_usage(c, mode, exclude=order)
    size_cpu, size_mem = guest_static_size(c, np.full(c.n_guests, -1, dtype=np.int64))
    placed: list[tuple[str, str | None]] = []
    index = c.node_index()
    for guest in order:
        allowed = start_allowed_nodes(c, ruleset, guest)
        if mode == "basic":
            ranking = _ranked(c, allowed, np.where(c.node_usable, cpu, np.nan), descending=False)
        else:
            score = start_scores(c, cpu, mem, size_cpu[guest], size_mem[guest])
            ranking = _ranked(c, allowed, score, descending=True)
        if not ranking:
            placed.append((c.guest_sids[guest], None))
            continue
        node = index[ranking[0][0]]
        if mode == "basic":
            cpu[node] += 1.0
            mem[node] += 1.0
        else:
            cpu[node] += size_cpu[guest] if size_cpu[guest] > 0 else c.node_maxcpu[node]
            mem[node] += size_mem[guest]
        placed.append((c.guest_sids[guest], c.node_names[node]))
    return placed


def starting_guests(c: ClusterArrays) -> I64:
    """Guests the HA manager is about to start."""
    return np.flatnonzero(c.guest_starting).astype(np.int64)
