"""The CRS node load and cluster imbalance, exact and vectorised over candidate moves.

What PVE computes (proxmox-resource-scheduling, ``calculate_node_imbalance`` and
``NodeStats::load``): node load = (cpu/maxcpu + mem/maxmem) / 2; imbalance = population
standard deviation of the loads over their mean (the coefficient of variation), divided by
its upper bound sqrt(n-1) so it lies in 0..1; 0 when there are fewer than two nodes or the
loads sum to 0. PVE sums the loads and the squared deviations in node order, one after the
other; :func:`imbalance` does the same (``np.cumsum`` is a sequential sum) so the printed
value matches PVE to the last bit for the same node order.

Simulating a move (``remove_running_resource``/``add_running_resource``): the source loses
the guest's cpu and mem, each floored at 0 (PVE: ``f64::max(0, ..)`` and ``saturating_sub``),
the target gains them.

:func:`imbalance_after_moves` scores k candidate moves in O(1) each: only the source and the
target change, so the sums of (centred) loads and squared loads are updated for those two
nodes (sums centred on the current mean). :func:`cv_squared_on_grid` does the same for groups
of moves (a bundle's: one source, one usage) to the same target nodes, broadcasting per-group
and per-node values over [targets, groups] block by block. Their rounding error is bounded in
squared-CV space (see :func:`cv_squared_after_moves`); callers re-score the winner and every
candidate that might tie with it with :func:`imbalance_after_moves_exact` before truncating and
tie-breaking, so the chosen move and its printed value are exactly PVE's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from balancer.cluster import F64, I64

TRUNCATE_FACTOR = 1e15
"""PVE truncates scored imbalances to f64::DIGITS = 15 decimal digits before comparing them."""


def _ratio(used: F64, capacity: F64) -> F64:
    out = np.zeros(np.broadcast(used, capacity).shape, dtype=np.float64)
    np.divide(used, capacity, out=out, where=capacity > 0)
    return out


def node_load(cpu: F64, mem: F64, maxcpu: F64, maxmem: F64) -> F64:
    """(cpu/maxcpu + mem/maxmem) / 2 per node; a zero capacity contributes 0."""
    return (_ratio(cpu, maxcpu) + _ratio(mem, maxmem)) / 2.0


def imbalance_cv(loads: F64) -> float:
    """Raw coefficient of variation of the loads (population std / mean), as PVE sums it."""
    n = int(loads.size)
    if n < 2:
        return 0.0
    total = float(np.cumsum(loads)[-1])
    if total == 0.0:
        return 0.0
    mean = total / n
    squared = float(np.cumsum((loads - mean) ** 2)[-1])
    return math.sqrt(squared / n) / mean


def imbalance(loads: F64) -> float:
    """CV / sqrt(n-1): the PVE 9.2 cluster imbalance, 0..1."""
    n = int(loads.size)
    if n < 2:
        return 0.0
    return imbalance_cv(loads) / math.sqrt(n - 1)


def truncate(values: F64) -> F64:
    """Cut to 15 decimal digits as ``ScoredMigration::new`` does."""
    return np.trunc(values * TRUNCATE_FACTOR) / TRUNCATE_FACTOR


def resource_spread(cpu: F64, mem: F64, maxcpu: F64, maxmem: F64) -> tuple[float, float]:
    """Imbalance of the cpu loads alone and of the memory loads alone (same 0..1 scale)."""
    return imbalance(_ratio(cpu, maxcpu)), imbalance(_ratio(mem, maxmem))


def _moved_usage(
    node_cpu: F64, node_mem: F64, source: I64, target: I64, dcpu: F64, dmem: F64
) -> tuple[F64, F64, F64, F64]:
    src_cpu = np.maximum(node_cpu[source] - dcpu, 0.0)
    src_mem = np.maximum(node_mem[source] - dmem, 0.0)
    return src_cpu, src_mem, node_cpu[target] + dcpu, node_mem[target] + dmem


ROUNDING_SLACK = 1e-13
"""Relative rounding bound used for the squared CV of the O(1) scorer (about 450 ulps)."""

GRID_BLOCK = 65_536
"""Grid cells scored per block: numpy's cost per call is small next to a block's work, and a
block's scratch arrays (512 KiB each) stay in cache."""


@dataclass(slots=True)
class _SourceSide:
    """The current loads centred on their mean, and per group of moves the source's side."""

    n: int
    centre: float
    dev: F64
    dev_sq: float
    half_inv_cpu: F64
    half_inv_mem: F64
    s1_base: F64
    """Sum of centred loads once the source has lost the moved usage."""
    s2_base: F64
    """Sum of squared centred loads once the source has lost the moved usage."""


def _source_side(
    node_cpu: F64, node_mem: F64, maxcpu: F64, maxmem: F64, source: I64, dcpu: F64, dmem: F64
) -> _SourceSide:
    n = int(node_cpu.size)
    loads = node_load(node_cpu, node_mem, maxcpu, maxmem)
    centre = float(loads.mean())
    dev = loads - centre
    dev_sum = float(dev.sum())
    dev_sq = float((dev * dev).sum())
    half_inv_cpu = _ratio(np.ones(n), maxcpu) / 2.0
    half_inv_mem = _ratio(np.ones(n), maxmem) / 2.0
    src_cpu = np.maximum(node_cpu[source] - dcpu, 0.0)
    src_mem = np.maximum(node_mem[source] - dmem, 0.0)
    src_new = src_cpu * half_inv_cpu[source] + src_mem * half_inv_mem[source] - centre
    src_old = dev[source]
    return _SourceSide(
        n,
        centre,
        dev,
        dev_sq,
        half_inv_cpu,
        half_inv_mem,
        dev_sum + (src_new - src_old),
        dev_sq + (src_new - src_old) * (src_new + src_old),
    )


def _bound(side: _SourceSide, s2_max: float, s1_sq_max: float, total_min: float) -> float:
    if total_min <= 0.0:
        return float("inf")
    scale = side.n * (s2_max + side.dev_sq) + s1_sq_max
    return ROUNDING_SLACK * scale / (total_min * total_min)


def cv_squared_after_moves(
    node_cpu: F64,
    node_mem: F64,
    maxcpu: F64,
    maxmem: F64,
    source: I64,
    target: I64,
    dcpu: F64,
    dmem: F64,
    runs: I64 | None = None,
) -> tuple[F64, float]:
    """Squared coefficient of variation after each of k single moves, and a rounding bound.

    O(1) per move from sums of loads centred on the current mean: the squared CV is
    (n*S2 - S1^2) / (n*mean0 + S1)^2 with S1, S2 the sums of centred loads and their squares
    after the move. The absolute error of every value stays below the returned bound; it
    matters near 0, where n*S2 and S1^2 cancel (the CV itself can then be off by ~1e-8), so
    callers compare squared values with the bound and re-score contenders exactly.
    ``runs`` (optional) lists the first position of each group of consecutive moves sharing
    source, cpu and mem (one bundle's targets): the source side is then computed once per group.
    Values can be a hair below 0 when the true value is 0.
    """
    n = int(node_cpu.size)
    k = int(source.size)
    if n < 2 or k == 0:
        return np.zeros(k, dtype=np.float64), 0.0
    at = slice(None) if runs is None else runs
    side = _source_side(node_cpu, node_mem, maxcpu, maxmem, source[at], dcpu[at], dmem[at])

    # The hot loop over every candidate: gathers from per-node tables into reused buffers
    # (mode="clip" lets np.take write straight into ``out``), everything else in place.
    shift, s2, s1 = np.empty((3, k), dtype=np.float64)
    np.take(side.half_inv_cpu, target, out=shift, mode="clip")
    shift *= dcpu
    np.take(side.half_inv_mem, target, out=s1, mode="clip")
    s1 *= dmem
    shift += s1
    np.take(2.0 * side.dev, target, out=s2, mode="clip")
    s2 += shift
    s2 *= shift
    if runs is None:
        s2 += side.s2_base
        np.add(side.s1_base, shift, out=s1)
    else:
        run_of = np.repeat(np.arange(runs.size, dtype=np.int64), np.diff(np.append(runs, k)))
        np.take(side.s2_base, run_of, out=s1, mode="clip")
        s2 += s1
        np.take(side.s1_base, run_of, out=s1, mode="clip")
        s1 += shift
    s2_max = max(float(s2.max()), -float(s2.min()))
    cv_sq, s1_sq_max, total_min = _finish_cv_squared(s2, s1, shift, side, s2)
    return cv_sq, _bound(side, s2_max, s1_sq_max, total_min)


def _finish_cv_squared(
    s2: F64, s1: F64, scratch: F64, side: _SourceSide, out: F64
) -> tuple[F64, float, float]:
    """(n*S2 - S1^2) / (n*mean0 + S1)^2 into ``out`` (may be ``s2``; inputs are overwritten),
    with the largest S1^2 and the smallest total load (0 where the total is not positive)."""
    s2 *= side.n
    s1_sq = np.multiply(s1, s1, out=scratch)
    s2 -= s1_sq
    s1_sq_max = float(s1_sq.max())
    s1 += side.n * side.centre
    total_min = float(s1.min())
    s1 *= s1
    if total_min <= 0.0:
        quotient = np.divide(s2, s1, out=scratch, where=s1 > 0)
        np.copyto(out, 0.0)
        np.copyto(out, quotient, where=s1 > 0)
    else:
        np.divide(s2, s1, out=out)
    return out, s1_sq_max, total_min


def cv_squared_on_grid(
    node_cpu: F64,
    node_mem: F64,
    maxcpu: F64,
    maxmem: F64,
    source: I64,
    dcpu: F64,
    dmem: F64,
    columns: I64,
    self_column: I64,
) -> tuple[F64, float]:
    """Squared CV after moving each of m groups to each of c nodes: [c, m], and a bound.

    Group i moves ``dcpu[i]``/``dmem[i]`` from ``source[i]`` to node ``columns[j]`` in cell
    [j, i]; its cell at column ``self_column[i]`` (its own source, -1: none) is no move: +inf,
    and left out of the rounding bound, which is otherwise that of
    :func:`cv_squared_after_moves` (same arithmetic per move). Works through blocks of groups,
    broadcasting per-column and per-group values along rows as long as the block.
    """
    m, c = int(source.size), int(columns.size)
    out = np.zeros((c, m), dtype=np.float64)
    groups, cols, other = self_cells(self_column, c)
    if node_cpu.size < 2 or m == 0 or c == 0:
        out[cols, groups] = np.inf
        return out, 0.0
    side = _source_side(node_cpu, node_mem, maxcpu, maxmem, source, dcpu, dmem)
    half_inv_cpu = side.half_inv_cpu[columns, None]
    half_inv_mem = side.half_inv_mem[columns, None]
    two_dev = 2.0 * side.dev[columns, None]
    s2_max = s1_sq_max = 0.0
    total_min = float("inf")
    block = max(1, GRID_BLOCK // c)
    scratch = np.empty((3, c, min(block, m)), dtype=np.float64)
    for start in range(0, m, block):
        at = slice(start, min(start + block, m))
        shift, s2, s1 = scratch[:, :, : at.stop - start]
        np.multiply(half_inv_cpu, dcpu[at], out=shift)
        np.multiply(half_inv_mem, dmem[at], out=s1)
        shift += s1
        np.add(two_dev, shift, out=s2)
        s2 *= shift
        s2 += side.s2_base[at]
        np.add(side.s1_base[at], shift, out=s1)
        # A group's own cell takes a neighbour's values: it must not widen the bound.
        lo, hi = np.searchsorted(groups, (start, at.stop))
        here = groups[lo:hi] - start
        s2[cols[lo:hi], here] = s2[other[lo:hi], here]
        s1[cols[lo:hi], here] = s1[other[lo:hi], here]
        s2_max = max(s2_max, float(s2.max()), -float(s2.min()))
        _, block_s1_sq, block_total = _finish_cv_squared(s2, s1, shift, side, out[:, at])
        s1_sq_max = max(s1_sq_max, block_s1_sq)
        total_min = min(total_min, block_total)
    out[cols, groups] = np.inf
    return out, _bound(side, s2_max, s1_sq_max, total_min)


def self_cells(self_column: I64, columns: int) -> tuple[I64, I64, I64]:
    """Groups with a cell at their own source, that cell's column, and a neighbouring column."""
    groups = np.flatnonzero(self_column >= 0)
    cols = self_column[groups]
    return groups, cols, np.where(cols + 1 < columns, cols + 1, cols - 1)


def cv_after_moves(
    node_cpu: F64,
    node_mem: F64,
    maxcpu: F64,
    maxmem: F64,
    source: I64,
    target: I64,
    dcpu: F64,
    dmem: F64,
    runs: I64 | None = None,
) -> F64:
    """Coefficient of variation after each of k moves (see :func:`cv_squared_after_moves`)."""
    cv_sq, _ = cv_squared_after_moves(
        node_cpu, node_mem, maxcpu, maxmem, source, target, dcpu, dmem, runs
    )
    return np.sqrt(np.maximum(cv_sq, 0.0))


def imbalance_after_moves(
    node_cpu: F64,
    node_mem: F64,
    maxcpu: F64,
    maxmem: F64,
    source: I64,
    target: I64,
    dcpu: F64,
    dmem: F64,
) -> F64:
    """Imbalance after each of k single moves, vectorised, touching only source and target."""
    n = int(node_cpu.size)
    cv = cv_after_moves(node_cpu, node_mem, maxcpu, maxmem, source, target, dcpu, dmem)
    return cv / math.sqrt(n - 1) if n >= 2 else cv


def imbalance_after_moves_exact(
    node_cpu: F64,
    node_mem: F64,
    maxcpu: F64,
    maxmem: F64,
    source: I64,
    target: I64,
    dcpu: F64,
    dmem: F64,
    chunk: int = 4096,
) -> F64:
    """Imbalance after each move recomputed from the full node vector, in PVE's summation order."""
    n = int(node_cpu.size)
    k = int(source.size)
    out = np.zeros(k, dtype=np.float64)
    if n < 2 or k == 0:
        return out
    rows_all = np.arange(k)
    src_cpu, src_mem, tgt_cpu, tgt_mem = _moved_usage(
        node_cpu, node_mem, source, target, dcpu, dmem
    )
    for start in range(0, k, chunk):
        rows = rows_all[start : start + chunk]
        local = rows - start
        cpu = np.repeat(node_cpu[None, :], rows.size, axis=0)
        mem = np.repeat(node_mem[None, :], rows.size, axis=0)
        cpu[local, source[rows]] = src_cpu[rows]
        mem[local, source[rows]] = src_mem[rows]
        cpu[local, target[rows]] = tgt_cpu[rows]
        mem[local, target[rows]] = tgt_mem[rows]
        loads = node_load(cpu, mem, maxcpu[None, :], maxmem[None, :])
        total = np.cumsum(loads, axis=1)[:, -1]
        mean = total / n
        squared = np.cumsum((loads - mean[:, None]) ** 2, axis=1)[:, -1]
        cv = np.zeros(rows.size, dtype=np.float64)
        np.divide(np.sqrt(squared / n), mean, out=cv, where=total != 0.0)
        out[rows] = cv / math.sqrt(n - 1)
    return out
