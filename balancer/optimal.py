"""The exact K-move reference: a mixed-integer program solved by HiGHS (scipy.optimize.milp).

Variables: x[j, n] = 1 when movable bundle j ends on node n (only legal nodes get a variable
that may be 1), and s[n] >= (load[n] - mu)^2 for each counted node through tangent cuts of
the square (a piecewise-linear under-estimate, 100 cuts between 0 and the highest load the
node may reach, accurate to ~h^2/4 for cut spacing h).

Objective: minimise sum_n (load[n] - mu)^2 for a reference mean mu (plus a tiny cost term so
that among equal plans the cheaper one wins). That sum equals n * variance + n * (mean - mu)^2,
so with mu at the mean the plan reaches it is exactly n x the variance, the numerator of the
squared CV imbalance (imbalance = sqrt(variance) / mean / sqrt(n-1)). On nodes of equal size
moves keep the mean, so the optimum is the CV optimum; with unequal nodes the mean moves a
little, so a second pass re-centres mu on the mean the first solution reached and the
placement with the lowest true imbalance (recomputed exactly) is kept. The linear L1 proxy
sum |load - mean| is not used: it weighs a far-off node no more than several near ones, so it
ties plans that the CV tells apart.

Constraints: each bundle on exactly one node; strict node affinity, usability and
negative-affinity partners (never on one node); final memory and cpu within the limits on
every node that receives a guest (a node already above receives nothing); at most K bundles
leave their node. The MILP fixes only the final placement: the moves are then ordered in waves
by the planner so that every intermediate state is legal too. The reported optimality gap is
HiGHS's relative MIP gap on the objective above (0 = proven optimal for it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from balancer.cluster import F64, I64
from balancer.cost import GIB
from balancer.planner import (
    PlanOutcome,
    Step,
    node_loads,
    order_in_waves,
    sequential,
    state_imbalance,
    to_moves,
)
from balancer.safety import PlanProblem, partner_blocked

CUTS_PER_NODE = 100
COST_WEIGHT = 1e-7
"""Objective weight per GiB moved: only breaks ties between plans of equal balance."""


@dataclass(slots=True)
class OptimalResult:
    outcome: PlanOutcome
    gap: float | None
    status: str


class _Columns:
    def __init__(self, cols: int) -> None:
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.n_rows = 0
        self.shape_cols = cols
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []

    def add(self, row: np.ndarray, col: np.ndarray, val: np.ndarray, lo: float, hi: float) -> None:
        """Rows are local indices 0..k-1 of a block with the same bounds per row."""
        count = int(row.max()) + 1 if row.size else 0
        self.r.append(row + self.n_rows)
        self.c.append(col)
        self.v.append(val)
        self.lower.append(np.full(count, lo))
        self.upper.append(np.full(count, hi))
        self.n_rows += count

    def add_bounded(
        self, row: np.ndarray, col: np.ndarray, val: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> None:
        self.r.append(row + self.n_rows)
        self.c.append(col)
        self.v.append(val)
        self.lower.append(lo)
        self.upper.append(hi)
        self.n_rows += lo.size

    def constraint(self) -> LinearConstraint:
        matrix = coo_matrix(
            (np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
            shape=(self.n_rows, self.shape_cols),
        ).tocsr()
        return LinearConstraint(matrix, np.concatenate(self.lower), np.concatenate(self.upper))


@dataclass(slots=True)
class _Solution:
    placement: I64 | None
    """Node of each movable bundle (in ``rows`` order), None when no solution was found."""
    gap: float | None
    status: str


def _solve(
    p: PlanProblem, rows: I64, max_moves: int, time_limit_s: float, reference_mean: float
) -> _Solution:
    """One MILP solve around the given reference mean load."""
    m, n = rows.size, p.n_nodes
    cur = p.bundle_node[rows]
    inv_cpu = np.divide(1.0, p.node_maxcpu, out=np.zeros(n), where=p.node_maxcpu > 0)
    inv_mem = np.divide(1.0, p.node_maxmem, out=np.zeros(n), where=p.node_maxmem > 0)
    bc, bm = p.bundle_cpu[rows], p.bundle_mem[rows]
    fixed_cpu = np.maximum(p.node_cpu - np.bincount(cur, weights=bc, minlength=n), 0.0)
    fixed_mem = np.maximum(p.node_mem - np.bincount(cur, weights=bm, minlength=n), 0.0)
    fixed_load = (fixed_cpu * inv_cpu + fixed_mem * inv_mem) / 2
    share = (bc[:, None] * inv_cpu[None, :] + bm[:, None] * inv_mem[None, :]) / 2

    full_mem = p.node_mem > p.mem_limit
    full_cpu = p.node_cpu > p.cpu_limit
    blocked = partner_blocked(p, np.where(p.bundle_movable, -1, p.bundle_node))[rows]
    legal = p.bundle_targets[rows] & p.node_usable[None, :] & ~blocked
    legal &= ~(full_mem | full_cpu)[None, :]
    legal[np.arange(m), cur] = True

    n_x = m * n
    counted = np.flatnonzero(p.node_counted)
    s_col = n_x + np.arange(n)
    n_vars = n_x + n
    xcol = np.arange(n_x).reshape(m, n)
    cons = _Columns(n_vars)

    # each bundle on exactly one node
    cons.add(np.repeat(np.arange(m), n), xcol.ravel(), np.ones(n_x), 1.0, 1.0)
    # at most K bundles leave their node: sum_j x[j, cur_j] >= m - K
    cons.add(np.zeros(m, dtype=np.int64), xcol[np.arange(m), cur], np.ones(m), m - max_moves, m)
    # memory and cpu limits on nodes that may receive
    mem_cap = np.maximum(p.mem_limit, p.node_mem) - fixed_mem
    cpu_cap = np.maximum(p.cpu_limit, p.node_cpu) - fixed_cpu
    node_rows = np.tile(np.arange(n), m)
    cons.add_bounded(node_rows, xcol.ravel(), np.repeat(bm, n), np.full(n, -np.inf), mem_cap + 1e-6)
    cons.add_bounded(node_rows, xcol.ravel(), np.repeat(bc, n), np.full(n, -np.inf), cpu_cap + 1e-9)
    # negative-affinity partners that both move: never on one node
    pairs = _movable_partner_pairs(p, rows)
    if pairs.size:
        k = pairs.shape[0]
        pair_rows = np.repeat(np.arange(k * n), 2)
        left = xcol[pairs[:, 0]]
        right = xcol[pairs[:, 1]]
        cols = np.stack([left, right], axis=2).reshape(-1)
        cons.add(pair_rows, cols, np.ones(cols.size), -np.inf, 1.0)
    # tangent cuts of (L_n - mu)^2 at t: s_n >= (t - mu)^2 + 2 (t - mu) (L_n - t), where
    # L_n = fixed_n + sum_j share[j, n] x[j, n] and mu is the reference mean
    reachable_cpu = np.maximum(p.cpu_limit, p.node_cpu) * inv_cpu
    reachable_mem = np.maximum(p.mem_limit, p.node_mem) * inv_mem
    top = np.maximum((reachable_cpu + reachable_mem) / 2, 1e-9) * 1.001
    cut_row = 0
    cut_r: list[np.ndarray] = []
    cut_c: list[np.ndarray] = []
    cut_v: list[np.ndarray] = []
    cut_lo: list[np.ndarray] = []
    for node in counted:
        t = np.linspace(0.0, top[node], CUTS_PER_NODE)
        slope = 2.0 * (t - reference_mean)
        k = t.size
        local = cut_row + np.arange(k)
        cut_r += [local, np.repeat(local, m)]
        cut_c += [np.full(k, s_col[node]), np.tile(xcol[:, node], k)]
        cut_v += [np.ones(k), (-slope[:, None] * share[None, :, node]).ravel()]
        cut_lo.append((t - reference_mean) ** 2 + slope * (fixed_load[node] - t))
        cut_row += k
    cons.add_bounded(
        np.concatenate(cut_r),
        np.concatenate(cut_c),
        np.concatenate(cut_v),
        np.concatenate(cut_lo),
        np.full(cut_row, np.inf),
    )

    bytes_moved = p.bundle_bytes[rows][:, None] * np.ones((1, n))
    bytes_moved[np.arange(m), cur] = 0.0
    objective = np.zeros(n_vars)
    objective[n_x:][counted] = 1.0
    objective[:n_x] = COST_WEIGHT * (bytes_moved / GIB).ravel()
    upper = np.concatenate([legal.ravel().astype(np.float64), np.full(n, np.inf)])
    integrality = np.concatenate([np.ones(n_x), np.zeros(n)])
    result = milp(
        objective,
        constraints=cons.constraint(),
        integrality=integrality,
        bounds=Bounds(np.zeros(n_vars), upper),
        options={"time_limit": time_limit_s, "mip_rel_gap": 1e-7, "disp": False},
    )
    gap = getattr(result, "mip_gap", None)
    gap_value = None if gap is None or not np.isfinite(gap) else max(float(gap), 0.0)
    if result.x is None:
        return _Solution(None, gap_value, str(result.message))
    placement = np.asarray(result.x[:n_x]).reshape(m, n).argmax(axis=1).astype(np.int64)
    return _Solution(placement, gap_value, str(result.message))


def _state_after(p: PlanProblem, rows: I64, placement: I64) -> tuple[F64, F64]:
    """Node cpu and mem once the moved bundles are on their new nodes (sources floored at 0)."""
    cpu = p.node_cpu.astype(np.float64, copy=True)
    mem = p.node_mem.astype(np.float64, copy=True)
    cur = p.bundle_node[rows]
    for j in np.flatnonzero(placement != cur):
        bundle, source, target = int(rows[j]), int(cur[j]), int(placement[j])
        cpu[source] = max(cpu[source] - p.bundle_cpu[bundle], 0.0)
        mem[source] = max(mem[source] - p.bundle_mem[bundle], 0.0)
        cpu[target] += p.bundle_cpu[bundle]
        mem[target] += p.bundle_mem[bundle]
    return cpu, mem


def plan_optimal(
    problem: PlanProblem,
    max_moves: int,
    concurrency: int,
    time_limit_s: float,
    passes: int = 2,
) -> OptimalResult:
    """The best placement reachable with at most ``max_moves`` moves, as an ordered plan.

    The first pass centres the objective on the current mean load, later passes on the mean
    the previous solution reached (the time limit is shared); the placement with the lowest
    true imbalance is kept.
    """
    p = problem
    before = state_imbalance(p, p.node_cpu, p.node_mem)
    rows = np.flatnonzero(p.bundle_movable).astype(np.int64)
    if rows.size == 0 or p.n_nodes < 2 or max_moves == 0:
        return OptimalResult(PlanOutcome([], [], before, before), 0.0, "nothing to move")
    cur = p.bundle_node[rows]
    loads = node_loads(p, p.node_cpu, p.node_mem)[p.node_counted]
    mean = float(loads.mean()) if loads.size else 0.0
    best: tuple[float, _Solution] | None = None
    last = _Solution(None, None, "not solved")
    for _ in range(max(passes, 1)):
        last = _solve(p, rows, max_moves, time_limit_s / max(passes, 1), mean)
        if last.placement is None:
            break
        cpu, mem = _state_after(p, rows, last.placement)
        value = state_imbalance(p, cpu, mem)
        if best is None or value < best[0] - 1e-15:
            best = (value, last)
        reached = node_loads(p, cpu, mem)[p.node_counted]
        new_mean = float(reached.mean()) if reached.size else 0.0
        if abs(new_mean - mean) <= 1e-9:
            break
        mean = new_mean
    if best is None or best[1].placement is None:
        outcome = PlanOutcome([], [], before, before, notes=[f"optimal: {last.status}"])
        return OptimalResult(outcome, None, last.status)
    solution = best[1]
    placement = solution.placement
    assert placement is not None
    steps = [
        Step(int(rows[j]), int(cur[j]), int(placement[j])) for j in np.flatnonzero(placement != cur)
    ]
    steps.sort(key=lambda s: -float(p.bundle_mem[s.bundle]))
    notes: list[str] = []
    ordered = order_in_waves(p, steps, concurrency)
    if ordered is None:
        ordered = order_in_waves(p, steps, concurrency, require_improvement=False)
        if ordered is not None:
            notes.append("optimal: some intermediate steps do not lower the imbalance")
    if ordered is None:
        ordered = order_in_waves(p, steps, 1, require_improvement=False)
    if ordered is None:
        notes.append("optimal: the placement cannot be reached by legal single moves")
        ordered = sequential(p, [])
    moves = to_moves(p, ordered, before)
    after = moves[-1].imbalance_after if moves else before
    outcome = PlanOutcome(moves, [], before, after, notes=notes)
    return OptimalResult(outcome, solution.gap, solution.status)


def _movable_partner_pairs(p: PlanProblem, rows: I64) -> I64:
    """(j, k) row pairs of movable bundles that are negative-affinity partners, j < k."""
    row_of = np.full(p.n_bundles, -1, dtype=np.int64)
    row_of[rows] = np.arange(rows.size)
    owners = np.repeat(np.arange(p.n_bundles), np.diff(p.partner_ptr))
    left, right = row_of[owners], row_of[p.partner_idx]
    keep = (left >= 0) & (right >= 0) & (left < right)
    return np.stack([left[keep], right[keep]], axis=1).astype(np.int64)
