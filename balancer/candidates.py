"""Migration candidates: every movable bundle paired with every node it may move to.

A candidate is (bundle, source, target) plus what the move transfers (the bundle's summed
cpu and mem). Targets are the bundle's preferred nodes (node affinity, usable nodes only)
minus nodes holding a negative-affinity partner minus its current node, optionally narrowed
by an extra mask (the planner's safety limits). This is the candidate set of the PVE HA
manager's rebalancer (RFC "dynamic scheduler + load rebalancer", ha-manager patch
"implement automatic rebalancing": targets pruned by the HA rules before scoring).

For very large clusters :func:`dominant_targets` narrows the targets of unconstrained
bundles without changing the bruteforce winner: among nodes of equal capacity, moving a
given bundle changes the load sum identically and the sum of squared loads by
2*load*delta + delta^2, so the least-loaded node of each capacity class dominates the rest;
keeping the two lowest loads of each class (and loads within 1e-12 of them, which could tie
after PVE's 15-digit truncation) keeps every possible winner, also for a bundle sitting on the
least-loaded node. TOPSIS normalises over the whole
candidate set, so it must not be given a narrowed set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from balancer.cluster import F64, I64, Bool, ClusterArrays
from balancer.rules import RuleSet, blocked_nodes, bundle_nodes


@dataclass(slots=True)
class Candidates:
    bundle: I64
    source: I64
    target: I64
    cpu: F64
    mem: F64
    run_starts: I64 | None = None
    """First position of each bundle's (consecutive) candidates, when known."""

    def __len__(self) -> int:
        return int(self.bundle.size)

    def take(self, index: I64) -> Candidates:
        return Candidates(
            self.bundle[index],
            self.source[index],
            self.target[index],
            self.cpu[index],
            self.mem[index],
        )

    def runs(self) -> I64:
        """First position of each group of consecutive candidates of one bundle."""
        if self.run_starts is not None:
            return self.run_starts
        return np.flatnonzero(np.diff(self.bundle, prepend=-1) != 0)


LOAD_TIE = 1e-12


def dominant_targets(maxcpu: F64, maxmem: F64, loads: F64, usable: Bool) -> I64:
    """Per capacity class, the usable nodes whose load is at most the class's 2nd-lowest load."""
    keep = np.zeros(loads.size, dtype=np.bool_)
    nodes = np.flatnonzero(usable)
    if nodes.size == 0:
        return nodes.astype(np.int64)
    classes = np.unique(np.stack([maxcpu[nodes], maxmem[nodes]]), axis=1, return_inverse=True)[1]
    classes = np.asarray(classes).reshape(-1)
    for cls in np.unique(classes):
        members = nodes[classes == cls]
        lowest = np.unique(loads[members])[:2]
        # Keep near-equal loads too: their imbalances may truncate to the same 15 digits.
        keep[members[loads[members] <= lowest[-1] + LOAD_TIE]] = True
    return np.flatnonzero(keep).astype(np.int64)


def generate_candidates(
    c: ClusterArrays,
    ruleset: RuleSet,
    movable_bundles: Bool,
    bundle_cpu: F64,
    bundle_mem: F64,
    target_mask: Bool | None = None,
    narrowed_targets: I64 | None = None,
) -> Candidates:
    """Bundle x allowed target for every movable bundle (see module docstring).

    ``narrowed_targets`` (from :func:`dominant_targets`) replaces the all-nodes target list of
    bundles without rules when no extra ``target_mask`` is given.
    """
    node_of = bundle_nodes(ruleset, c.guest_node)
    movable = np.flatnonzero(movable_bundles & (node_of >= 0))
    if narrowed_targets is not None and target_mask is None:
        free = movable[~ruleset.constrained[movable]]
        movable = movable[ruleset.constrained[movable]]
    else:
        free = movable[:0]

    parts: list[tuple[I64, I64, I64]] = []
    if movable.size:
        mask = ruleset.preferred[movable]
        mask &= c.node_usable[None, :]
        if ruleset.neg_bundle.size:
            mask &= ~blocked_nodes(ruleset, node_of, c.guest_node)[movable]
        if target_mask is not None:
            mask &= target_mask[movable]
        mask[np.arange(movable.size), node_of[movable]] = False
        # Row-major order: each bundle's targets are consecutive (scorers rely on it).
        counts = np.count_nonzero(mask, axis=1)
        flat = np.flatnonzero(mask)
        flat -= np.repeat(np.arange(movable.size) * c.n_nodes, counts)
        parts.append((movable, counts, flat))
    if free.size and narrowed_targets is not None and narrowed_targets.size:
        usable_targets = narrowed_targets[c.node_usable[narrowed_targets]]
        grid = np.broadcast_to(usable_targets, (free.size, usable_targets.size))
        keep = grid != node_of[free][:, None]
        parts.append((free, np.count_nonzero(keep, axis=1), grid[keep]))

    owners = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    counts = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    target = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    nonempty = counts > 0
    starts = (np.cumsum(counts) - counts)[nonempty]
    return Candidates(
        bundle=np.repeat(owners, counts),
        source=np.repeat(node_of[owners], counts),
        target=target.astype(np.int64, copy=False),
        cpu=np.repeat(bundle_cpu[owners], counts),
        mem=np.repeat(bundle_mem[owners], counts),
        run_starts=starts.astype(np.int64, copy=False),
    )
