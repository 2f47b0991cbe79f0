"""Greedy multi-move planning with look-ahead, chain collapsing and execution ordering.

The search keeps, for every (movable bundle, node) pair, what moving the bundle there would
add to the sum and the sum of squares of the node loads (the imbalance is a function of those
two sums only), whether the move is legal, and what it costs. After a move only the rows of
bundles on the two touched nodes and the two touched columns change, so a step costs a few
dense numpy passes instead of a rebuild. Each step takes the legal move with the lowest
resulting imbalance that passes the cost-benefit rule (cheaper first among equals), optionally
after looking one move ahead from the best few first moves.

The raw step sequence is then collapsed (A->B then B->C becomes A->C; A->B then B->A goes) and
ordered in waves of at most ``concurrency`` moves such that every intermediate state, with a
wave's incoming guests counted before its outgoing ones leave, respects the limits, and each
move lowers the imbalance. Moves that free room on a node come before moves that need it. If
the collapsed set cannot be ordered that way the raw sequence is used, one move per wave.

Evacuation (:func:`plan_evacuation`) comes before any of that: every bundle flagged
``bundle_evacuate`` (in scope, on a node in maintenance or offline) is placed, largest memory
first, on the legal target that leaves the lowest imbalance (cheaper first among equals, then
node order), whatever the gain, margin or cost-benefit; the safety limits still hold, and in
dynamic mode a target the move would take above the overload level is used only when no
other is left (a node at the edge of its headroom fills up again on its own). A bundle
that fits nowhere is reported blocked and stays. The balancing strategies then plan on the
state after the evacuation, with the evacuated and blocked bundles fixed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from balancer.cluster import F64, I64
from balancer.cost import GIB
from balancer.imbalance import imbalance
from balancer.safety import PlanProblem, move_violation, partner_blocked, partner_blocked_row
from model.plan import Move

TIE = 1e-12
"""Imbalances closer than this count as equal (then the cheaper move wins)."""


def _inverse(values: F64) -> F64:
    safe = np.where(values > 0, values, 1.0)
    return np.where(values > 0, 1.0 / safe, 0.0)


def node_loads(problem: PlanProblem, cpu: F64, mem: F64) -> F64:
    """(cpu/maxcpu + mem/maxmem) / 2 per node, 0 where a capacity is 0."""
    return np.asarray(
        (cpu * _inverse(problem.node_maxcpu) + mem * _inverse(problem.node_maxmem)) / 2,
        dtype=np.float64,
    )


def imbalance_from_sums(total: F64 | float, squares: F64 | float, count: int) -> F64:
    """CV / sqrt(n-1) from the sum and sum of squares of n loads (element-wise)."""
    total_a = np.asarray(total, dtype=np.float64)
    if count < 2:
        return np.zeros_like(total_a)
    mean = total_a / count
    variance = np.maximum(np.asarray(squares, dtype=np.float64) / count - mean * mean, 0.0)
    safe_mean = np.where(mean > 0, mean, 1.0)
    return np.asarray(
        np.where(mean > 0, np.sqrt(variance) / safe_mean / np.sqrt(count - 1), 0.0),
        dtype=np.float64,
    )


def state_imbalance(problem: PlanProblem, cpu: F64, mem: F64) -> float:
    """Imbalance of the counted nodes in the given state, computed as PVE sums it."""
    return imbalance(node_loads(problem, cpu, mem)[problem.node_counted])


@dataclass(slots=True)
class Step:
    bundle: int
    source: int
    target: int


@dataclass(slots=True)
class PlanOutcome:
    moves: list[Move]
    top_moves: list[Move]
    imbalance_before: float
    imbalance_after: float
    steps_searched: int = 0
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    """Milliseconds per planning phase (scoring, search, ordering, top_moves)."""


class Search:
    """Incremental evaluation of every single move from a changing cluster state.

    Moves are ranked by r = Q'/S'^2 (sum of squared loads over squared sum after the move):
    imbalance^2 = (n r - 1) / (n - 1), so r orders moves exactly as the imbalance does and
    costs two dense passes less. Illegal moves carry r = inf.
    """

    def __init__(self, problem: PlanProblem, bundle_node: I64 | None = None) -> None:
        p = problem
        self.p = p
        self.rows = np.flatnonzero(p.bundle_movable).astype(np.int64)
        self.row_of = np.full(p.n_bundles, -1, dtype=np.int64)
        self.row_of[self.rows] = np.arange(self.rows.size)
        self.cpu = p.node_cpu.astype(np.float64, copy=True)
        self.mem = p.node_mem.astype(np.float64, copy=True)
        self.where = (p.bundle_node if bundle_node is None else bundle_node).astype(
            np.int64, copy=True
        )
        self.inv_cpu = _inverse(p.node_maxcpu)
        self.inv_mem = _inverse(p.node_maxmem)
        self.weight = p.node_counted.astype(np.float64)
        self.count = int(p.node_counted.sum())
        self.bcpu = p.bundle_cpu[self.rows]
        self.bmem = p.bundle_mem[self.rows]
        self.bbytes = p.bundle_bytes[self.rows]
        self.need = np.maximum(p.min_gain_per_gib * (self.bbytes / GIB) / 100.0, TIE)
        self.uniform_need = bool(p.min_gain_per_gib == 0.0)
        self.static_ok = p.bundle_targets[self.rows] & p.node_usable[None, :]
        self.blocked = partner_blocked(p, self.where)[self.rows]
        m, n = self.rows.size, p.n_nodes
        self.d_sum = np.zeros((m, n))
        self.d_sq = np.zeros((m, n))
        self._buffer: F64 | None = None
        self.row_node = self.where[self.rows]
        self.src_sum = np.zeros(m)
        self.src_sq = np.zeros(m)
        self._sums()
        self._refresh_sources(None)
        self._refresh(None, None)

    _SHARED = (
        "p", "rows", "row_of", "inv_cpu", "inv_mem", "weight", "count",
        "bcpu", "bmem", "bbytes", "need", "uniform_need", "static_ok",
    )  # fmt: skip
    _COPIED = (
        "cpu", "mem", "where", "row_node", "src_sum", "src_sq", "blocked", "d_sum", "d_sq",
        "loads",
    )  # fmt: skip

    def clone(self) -> Search:
        other = object.__new__(Search)
        for name in self._SHARED:
            setattr(other, name, getattr(self, name))
        for name in self._COPIED:
            setattr(other, name, getattr(self, name).copy())
        other.total = self.total
        other.squares = self.squares
        other._buffer = None
        return other

    @property
    def candidates(self) -> int:
        return int(self.d_sq.size)

    def _sums(self) -> None:
        self.loads = node_loads(self.p, self.cpu, self.mem)
        weighted = self.loads * self.weight
        self.total = float(weighted.sum())
        self.squares = float((weighted * self.loads).sum())

    def imbalance(self) -> float:
        return float(imbalance_from_sums(self.total, self.squares, self.count))

    def to_imbalance(self, ratio: F64) -> F64:
        """Imbalance from r = Q'/S'^2 (element-wise)."""
        if self.count < 2:
            return np.zeros_like(ratio)
        cv2 = np.maximum(self.count * ratio - 1.0, 0.0)
        return np.asarray(np.sqrt(cv2 / (self.count - 1)), dtype=np.float64)

    def _max_ratio(self, imbalance: F64) -> F64:
        """The r at which the imbalance equals the given value (-inf where it is < 0)."""
        ratio = (np.square(imbalance) * (self.count - 1) + 1.0) / max(self.count, 1)
        return np.asarray(np.where(imbalance >= 0, ratio, -np.inf), dtype=np.float64)

    def _refresh_sources(self, r: I64 | None) -> None:
        """What leaving its node adds to the sums, for the given rows (None: all)."""
        r_sel = slice(None) if r is None else r
        cur = self.row_node[r_sel]
        src_after = (
            np.maximum(self.cpu[cur] - self.bcpu[r_sel], 0.0) * self.inv_cpu[cur]
            + np.maximum(self.mem[cur] - self.bmem[r_sel], 0.0) * self.inv_mem[cur]
        ) / 2
        src_now = self.loads[cur]
        w_src = self.weight[cur]
        self.src_sum[r_sel] = w_src * (src_after - src_now)
        self.src_sq[r_sel] = w_src * (src_after**2 - src_now**2)

    def _refresh(self, r: I64 | None, cols: I64 | None) -> None:
        """Recompute the given rows x columns (None: all); sources must be current."""
        p = self.p
        r_sel = slice(None) if r is None else r
        c_sel = slice(None) if cols is None else cols
        col_idx = np.arange(p.n_nodes) if cols is None else cols
        cur = self.row_node[r_sel]
        if cur.size == 0 or col_idx.size == 0:
            return
        bc, bm = self.bcpu[r_sel], self.bmem[r_sel]
        tgt_cpu = self.cpu[c_sel][None, :] + bc[:, None]
        tgt_mem = self.mem[c_sel][None, :] + bm[:, None]
        ok = (tgt_cpu <= p.cpu_limit[c_sel][None, :]) & (tgt_mem <= p.mem_limit[c_sel][None, :])
        tgt_cpu *= self.inv_cpu[c_sel] / 2
        tgt_mem *= self.inv_mem[c_sel] / 2
        tgt_after = np.add(tgt_cpu, tgt_mem, out=tgt_cpu)
        tgt_now = self.loads[c_sel]
        w_tgt = self.weight[c_sel]
        if r is None:
            ok &= self.static_ok[:, c_sel] & ~self.blocked[:, c_sel]
        elif cols is None:
            ok &= self.static_ok[r] & ~self.blocked[r]
        else:
            ok &= self.static_ok[np.ix_(r, cols)] & ~self.blocked[np.ix_(r, cols)]
        ok &= col_idx[None, :] != cur[:, None]
        d_sum = w_tgt * (tgt_after - tgt_now)
        d_sum += self.src_sum[r_sel][:, None]
        d_sq = np.square(tgt_after, out=tgt_mem)
        d_sq -= tgt_now**2
        d_sq *= w_tgt
        d_sq += self.src_sq[r_sel][:, None]
        d_sq[~ok] = np.inf
        if r is None:
            self.d_sum[:, c_sel] = d_sum
            self.d_sq[:, c_sel] = d_sq
        elif cols is None:
            self.d_sum[r] = d_sum
            self.d_sq[r] = d_sq
        else:
            self.d_sum[np.ix_(r, cols)] = d_sum
            self.d_sq[np.ix_(r, cols)] = d_sq

    def ratios(self) -> F64:
        """[m, n] r after each legal move that passes the cost-benefit rule; inf elsewhere."""
        if self._buffer is None or self._buffer.shape != self.d_sq.shape:
            self._buffer = np.empty_like(self.d_sq)
        total = np.add(self.d_sum, self.total, out=self._buffer)
        np.square(total, out=total)
        out = self.d_sq + self.squares
        if self.total <= 0.0:
            out.fill(np.inf)  # an idle cluster: nothing to balance
            return out
        out /= total
        if not self.uniform_need:
            limit = self._max_ratio(self.imbalance() - self.need)
            out[out > limit[:, None]] = np.inf
        return out

    def move_cost(self, row: I64, node: I64) -> F64:
        cur = self.where[self.rows[row]]
        return np.asarray(
            self.bbytes[row] / self.p.bandwidth[cur, node] + self.p.overhead_s, dtype=np.float64
        )

    def ranked(self, ratio: F64, limit: int) -> list[tuple[int, int, float]]:
        """The ``limit`` best (row, node, imbalance after), cheaper first among equals."""
        flat = ratio.ravel()
        if flat.size == 0 or limit <= 0:
            return []
        n = self.p.n_nodes
        best_limit = float(self._max_ratio(np.array(self.imbalance() - TIE)))
        if limit == 1:
            best = int(np.argmin(flat))
            if not flat[best] <= best_limit:
                return []
            picks = np.flatnonzero(flat <= flat[best] * (1 + 1e-13))
        else:
            limit = min(limit, flat.size)
            picks = np.argpartition(flat, limit - 1)[:limit]
            picks = picks[flat[picks] <= best_limit]
        if picks.size == 0:
            return []
        values = self.to_imbalance(flat[picks])
        cost = self.move_cost(picks // n, picks % n)
        order = np.lexsort((cost, np.round(values / TIE)))[: max(limit, 1)]
        return [(int(picks[i] // n), int(picks[i] % n), float(values[i])) for i in order]

    def apply(self, row: int, target: int) -> Step:
        bundle = int(self.rows[row])
        source = int(self.where[bundle])
        bc, bm = self.bcpu[row], self.bmem[row]
        self.cpu[source] = max(self.cpu[source] - bc, 0.0)
        self.mem[source] = max(self.mem[source] - bm, 0.0)
        self.cpu[target] += bc
        self.mem[target] += bm
        self.where[bundle] = target
        self.row_node[row] = target
        self._sums()
        touched = np.array([source, target], dtype=np.int64)
        affected = np.flatnonzero((self.row_node == source) | (self.row_node == target))
        partner_rows = self.row_of[self.p.partners(bundle)]
        partner_rows = partner_rows[partner_rows >= 0]
        for pr in partner_rows:
            self.blocked[pr] = False
            nodes = self.where[self.p.partners(int(self.rows[pr]))]
            self.blocked[pr, nodes[nodes >= 0]] = True
        self._refresh_sources(affected)
        rows = np.union1d(affected, partner_rows).astype(np.int64)
        self._refresh(rows, None)
        self._refresh(None, touched)
        return Step(bundle, source, target)

    def overloaded(self, level: float | None) -> bool:
        if level is None:
            return False
        usable = self.p.node_usable
        cpu_frac = self.cpu * self.inv_cpu
        mem_frac = self.mem * self.inv_mem
        return bool(((cpu_frac > level) | (mem_frac > level))[usable].any())


def greedy_steps(
    problem: PlanProblem,
    max_moves: int,
    stop_level: float,
    overload_level: float | None = None,
    lookahead_width: int = 0,
    lookahead_max_candidates: int = 50_000,
    search: Search | None = None,
) -> list[Step]:
    """Raw greedy steps, each legal and lowering the imbalance (the search is advanced)."""
    search = Search(problem) if search is None else search
    steps: list[Step] = []
    while len(steps) < max_moves:
        if search.imbalance() <= stop_level and not search.overloaded(overload_level):
            break
        look = lookahead_width > 1 and max_moves - len(steps) >= 2
        look = look and search.candidates <= lookahead_max_candidates
        options = search.ranked(search.ratios(), lookahead_width if look else 1)
        if not options:
            break
        row, target, _ = options[0]
        if len(options) > 1:
            best_two = np.inf
            for cand_row, cand_target, cand_value in options:
                trial = search.clone()
                trial.apply(cand_row, cand_target)
                follow = trial.ranked(trial.ratios(), 1)
                two = min([cand_value] + [value for _, _, value in follow])
                if two < best_two - TIE:
                    best_two, row, target = two, cand_row, cand_target
        steps.append(search.apply(row, target))
    return steps


def collapse(steps: list[Step]) -> list[Step]:
    """One move per bundle from its first source to its last target, in last-hop order."""
    first_source: dict[int, int] = {}
    last: dict[int, tuple[int, int]] = {}
    for position, step in enumerate(steps):
        first_source.setdefault(step.bundle, step.source)
        last[step.bundle] = (position, step.target)
    ordered = sorted(last.items(), key=lambda item: item[1][0])
    return [
        Step(bundle, first_source[bundle], target)
        for bundle, (_, target) in ordered
        if first_source[bundle] != target
    ]


@dataclass(slots=True)
class OrderedStep:
    step: Step
    wave: int
    imbalance_after: float


def order_in_waves(
    problem: PlanProblem,
    steps: list[Step],
    concurrency: int,
    require_improvement: bool = True,
) -> list[OrderedStep] | None:
    """Order moves in waves that keep every intermediate state legal; None if impossible."""
    cpu = problem.node_cpu.astype(np.float64, copy=True)
    mem = problem.node_mem.astype(np.float64, copy=True)
    where = problem.bundle_node.astype(np.int64, copy=True)
    current = state_imbalance(problem, cpu, mem)
    remaining = list(steps)
    ordered: list[OrderedStep] = []
    wave = 0
    while remaining:
        wave += 1
        # During a wave its incoming guests already count on their targets while its outgoing
        # guests still sit on their sources: check against both placements.
        wave_cpu, wave_mem, wave_start = cpu.copy(), mem.copy(), where.copy()
        needed = {s.target for s in remaining}
        by_priority = sorted(
            range(len(remaining)), key=lambda i: (remaining[i].source not in needed, i)
        )
        taken: list[int] = []
        for i in by_priority:
            if len(taken) == concurrency:
                break
            step = remaining[i]
            if move_violation(
                problem, wave_cpu, wave_mem, wave_start, step.bundle, step.target
            ) or move_violation(problem, wave_cpu, wave_mem, where, step.bundle, step.target):
                continue
            bc, bm = problem.bundle_cpu[step.bundle], problem.bundle_mem[step.bundle]
            next_cpu, next_mem = cpu.copy(), mem.copy()
            next_cpu[step.source] = max(next_cpu[step.source] - bc, 0.0)
            next_mem[step.source] = max(next_mem[step.source] - bm, 0.0)
            next_cpu[step.target] += bc
            next_mem[step.target] += bm
            after = state_imbalance(problem, next_cpu, next_mem)
            if require_improvement and after >= current - TIE:
                continue
            cpu, mem, current = next_cpu, next_mem, after
            where[step.bundle] = step.target
            wave_cpu[step.target] += bc
            wave_mem[step.target] += bm
            taken.append(i)
            ordered.append(OrderedStep(step, wave, after))
        if not taken:
            return None
        remaining = [s for i, s in enumerate(remaining) if i not in set(taken)]
    return ordered


def sequential(problem: PlanProblem, steps: list[Step]) -> list[OrderedStep]:
    """The raw steps one per wave, with their imbalance (legal by construction)."""
    cpu = problem.node_cpu.astype(np.float64, copy=True)
    mem = problem.node_mem.astype(np.float64, copy=True)
    out: list[OrderedStep] = []
    for wave, step in enumerate(steps, start=1):
        bc, bm = problem.bundle_cpu[step.bundle], problem.bundle_mem[step.bundle]
        cpu[step.source] = max(cpu[step.source] - bc, 0.0)
        mem[step.source] = max(mem[step.source] - bm, 0.0)
        cpu[step.target] += bc
        mem[step.target] += bm
        out.append(OrderedStep(step, wave, state_imbalance(problem, cpu, mem)))
    return out


def to_moves(problem: PlanProblem, ordered: list[OrderedStep], before: float) -> list[Move]:
    """Model moves with cost, bytes and expected imbalance after each."""
    moves: list[Move] = []
    previous = before
    for rank, item in enumerate(ordered, start=1):
        step = item.step
        members = problem.bundle_members[step.bundle]
        nbytes = float(problem.bundle_bytes[step.bundle])
        seconds = nbytes / float(problem.bandwidth[step.source, step.target]) + problem.overhead_s
        moves.append(
            Move(
                rank=rank,
                sid=members[0],
                source=problem.node_names[step.source],
                target=problem.node_names[step.target],
                imbalance_after=item.imbalance_after,
                cost_seconds=seconds,
                members=list(members),
                gib_moved=nbytes / GIB,
                reason=(
                    f"wave {item.wave}: imbalance {previous * 100:.2f}% -> "
                    f"{item.imbalance_after * 100:.2f}%"
                ),
            )
        )
        previous = item.imbalance_after
    return moves


def top_single_moves(search: Search, limit: int) -> list[Move]:
    """The best single moves from the search's state, for manual action."""
    if limit <= 0 or search.rows.size == 0:
        return []
    p = search.p
    moves: list[Move] = []
    ranked = search.ranked(search.ratios(), limit)
    for rank, (row, target, value) in enumerate(ranked, start=1):
        bundle = int(search.rows[row])
        members = p.bundle_members[bundle]
        nbytes = float(p.bundle_bytes[bundle])
        cost = search.move_cost(np.array([row]), np.array([target]))
        moves.append(
            Move(
                rank=rank,
                sid=members[0],
                source=p.node_names[int(search.where[bundle])],
                target=p.node_names[target],
                imbalance_after=value,
                cost_seconds=float(cost[0]),
                members=list(members),
                gib_moved=nbytes / GIB,
                reason=f"imbalance {search.imbalance() * 100:.2f}% -> {value * 100:.2f}%",
            )
        )
    return moves


def finish_plan(
    problem: PlanProblem, steps: list[Step], concurrency: int, notes: list[str]
) -> list[OrderedStep]:
    """Collapse chains and order in waves; the raw sequence if that cannot be done."""
    collapsed = collapse(steps)
    if len(collapsed) < len(steps):
        notes.append(f"collapsed {len(steps)} search steps into {len(collapsed)} moves")
    ordered = order_in_waves(problem, collapsed, concurrency)
    if ordered is None or len(ordered) != len(collapsed):
        notes.append("collapsed moves could not be ordered safely; using the raw sequence")
        return sequential(problem, steps)
    return ordered


MAX_CANDIDATES = 8_000_000
"""Bundle x node pairs the search holds at once (two float64 matrices: ~128 MB)."""


def limit_candidates(problem: PlanProblem, max_candidates: int, notes: list[str]) -> PlanProblem:
    """The problem with only the bundles of the most loaded nodes movable, if it is too big.

    Moves that lower the imbalance leave the heavy nodes, so the search keeps the bundles of
    the most loaded nodes (as many whole nodes as fit) and drops the rest, with a note.
    """
    movable = problem.bundle_movable
    n = max(problem.n_nodes, 1)
    if int(movable.sum()) * n <= max_candidates:
        return problem
    room = max_candidates // n
    loads = node_loads(problem, problem.node_cpu, problem.node_mem)
    per_node = np.bincount(problem.bundle_node[movable], minlength=problem.n_nodes)
    order = np.argsort(-loads, kind="stable")
    fits = np.cumsum(per_node[order]) <= room
    sources = order[fits] if fits.any() else order[:1]
    keep = movable & np.isin(problem.bundle_node, sources)
    notes.append(
        f"search limited to the {int(keep.sum())} movable units on the {sources.size} most "
        f"loaded nodes ({int(movable.sum())} x {n} candidates exceed {max_candidates})"
    )
    return replace(problem, bundle_movable=keep)


def plan_greedy(
    problem: PlanProblem,
    max_moves: int,
    stop_level: float,
    concurrency: int = 1,
    top_n: int = 0,
    overload_level: float | None = None,
    lookahead_width: int = 0,
    lookahead_max_candidates: int = 50_000,
    max_candidates: int = MAX_CANDIDATES,
) -> PlanOutcome:
    """A plan of up to ``max_moves`` moves bringing the imbalance towards ``stop_level``."""
    notes: list[str] = []
    problem = limit_candidates(problem, max_candidates, notes)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal started
        now = time.perf_counter()
        timings[phase] = (now - started) * 1000.0
        started = now

    before = state_imbalance(problem, problem.node_cpu, problem.node_mem)
    search = Search(problem)
    lap("scoring")
    top_moves = top_single_moves(search, top_n)
    lap("top_moves")
    steps = greedy_steps(
        problem,
        max_moves,
        stop_level,
        overload_level,
        lookahead_width,
        lookahead_max_candidates,
        search,
    )
    lap("search")
    ordered = finish_plan(problem, steps, concurrency, notes)
    moves = to_moves(problem, ordered, before)
    lap("ordering")
    after = moves[-1].imbalance_after if moves else before
    return PlanOutcome(
        moves=moves,
        top_moves=top_moves,
        imbalance_before=before,
        imbalance_after=after,
        steps_searched=len(steps),
        notes=notes,
        timings=timings,
    )


def replay_violations(problem: PlanProblem, moves: list[Move]) -> list[str]:
    """Replay moves in order; every legality problem and every non-improving step."""
    index = {name: i for i, name in enumerate(problem.node_names)}
    bundle_of = {members[0]: b for b, members in enumerate(problem.bundle_members)}
    cpu = problem.node_cpu.astype(np.float64, copy=True)
    mem = problem.node_mem.astype(np.float64, copy=True)
    where = problem.bundle_node.astype(np.int64, copy=True)
    current = state_imbalance(problem, cpu, mem)
    problems: list[str] = []
    for move in moves:
        bundle, target = bundle_of[move.sid], index[move.target]
        why = move_violation(problem, cpu, mem, where, bundle, target)
        if why:
            problems.append(why)
        source = int(where[bundle])
        cpu[source] = max(cpu[source] - problem.bundle_cpu[bundle], 0.0)
        mem[source] = max(mem[source] - problem.bundle_mem[bundle], 0.0)
        cpu[target] += problem.bundle_cpu[bundle]
        mem[target] += problem.bundle_mem[bundle]
        where[bundle] = target
        after = state_imbalance(problem, cpu, mem)
        if after >= current - TIE:
            problems.append(f"{move.sid}: imbalance {current} -> {after} did not drop")
        current = after
    return problems


@dataclass(slots=True)
class Evacuation:
    """The forced moves off unusable nodes, and the problem left for balancing afterwards."""

    ordered: list[OrderedStep]
    blocked: list[int]
    """Bundles to evacuate that no legal target can take (they stay)."""
    problem: PlanProblem
    """State after the evacuation; evacuated and blocked bundles are no longer movable."""
    imbalance_before: float
    imbalance_after: float


def evacuation_target(
    problem: PlanProblem,
    cpu: F64,
    mem: F64,
    where: I64,
    bundle: int,
    overload_level: float | None = None,
) -> int | None:
    """The legal target for ``bundle`` leaving the lowest imbalance (cost, then node order).

    With ``overload_level`` (a fraction of capacity), targets the move would take above it
    in cpu or memory are used only when no other legal target is left.
    """
    p = problem
    source = int(where[bundle])
    bc, bm = float(p.bundle_cpu[bundle]), float(p.bundle_mem[bundle])
    ok = p.node_usable & p.bundle_targets[bundle] & ~partner_blocked_row(p, where, bundle)
    ok &= cpu + bc <= p.cpu_limit * (1 + 1e-12)
    ok &= mem + bm <= p.mem_limit * (1 + 1e-12)
    if source >= 0:
        ok[source] = False
    if overload_level is not None:
        calm = (cpu + bc <= p.node_maxcpu * overload_level) & (
            mem + bm <= p.node_maxmem * overload_level
        )
        if (ok & calm).any():
            ok &= calm
    targets = np.flatnonzero(ok)
    if targets.size == 0:
        return None
    left_cpu, left_mem = cpu.copy(), mem.copy()
    if source >= 0:
        left_cpu[source] = max(left_cpu[source] - bc, 0.0)
        left_mem[source] = max(left_mem[source] - bm, 0.0)
    loads = node_loads(p, left_cpu, left_mem)
    weight = p.node_counted.astype(np.float64)
    total = float((weight * loads).sum())
    squares = float((weight * loads * loads).sum())
    arrived = (
        (left_cpu[targets] + bc) * _inverse(p.node_maxcpu)[targets]
        + (left_mem[targets] + bm) * _inverse(p.node_maxmem)[targets]
    ) / 2
    w = weight[targets]
    values = imbalance_from_sums(
        total + w * (arrived - loads[targets]),
        squares + w * (arrived**2 - loads[targets] ** 2),
        int(p.node_counted.sum()),
    )
    link = p.bandwidth[source, targets] if source >= 0 else np.ones(targets.size)
    cost = p.bundle_bytes[bundle] / link + p.overhead_s
    best = np.lexsort((targets, cost, np.round(values / TIE)))[0]
    return int(targets[best])


def plan_evacuation(
    problem: PlanProblem, concurrency: int = 1, overload_level: float | None = None
) -> Evacuation:
    """Move every ``bundle_evacuate`` bundle to its best legal target (module docstring).

    ``overload_level``: prefer targets that stay at or below this fraction of capacity.
    """
    p = problem
    cpu = p.node_cpu.astype(np.float64, copy=True)
    mem = p.node_mem.astype(np.float64, copy=True)
    where = p.bundle_node.astype(np.int64, copy=True)
    before = state_imbalance(p, cpu, mem)
    evacuees = np.flatnonzero(p.bundle_evacuate)
    order = sorted(
        evacuees.tolist(),
        key=lambda b: (-p.bundle_mem[b], -p.bundle_cpu[b], p.bundle_members[b][0]),
    )
    steps: list[Step] = []
    blocked: list[int] = []
    for bundle in order:
        target = evacuation_target(p, cpu, mem, where, bundle, overload_level)
        if target is None:
            blocked.append(bundle)
            continue
        source = int(where[bundle])
        bc, bm = p.bundle_cpu[bundle], p.bundle_mem[bundle]
        cpu[source] = max(cpu[source] - bc, 0.0)
        mem[source] = max(mem[source] - bm, 0.0)
        cpu[target] += bc
        mem[target] += bm
        where[bundle] = target
        steps.append(Step(bundle, source, target))
    ordered = order_in_waves(p, steps, concurrency, require_improvement=False)
    if ordered is None or len(ordered) != len(steps):
        ordered = sequential(p, steps)
    after = ordered[-1].imbalance_after if ordered else before
    rest = replace(
        p,
        node_cpu=cpu,
        node_mem=mem,
        bundle_node=where,
        bundle_movable=p.bundle_movable & ~p.bundle_evacuate,
        bundle_evacuate=np.zeros_like(p.bundle_evacuate),
    )
    return Evacuation(ordered, blocked, rest, before, after)
