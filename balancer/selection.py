"""Choosing the one move of a round: bruteforce (lowest imbalance) or TOPSIS, as PVE does.

From proxmox-resource-scheduling (``scheduler.rs``, ``topsis.rs``):

- bruteforce: every candidate is scored by the imbalance the cluster would have after it;
  the score is truncated to 15 decimal digits (``f64::DIGITS``) and candidates are ordered by
  (truncated imbalance, sid, source node, target node), strings compared byte-wise. Here the
  vectorised scorer ranks all candidates by squared CV with a rounding bound; the best few
  and every candidate that could tie with them (within the bound, or within 1e-15 after
  truncation) are re-scored exactly (full node vector, PVE's summation order) before truncation and
  the tie-break, so the winner and its printed imbalance are PVE's.
- topsis: each candidate's post-move state is described by four criteria, all minimised,
  weights 1, 2, 5, 10 (normalised by their sum): 1 + RMS of the node cpu loads, 1 + highest
  cpu load, 1 + RMS of the node mem loads, 1 + highest mem load. Columns are divided by their
  L2 norm; the weighted differences to the ideal best/worst give d+ and d-; score =
  d-/(d+ + d-) (0 when both are 0); highest first. PVE sorts stably, so exact score ties keep
  candidate order; we order candidates by (sid, source, target), i.e. we assume PVE generates
  them in sorted order. Every candidate whose score is within 1e-9 of the best is re-scored
  from exactly computed criteria (against the same norms and ideals) before the tie-break.
  The winner's reported imbalance is its exact, truncated imbalance.

Only a move's source and target change, so both scorers work from per-node tables and
per-run values (a run: one bundle's consecutive candidates). The candidates of a grid (runs
all going to the same nodes) are scored block by block as [nodes, runs] arrays,
broadcasting per-node and per-run values; listed candidates gather them per candidate.
TOPSIS makes two passes over a grid's blocks (the criteria, kept, and their column moments;
then the scores) and ranks by (d+/d-)^2, which orders as the score does; the window of the
exact re-scoring is converted to it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from balancer.candidates import Candidates, Grid
from balancer.cluster import F64, I64
from balancer.imbalance import (
    GRID_BLOCK,
    _ratio,
    cv_squared_after_moves,
    cv_squared_on_grid,
    imbalance_after_moves_exact,
    self_cells,
    truncate,
)

TOPSIS_WEIGHTS = np.array([1.0, 2.0, 5.0, 10.0])


@dataclass(slots=True)
class NodeState:
    """Per-node usage and capacity the scorers work on (as the mode counts usage)."""

    cpu: F64
    mem: F64
    maxcpu: F64
    maxmem: F64


@dataclass(slots=True)
class Scored:
    index: int
    """Position in the candidate arrays."""
    imbalance: float
    """Exact imbalance after the move, truncated to 15 digits as PVE reports it."""


def _tie_order(picked: Candidates, sid_rank: I64, node_rank: I64, key: F64) -> I64:
    """Positions in ``picked`` ordered by key, then sid, source and target names."""
    return np.lexsort(
        (node_rank[picked.target], node_rank[picked.source], sid_rank[picked.bundle], key)
    )


def exact_scores(state: NodeState, picked: Candidates) -> F64:
    """Exact, truncated imbalance after each of the given candidates."""
    exact = imbalance_after_moves_exact(
        state.cpu,
        state.mem,
        state.maxcpu,
        state.maxmem,
        picked.source,
        picked.target,
        picked.cpu,
        picked.mem,
    )
    return truncate(exact)


@dataclass(slots=True)
class _Scores:
    """A score per candidate, lower is better: the grid runs' [c, runs] (+inf on the cells
    that are no move), then the listed runs' [k]."""

    cands: Candidates
    grid: F64
    listed: F64

    def kth_smallest(self, keep: int) -> float:
        parts = [p.reshape(-1) for p in (self.grid, self.listed) if p.size]
        if keep == 1:
            return min(float(p.min()) for p in parts)
        # Any `keep` of the values bound the keep-th smallest from above: filter, then partition.
        sample = np.concatenate([p[: 64 * keep] for p in parts])
        ceiling = float(np.partition(sample, keep - 1)[keep - 1])
        below = np.concatenate([p[p <= ceiling] for p in parts])
        return float(np.partition(below, keep - 1)[keep - 1])

    def rows_at_most(self, limit: float) -> I64:
        """Positions (ascending) of the candidates scoring at most ``limit``."""
        rows = [np.flatnonzero(self.listed <= limit) + self.cands.grid_size]
        grid = self.cands.grid
        if grid is not None:
            column, run = np.divmod(np.flatnonzero(self.grid <= limit), grid.runs)
            move = column != grid.self_column[run]
            rows.append(self.cands.grid_rows(run[move], column[move]))
        return np.sort(np.concatenate(rows))


NO_GRID = np.zeros((0, 0), dtype=np.float64)

TOPSIS_WINDOW = 1e-9
"""Candidates scoring within this of the best (or the limit-th best) are re-scored exactly."""


def _ratio_limit(ratios: _Scores, keep: int) -> float:
    """Largest (d+/d-)^2 whose score is within TOPSIS_WINDOW (and a hair) of the keep-th best."""
    best = ratios.kth_smallest(keep)
    lowest = 1.0 / (1.0 + math.sqrt(best)) - TOPSIS_WINDOW
    if lowest <= 0.0:
        return math.inf
    return ((1.0 - lowest) / lowest) ** 2 * (1.0 + 1e-9)


def _cv_squared(state: NodeState, cands: Candidates) -> tuple[_Scores, float]:
    """Squared CV after every candidate and a bound on its rounding error."""
    grid_cv, grid_slack = NO_GRID, 0.0
    if cands.grid is not None:
        runs = slice(0, cands.grid.runs)
        grid_cv, grid_slack = cv_squared_on_grid(
            state.cpu,
            state.mem,
            state.maxcpu,
            state.maxmem,
            cands.run_source[runs],
            cands.run_cpu[runs],
            cands.run_mem[runs],
            cands.grid.columns,
            cands.grid.self_column,
        )
    listed = cands.listed()
    cv_sq, slack = cv_squared_after_moves(
        state.cpu,
        state.mem,
        state.maxcpu,
        state.maxmem,
        listed.source,
        listed.target,
        listed.cpu,
        listed.mem,
        listed.runs(),
    )
    return _Scores(cands, grid_cv, cv_sq), max(grid_slack, slack)


def select_bruteforce(
    state: NodeState,
    cands: Candidates,
    sid_rank: I64,
    node_rank: I64,
    limit: int = 1,
    timings: dict[str, float] | None = None,
) -> list[Scored]:
    """The ``limit`` best moves by resulting imbalance, PVE's order; [] without candidates.

    ``sid_rank`` ranks each bundle's leading sid; ``node_rank`` each node name. ``timings``
    receives the milliseconds of the ``scoring`` and ``selection`` phases.
    """
    k = len(cands)
    if k == 0 or limit <= 0:
        return []
    started = time.perf_counter()
    cv_sq, slack = _cv_squared(state, cands)
    scored_at = time.perf_counter()
    keep = min(limit, k)
    bound = max(cv_sq.kth_smallest(keep), 0.0) + slack
    # Values within 1e-15 of each other in imbalance can truncate to the same 15 digits.
    trunc_slack = 2.0 * math.sqrt(bound * (state.cpu.size - 1)) * 2e-15 + 1e-29 * state.cpu.size
    rows = cv_sq.rows_at_most(bound + slack + trunc_slack)
    picked = cands.take(rows)
    scores = exact_scores(state, picked)
    ordered = _tie_order(picked, sid_rank, node_rank, scores)[:keep]
    _record(timings, started, scored_at)
    return [Scored(int(rows[i]), float(scores[i])) for i in ordered.tolist()]


def _record(timings: dict[str, float] | None, started: float, scored_at: float) -> None:
    if timings is not None:
        timings["scoring"] = (scored_at - started) * 1000
        timings["selection"] = (time.perf_counter() - scored_at) * 1000


def topsis_scores(matrix: F64, weights: F64, maximize: npt.NDArray[np.bool_] | None = None) -> F64:
    """Generic TOPSIS closeness (0..1, higher better) of each row of ``matrix``.

    Columns are L2-normalised (all-zero columns stay 0), weights normalised by their sum.
    """
    if matrix.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    norms = np.sqrt((matrix * matrix).sum(axis=0))
    normalised = np.divide(
        matrix, norms, out=matrix.astype(np.float64, copy=True), where=norms != 0
    )
    return _closeness(normalised, weights, maximize)


def _closeness(normalised: F64, weights: F64, maximize: npt.NDArray[np.bool_] | None) -> F64:
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    up = np.zeros(w.size, dtype=np.bool_) if maximize is None else maximize
    lo, hi = normalised.min(axis=0), normalised.max(axis=0)
    best = np.where(up, hi, lo)
    worst = np.where(up, lo, hi)
    d_best = np.sqrt((((normalised - best) * w) ** 2).sum(axis=1))
    d_worst = np.sqrt((((normalised - worst) * w) ** 2).sum(axis=1))
    div = d_best + d_worst
    out = np.zeros(normalised.shape[0], dtype=np.float64)
    np.divide(d_worst, div, out=out, where=div != 0)
    return out


@dataclass(slots=True)
class _Resource:
    """One resource (cpu or mem): per-node tables and per-run values for its two criteria."""

    loads: F64
    inv: F64
    squared: F64
    """Per node: current load, 1/capacity (0 without capacity), load squared."""
    delta: F64
    squares: F64
    """Per run: usage moved; sum of squared loads once the source has lost it."""
    first: F64
    first_at: I64
    second: F64
    """Per run: the highest load of the other nodes (the source's new load included), the
    node it is on (-1: the source or none), and the next one: the highest if the target is
    ``first_at``."""


def _resource(used: F64, cap: F64, source: I64, delta: F64) -> _Resource:
    """Tables of one resource; the run values from the top 3 loads, skipping the source."""
    inv = _ratio(np.ones(used.size), cap)
    loads = used * inv
    squared = loads * loads
    order = np.argsort(-loads, kind="stable")[:3]
    top = np.concatenate([loads[order], np.zeros(3 - order.size)])
    top_at = np.concatenate([order, np.full(3 - order.size, -1)])
    src_new = np.maximum(used[source] - delta, 0.0) * inv[source]
    first = np.where(top_at[0] == source, top[1], top[0])
    first_at = np.where(top_at[0] == source, top_at[1], top_at[0])
    second = np.where((top_at[0] == source) | (top_at[1] == source), top[2], top[1])
    np.maximum(first, src_new, out=first)
    np.maximum(second, src_new, out=second)
    squares = float(squared.sum()) - squared[source] + src_new * src_new
    return _Resource(loads, inv, squared, delta, squares, first, first_at, second)


def _resources(
    state: NodeState, cands: Candidates, runs: slice = slice(None)
) -> tuple[_Resource, _Resource]:
    source = cands.run_source[runs]
    return (
        _resource(state.cpu, state.maxcpu, source, cands.run_cpu[runs]),
        _resource(state.mem, state.maxmem, source, cands.run_mem[runs]),
    )


def _criteria_excess(state: NodeState, cands: Candidates) -> F64:
    """[4, k] post-move criteria minus 1: RMS cpu load, max cpu load, RMS mem, max mem.

    Per candidate the target's new load is gathered from the per-node tables and the run's
    values through a run index; all per-candidate work is in place.
    """
    n = state.cpu.size
    k = len(cands)
    target = cands.target
    run_of = np.repeat(np.arange(cands.owners.size, dtype=np.int64), cands.counts)
    # One block for the four columns and two scratch rows.
    block = np.empty((6, k), dtype=np.float64)
    out = block[:4]
    scratch = block[4]
    at_scratch = block[5].view(np.int64)
    hit = np.empty(k, dtype=np.bool_)
    for col, res in enumerate(_resources(state, cands)):
        rms, high = out[2 * col], out[2 * col + 1]
        # Target's new load into `high`: loads[t] + delta * inv[t].
        np.take(res.inv, target, out=scratch, mode="clip")
        scratch *= cands.cpu if col == 0 else cands.mem
        np.take(res.loads, target, out=high, mode="clip")
        high += scratch
        # Sum of squares: run's sum - loads[t]^2 + new^2, then RMS.
        np.take(res.squared, target, out=rms, mode="clip")
        np.multiply(high, high, out=scratch)
        scratch -= rms
        np.take(res.squares, run_of, out=rms, mode="clip")
        rms += scratch
        np.maximum(rms, 0.0, out=rms)
        rms *= 1.0 / n
        np.sqrt(rms, out=rms)
        # Highest load: the run's highest other node, unless the target is that node.
        np.take(res.first, run_of, out=scratch, mode="clip")
        np.take(res.first_at, run_of, out=at_scratch, mode="clip")
        np.equal(at_scratch, target, out=hit)
        on_first = np.flatnonzero(hit)
        scratch[on_first] = res.second[run_of[on_first]]
        np.maximum(high, scratch, out=high)
    return out


@dataclass(slots=True)
class _GridTables:
    """Both resources' tables stacked (cpu, mem): per column [2, c, 1], per run [2, m]."""

    loads: F64
    inv: F64
    squared: F64
    delta: F64
    squares: F64
    first: F64
    second: F64
    first_column: I64
    """The column of each run's ``first_at`` (-1: not a column)."""
    n: int


def _grid_tables(resources: tuple[_Resource, _Resource], columns: I64, n: int) -> _GridTables:
    column_of = np.full(n + 1, -1, dtype=np.int64)
    column_of[columns] = np.arange(columns.size)

    def per_column(name: str) -> F64:
        return np.stack([getattr(res, name)[columns, None] for res in resources])

    def per_run(name: str) -> F64:
        return np.stack([getattr(res, name) for res in resources])

    # first_at is -1 when there is no such node: column_of[-1] is the padding, -1.
    return _GridTables(
        per_column("loads"),
        per_column("inv"),
        per_column("squared"),
        per_run("delta"),
        per_run("squares"),
        per_run("first"),
        per_run("second"),
        np.stack([column_of[res.first_at] for res in resources]),
        n,
    )


def _grid_criteria(t: _GridTables, at: slice, out: F64) -> None:
    """[4, c, r] criteria minus 1 of the runs ``at`` to every column into ``out``.

    Both resources at once, the arithmetic of :func:`_criteria_excess` per cell.
    """
    rms, high = out[0::2], out[1::2]
    np.multiply(t.inv, t.delta[:, None, at], out=high)
    high += t.loads
    np.multiply(high, high, out=rms)
    rms -= t.squared
    rms += t.squares[:, None, at]
    np.maximum(rms, 0.0, out=rms)
    rms *= 1.0 / t.n
    np.sqrt(rms, out=rms)
    # The highest other node, unless the target is that node (then the next one).
    first_column = t.first_column[:, at]
    res, run = np.nonzero(first_column >= 0)
    col = first_column[res, run]
    before = high[res, col, run]
    np.maximum(high, t.first[:, None, at], out=high)
    high[res, col, run] = np.maximum(before, t.second[:, at][res, run])


@dataclass(slots=True)
class _Moments:
    """Sum, sum of squares, min and max of each criterion (minus 1) over the candidates."""

    f_sum: F64 = field(default_factory=lambda: np.zeros(4))
    f_sq: F64 = field(default_factory=lambda: np.zeros(4))
    f_lo: F64 = field(default_factory=lambda: np.full(4, np.inf))
    f_hi: F64 = field(default_factory=lambda: np.full(4, -np.inf))

    def add(self, f: F64) -> None:
        """Add the candidates of [4, ...] criteria."""
        f = f.reshape(4, -1)
        self.f_sum += f.sum(axis=1)
        self.f_sq += np.einsum("ij,ij->i", f, f)
        np.minimum(self.f_lo, f.min(axis=1), out=self.f_lo)
        np.maximum(self.f_hi, f.max(axis=1), out=self.f_hi)


@dataclass(slots=True)
class _SelfCells:
    """A block's cells at a run's own source (no move): column, run in block, a neighbour."""

    cols: I64
    runs: I64
    other: I64


def _add_block_moments(excess: F64, own: _SelfCells, moments: _Moments) -> None:
    """Add a block's [4, c, r] criteria to ``moments``; a run's own cell (no move) first takes
    a neighbour's values, which are then taken back out of the sums."""
    excess[:, own.cols, own.runs] = excess[:, own.other, own.runs]
    copies = excess[:, own.other, own.runs]
    moments.add(excess)
    moments.f_sum -= copies.sum(axis=1)
    moments.f_sq -= np.einsum("ij,ij->i", copies, copies)


@dataclass(slots=True)
class _Ideals:
    """Column norms and ideals of the four criteria, from their moments."""

    norms: F64
    f_lo: F64
    f_hi: F64
    scale: F64
    """(w / norm)^2 per criterion."""

    @classmethod
    def of(cls, k: int, moments: _Moments) -> _Ideals:
        # Criterion a = 1 + f: sum a^2 = k + 2 sum f + sum f^2, min/max a = 1 + min/max f.
        norms = np.sqrt(k + 2.0 * moments.f_sum + moments.f_sq)
        w = TOPSIS_WEIGHTS / TOPSIS_WEIGHTS.sum()
        return cls(norms, moments.f_lo, moments.f_hi, (w / norms) ** 2)


def _ratio_into(excess: F64, ideals: _Ideals, out: F64, scratch: F64) -> None:
    """(d+/d-)^2 of each candidate of ``excess`` [4, k] (overwritten) into ``out`` [k];
    +inf where d- = 0. The TOPSIS score d-/(d+ + d-) = 1/(1 + d+/d-) falls as it grows.

    d+^2 = sum c_j x_j^2 and d-^2 = sum c_j (R_j - x_j)^2 with x_j = f_j - min f_j,
    c_j = (w_j/N_j)^2, R_j = max_j - min_j: d-^2 = d+^2 - 2 sum c_j R_j x_j + sum c_j R_j^2.
    """
    spread = ideals.f_hi - ideals.f_lo
    excess -= ideals.f_lo[:, None]
    cross = np.einsum("j,jk->k", ideals.scale * spread, excess, out=scratch)
    excess *= excess
    excess *= ideals.scale[:, None]
    d_best = excess.sum(axis=0, out=out)
    d_worst = np.multiply(cross, -2.0, out=cross)
    d_worst += d_best
    d_worst += float((ideals.scale * spread * spread).sum())
    np.maximum(d_worst, 0.0, out=d_worst)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(d_best, d_worst, out=out)
    if float(d_worst.min()) == 0.0:
        out[d_worst == 0.0] = np.inf


def _blocks(runs: int, columns: int) -> Iterator[slice]:
    step = max(1, GRID_BLOCK // max(columns, 1))
    for start in range(0, runs, step):
        yield slice(start, min(start + step, runs))


@dataclass(slots=True)
class _GridCriteria:
    """The grid runs' criteria [4, c, r], one contiguous chunk per block of runs."""

    kept: F64
    blocks: list[slice]
    columns: int
    groups: I64
    cols: I64
    """The cells that are no move: grid run, column."""

    def block(self, at: slice) -> F64:
        c = self.columns
        return self.kept[4 * c * at.start : 4 * c * at.stop].reshape(4, c, -1)


def _grid_first_pass(
    state: NodeState, cands: Candidates, grid: Grid, moments: _Moments
) -> _GridCriteria:
    """The grid runs' criteria, their moments added to ``moments``."""
    m, c = grid.runs, grid.columns.size
    tables = _grid_tables(_resources(state, cands, slice(0, m)), grid.columns, state.cpu.size)
    groups, cols, other = self_cells(grid.self_column, c)
    out = _GridCriteria(np.empty(4 * c * m), list(_blocks(m, c)), c, groups, cols)
    for at in out.blocks:
        excess = out.block(at)
        lo, hi = np.searchsorted(groups, (at.start, at.stop))
        own = _SelfCells(cols[lo:hi], groups[lo:hi] - at.start, other[lo:hi])
        _grid_criteria(tables, at, excess)
        _add_block_moments(excess, own, moments)
    return out


def _grid_ratios(criteria: _GridCriteria, ideals: _Ideals) -> F64:
    """Distance ratios [c, runs] of the grid runs (+inf on the cells that are no move)."""
    c = criteria.columns
    ratios = np.empty((c, criteria.blocks[-1].stop), dtype=np.float64)
    scratch = np.empty((2, c * criteria.blocks[0].stop), dtype=np.float64)
    for at in criteria.blocks:
        cells = c * (at.stop - at.start)
        excess = criteria.block(at).reshape(4, cells)
        _ratio_into(excess, ideals, scratch[0, :cells], scratch[1, :cells])
        ratios[:, at] = scratch[0, :cells].reshape(c, -1)
    ratios[criteria.cols, criteria.groups] = np.inf
    return ratios


def _topsis_ratios(state: NodeState, cands: Candidates) -> tuple[_Scores, _Ideals]:
    """(d+/d-)^2 of every candidate and the ideals: the grid runs in two passes over blocks
    (the criteria, kept, and their moments; then the ratios), the listed runs at once."""
    moments = _Moments()
    grid = None
    if cands.grid is not None:
        grid = _grid_first_pass(state, cands, cands.grid, moments)
    listed = cands.listed()
    excess = _criteria_excess(state, listed) if len(listed) else None
    if excess is not None:
        moments.add(excess)
    ideals = _Ideals.of(len(cands), moments)
    ratios, scratch = np.empty((2, len(listed)), dtype=np.float64)
    if excess is not None:
        _ratio_into(excess, ideals, ratios, scratch)
    grid_ratios = NO_GRID if grid is None else _grid_ratios(grid, ideals)
    return _Scores(cands, grid_ratios, ratios), ideals


def topsis_criteria(state: NodeState, cands: Candidates) -> F64:
    """[k, 4] post-move criteria: 1+RMS cpu load, 1+max cpu load, 1+RMS mem, 1+max mem."""
    if len(cands) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    excess = _criteria_excess(state, cands.as_listed())
    excess += 1.0
    return np.ascontiguousarray(excess.T)


def _topsis_criteria_exact(state: NodeState, picked: Candidates) -> F64:
    out = np.empty((len(picked), 4))
    for pos, (s, t, dcpu, dmem) in enumerate(
        zip(
            picked.source.tolist(),
            picked.target.tolist(),
            picked.cpu.tolist(),
            picked.mem.tolist(),
            strict=True,
        )
    ):
        cpu, mem = state.cpu.copy(), state.mem.copy()
        cpu[s] = max(0.0, cpu[s] - dcpu)
        mem[s] = max(0.0, mem[s] - dmem)
        cpu[t] += dcpu
        mem[t] += dmem
        for col, (used, cap) in enumerate(((cpu, state.maxcpu), (mem, state.maxmem))):
            loads = _ratio(used, cap)
            squares = float(np.cumsum(loads**2)[-1])
            out[pos, 2 * col] = 1.0 + math.sqrt(squares / loads.size)
            out[pos, 2 * col + 1] = 1.0 + max(0.0, float(loads.max()))
    return out


def select_topsis(
    state: NodeState,
    cands: Candidates,
    sid_rank: I64,
    node_rank: I64,
    limit: int = 1,
    timings: dict[str, float] | None = None,
) -> list[Scored]:
    """The ``limit`` best moves by TOPSIS closeness over the post-move states."""
    k = len(cands)
    if k == 0 or limit <= 0:
        return []
    started = time.perf_counter()
    ratios, ideals = _topsis_ratios(state, cands)
    scored_at = time.perf_counter()
    keep = min(limit, k)
    rows = ratios.rows_at_most(_ratio_limit(ratios, keep))
    picked = cands.take(rows)
    # Re-score the contenders from exactly computed rows, against the same norms and ideals.
    w = TOPSIS_WEIGHTS / TOPSIS_WEIGHTS.sum()
    exact = _topsis_criteria_exact(state, picked) / ideals.norms
    normalised_lo = (1.0 + ideals.f_lo) / ideals.norms
    normalised_hi = (1.0 + ideals.f_hi) / ideals.norms
    d_best = np.sqrt((((exact - normalised_lo) * w) ** 2).sum(axis=1))
    d_worst = np.sqrt((((exact - normalised_hi) * w) ** 2).sum(axis=1))
    div = d_best + d_worst
    close = np.zeros(rows.size)
    np.divide(d_worst, div, out=close, where=div != 0)
    ordered = _tie_order(picked, sid_rank, node_rank, -close)[:keep]
    imb = exact_scores(state, picked.take(ordered))
    _record(timings, started, scored_at)
    return [
        Scored(int(rows[i]), float(v)) for i, v in zip(ordered.tolist(), imb.tolist(), strict=True)
    ]
