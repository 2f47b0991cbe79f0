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

Candidates are kept per run (one bundle's consecutive targets): bundles without rules all go
to the same nodes (every usable node, or the narrowed ones) except their own, so they form a
:class:`Grid` whose targets are never listed, and the scorers broadcast per-run and per-node
values over it; the targets of the other bundles (or all, under a ``target_mask``) are
listed. A small grid next to listed runs is listed too (:data:`GRID_MIN`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from balancer.cluster import F64, I64, Bool, ClusterArrays
from balancer.rules import RuleSet, blocked_nodes, bundle_nodes


@dataclass(slots=True)
class Grid:
    """The leading runs of a candidate set that all go to the same target columns."""

    columns: I64
    """Target nodes in ascending order: each grid run moves to all of them but its source."""
    self_column: I64
    """Per grid run: the position of its source among ``columns``, -1 when it is none."""

    @property
    def runs(self) -> int:
        return int(self.self_column.size)

    @classmethod
    def over(cls, columns: I64, source: I64) -> Grid:
        """Runs from the nodes ``source`` to the nodes ``columns`` (ascending)."""
        self_column = np.full(source.size, -1, dtype=np.int64)
        if columns.size:
            at = np.minimum(np.searchsorted(columns, source), columns.size - 1)
            found = columns[at] == source
            self_column[found] = at[found]
        return cls(columns, self_column)


class Candidates:
    """Candidates in runs: one run per bundle, its targets consecutive and ascending.

    A run shares the bundle, source and transferred cpu/mem, kept once per run. The first
    runs may form a :class:`Grid` (bundles without rules: their targets follow from the
    grid's columns; ``grid_size`` candidates); the targets of the other runs are listed.
    The per-candidate arrays (``bundle``, ``source``, ``target``, ``cpu``, ``mem``) are
    expanded on first use; scorers work per run and per target column instead, and
    :meth:`take` picks a few candidates.
    """

    __slots__ = (
        "_expanded",
        "_listed",
        "_size",
        "counts",
        "grid",
        "grid_size",
        "owners",
        "run_cpu",
        "run_mem",
        "run_source",
        "run_starts",
    )

    def __init__(
        self,
        owners: I64,
        source: I64,
        cpu: F64,
        mem: F64,
        counts: I64,
        target: I64 | None = None,
        grid: Grid | None = None,
    ) -> None:
        """Runs of ``counts`` candidates; ``target`` lists those of the runs after ``grid``'s."""
        keep = counts > 0
        if not keep.all():
            owners, source, counts = owners[keep], source[keep], counts[keep]
            cpu, mem = cpu[keep], mem[keep]
            if grid is not None:
                grid = Grid(grid.columns, grid.self_column[keep[: grid.runs]])
        self.owners, self.run_source, self.run_cpu, self.run_mem = owners, source, cpu, mem
        self.counts = counts.astype(np.int64, copy=False)
        self.run_starts = np.cumsum(self.counts) - self.counts
        self._size = int(self.counts.sum())
        self.grid = grid if grid is not None and grid.runs else None
        runs = 0 if self.grid is None else self.grid.runs
        self.grid_size = int(self.counts[:runs].sum())
        self._listed = np.zeros(0, dtype=np.int64) if target is None else target
        self._expanded: dict[str, npt.NDArray[Any]] = {}

    def __len__(self) -> int:
        return self._size

    def runs(self) -> I64:
        """First position of each run (all runs are non-empty)."""
        return self.run_starts

    def as_listed(self) -> Candidates:
        """The same candidates, every run's targets listed."""
        return Candidates(
            self.owners, self.run_source, self.run_cpu, self.run_mem, self.counts, self.target
        )

    def listed(self) -> Candidates:
        """The runs after the grid, as candidates of their own (positions from 0)."""
        if self.grid is None:
            return self
        at = slice(self.grid.runs, None)
        return Candidates(
            self.owners[at],
            self.run_source[at],
            self.run_cpu[at],
            self.run_mem[at],
            self.counts[at],
            target=self._listed,
        )

    def _expand(self, name: str, per_run: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if name not in self._expanded:
            self._expanded[name] = np.repeat(per_run, self.counts)
        return self._expanded[name]

    @property
    def bundle(self) -> I64:
        return self._expand("bundle", self.owners)

    @property
    def source(self) -> I64:
        return self._expand("source", self.run_source)

    @property
    def cpu(self) -> F64:
        return self._expand("cpu", self.run_cpu)

    @property
    def mem(self) -> F64:
        return self._expand("mem", self.run_mem)

    @property
    def target(self) -> I64:
        if self.grid is None:
            return self._listed
        if "target" not in self._expanded:
            columns, source = self.grid.columns, self.run_source[: self.grid.runs]
            everywhere = np.broadcast_to(columns, (source.size, columns.size))
            on_grid = everywhere[columns[None, :] != source[:, None]]
            self._expanded["target"] = np.concatenate([on_grid, self._listed])
        return self._expanded["target"]

    def grid_rows(self, run: I64, column: I64) -> I64:
        """Positions of the candidates of the given grid runs to the given grid columns."""
        assert self.grid is not None
        self_column = self.grid.self_column[run]
        return self.run_starts[run] + column - ((self_column >= 0) & (column > self_column))

    def take(self, index: I64) -> Candidates:
        """The candidates at ``index`` as listed candidates, each its own run."""
        run = np.searchsorted(self.run_starts, index, side="right") - 1
        if self.grid is None:
            target = self._listed[index]
        else:
            target = np.empty(index.size, dtype=np.int64)
            on_grid = run < self.grid.runs
            offset = index[on_grid] - self.run_starts[run[on_grid]]
            self_column = self.grid.self_column[run[on_grid]]
            offset += (self_column >= 0) & (offset >= self_column)
            target[on_grid] = self.grid.columns[offset]
            target[~on_grid] = self._listed[index[~on_grid] - self.grid_size]
        return Candidates(
            self.owners[run],
            self.run_source[run],
            self.run_cpu[run],
            self.run_mem[run],
            np.ones(index.size, dtype=np.int64),
            target=target,
        )


GRID_MIN = 8192
"""Fewest grid candidates worth scoring apart from listed ones (fewer are listed too)."""

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

    Without ``target_mask``, bundles without rules form the :class:`Grid` (first) and go to
    every usable node, or to the usable ``narrowed_targets`` (from :func:`dominant_targets`);
    the others' targets are listed.
    """
    node_of = bundle_nodes(ruleset, c.guest_node)
    movable = np.flatnonzero(movable_bundles & (node_of >= 0))
    free = movable[:0]
    if target_mask is None:
        constrained = ruleset.constrained[movable]
        free, movable = movable[~constrained], movable[constrained]
    columns = np.flatnonzero(c.node_usable)
    if narrowed_targets is not None:
        columns = np.unique(narrowed_targets[c.node_usable[narrowed_targets]]).astype(np.int64)
    grid = Grid.over(columns, node_of[free])
    counts, target = _listed_targets(c, ruleset, node_of, movable, target_mask)
    owners = np.concatenate([free, movable])
    cands = Candidates(
        owners,
        node_of[owners],
        bundle_cpu[owners],
        bundle_mem[owners],
        np.concatenate([columns.size - (grid.self_column >= 0), counts]),
        target=target,
        grid=grid,
    )
    if cands.grid_size < min(GRID_MIN, len(cands)):
        return cands.as_listed()
    return cands


def _listed_targets(
    c: ClusterArrays, ruleset: RuleSet, node_of: I64, movable: I64, target_mask: Bool | None
) -> tuple[I64, I64]:
    """Per bundle the number of allowed targets, and the targets (row-major, ascending)."""
    mask = ruleset.preferred[movable]
    mask &= c.node_usable[None, :]
    if ruleset.neg_bundle.size:
        mask &= ~blocked_nodes(ruleset, node_of, c.guest_node)[movable]
    if target_mask is not None:
        mask &= target_mask[movable]
    mask[np.arange(movable.size), node_of[movable]] = False
    counts = np.count_nonzero(mask, axis=1)
    target = np.flatnonzero(mask)
    target -= np.repeat(np.arange(movable.size) * c.n_nodes, counts)
    return counts.astype(np.int64, copy=False), target.astype(np.int64, copy=False)
