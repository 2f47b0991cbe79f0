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
  them in sorted order. The winner's reported imbalance is its exact, truncated imbalance.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from balancer.candidates import Candidates
from balancer.cluster import F64, I64
from balancer.imbalance import (
    _ratio,
    cv_squared_after_moves,
    imbalance_after_moves_exact,
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


def _tie_order(cands: Candidates, rows: I64, sid_rank: I64, node_rank: I64, key: F64) -> I64:
    b = cands.bundle[rows]
    return rows[
        np.lexsort((node_rank[cands.target[rows]], node_rank[cands.source[rows]], sid_rank[b], key))
    ]


def exact_scores(state: NodeState, cands: Candidates, rows: I64) -> F64:
    """Exact, truncated imbalance after each of the given candidates."""
    exact = imbalance_after_moves_exact(
        state.cpu,
        state.mem,
        state.maxcpu,
        state.maxmem,
        cands.source[rows],
        cands.target[rows],
        cands.cpu[rows],
        cands.mem[rows],
    )
    return truncate(exact)


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
    runs = cands.runs()
    cv_sq, slack = cv_squared_after_moves(
        state.cpu,
        state.mem,
        state.maxcpu,
        state.maxmem,
        cands.source,
        cands.target,
        cands.cpu,
        cands.mem,
        runs,
    )
    scored_at = time.perf_counter()
    keep = min(limit, k)
    if keep == 1:
        kth = float(cv_sq.min())
    elif keep < k:
        kth = float(np.partition(cv_sq, keep - 1)[keep - 1])
    else:
        kth = float(cv_sq.max())
    bound = max(kth, 0.0) + slack
    # Values within 1e-15 of each other in imbalance can truncate to the same 15 digits.
    trunc_slack = 2.0 * math.sqrt(bound * (state.cpu.size - 1)) * 2e-15 + 1e-29 * state.cpu.size
    rows = np.flatnonzero(cv_sq <= bound + slack + trunc_slack)
    scores = exact_scores(state, cands, rows)
    ordered = _tie_order(cands, rows, sid_rank, node_rank, scores)
    score_of = dict(zip(rows.tolist(), scores.tolist(), strict=True))
    _record(timings, started, scored_at)
    return [Scored(int(i), score_of[int(i)]) for i in ordered[:keep]]


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


def _runs(cands: Candidates) -> tuple[I64, I64]:
    """First position and length of each group of consecutive candidates of one bundle."""
    starts = cands.runs()
    return starts, np.diff(np.append(starts, len(cands)))


def _criteria_excess(state: NodeState, cands: Candidates) -> F64:
    """[4, k] post-move criteria minus 1: RMS cpu load, max cpu load, RMS mem, max mem.

    Only the source and the target change: per bundle (a run of consecutive candidates) the
    source's new load, the sum of squared loads without the source's old one, and the highest
    load of the other nodes (from the top 3 of the current state, skipping the source) are
    computed once; per candidate the target's new load is gathered from per-node tables and
    the run's values are gathered through a run index. All per-candidate work is in place.
    """
    n = state.cpu.size
    k = len(cands)
    starts, lengths = _runs(cands)
    source = cands.source[starts]
    target = cands.target
    run_of = np.repeat(np.arange(starts.size, dtype=np.int64), lengths)
    # One block for the four columns and two scratch rows.
    block = np.empty((6, k), dtype=np.float64)
    out = block[:4]
    scratch = block[4]
    at_scratch = block[5].view(np.int64)
    hit = np.empty(k, dtype=np.bool_)
    for col, (used, cap, delta) in enumerate(
        ((state.cpu, state.maxcpu, cands.cpu), (state.mem, state.maxmem, cands.mem))
    ):
        inv = _ratio(np.ones(n), cap)
        loads = used * inv
        squared = loads * loads
        order = np.argsort(-loads, kind="stable")[:3]
        top = np.concatenate([loads[order], np.zeros(3 - order.size)])
        top_at = np.concatenate([order, np.full(3 - order.size, -1)])
        # Per run: the source after the move, and the two highest other nodes.
        src_new = np.maximum(used[source] - delta[starts], 0.0) * inv[source]
        first = np.where(top_at[0] == source, top[1], top[0])
        first_at = np.where(top_at[0] == source, top_at[1], top_at[0])
        second = np.where((top_at[0] == source) | (top_at[1] == source), top[2], top[1])
        np.maximum(first, src_new, out=first)
        np.maximum(second, src_new, out=second)
        squares = float(squared.sum()) - squared[source] + src_new * src_new

        rms, high = out[2 * col], out[2 * col + 1]
        # Target's new load into `high`: loads[t] + delta * inv[t].
        np.take(inv, target, out=scratch, mode="clip")
        scratch *= delta
        np.take(loads, target, out=high, mode="clip")
        high += scratch
        # Sum of squares: run's sum - loads[t]^2 + new^2, then RMS.
        np.take(squared, target, out=rms, mode="clip")
        np.multiply(high, high, out=scratch)
        scratch -= rms
        np.take(squares, run_of, out=rms, mode="clip")
        rms += scratch
        np.maximum(rms, 0.0, out=rms)
        rms *= 1.0 / n
        np.sqrt(rms, out=rms)
        # Highest load: the run's highest other node, unless the target is that node.
        np.take(first, run_of, out=scratch, mode="clip")
        np.take(first_at, run_of, out=at_scratch, mode="clip")
        np.equal(at_scratch, target, out=hit)
        on_first = np.flatnonzero(hit)
        scratch[on_first] = second[run_of[on_first]]
        np.maximum(high, scratch, out=high)
    return out


def topsis_criteria(state: NodeState, cands: Candidates) -> F64:
    """[k, 4] post-move criteria: 1+RMS cpu load, 1+max cpu load, 1+RMS mem, 1+max mem.

    Candidates of one bundle must be consecutive (as :func:`generate_candidates` emits them).
    """
    if len(cands) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    excess = _criteria_excess(state, cands)
    excess += 1.0
    return np.ascontiguousarray(excess.T)


def _topsis_criteria_exact(state: NodeState, cands: Candidates, rows: I64) -> F64:
    out = np.empty((rows.size, 4))
    for pos, row in enumerate(rows.tolist()):
        cpu, mem = state.cpu.copy(), state.mem.copy()
        s, t = int(cands.source[row]), int(cands.target[row])
        cpu[s] = max(0.0, cpu[s] - cands.cpu[row])
        mem[s] = max(0.0, mem[s] - cands.mem[row])
        cpu[t] += cands.cpu[row]
        mem[t] += cands.mem[row]
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
    excess = _criteria_excess(state, cands)
    w = TOPSIS_WEIGHTS / TOPSIS_WEIGHTS.sum()
    # Criterion a = 1 + f: sum a^2 = k + 2 sum f + sum f^2, min/max a = 1 + min/max f.
    f_sum = excess.sum(axis=1)
    f_sq = np.einsum("ij,ij->i", excess, excess)
    norms = np.sqrt(k + 2.0 * f_sum + f_sq)
    f_lo, f_hi = excess.min(axis=1), excess.max(axis=1)
    lows, highs = 1.0 + f_lo, 1.0 + f_hi
    # d+^2 = sum c_j x_j^2 and d-^2 = sum c_j (R_j - x_j)^2 with x_j = f_j - min f_j,
    # c_j = (w_j/N_j)^2, R_j = max_j - min_j: d-^2 = d+^2 - 2 sum c_j R_j x_j + sum c_j R_j^2.
    scale = (w / norms) ** 2
    spread = f_hi - f_lo
    # Row by row in place (no BLAS: its threads would only spin on this 2-core budget).
    cross, d_best, scratch = np.empty((3, k))
    for j in range(4):
        x = excess[j]
        x -= f_lo[j]
        if j == 0:
            np.multiply(x, scale[j] * spread[j], out=cross)
        else:
            np.multiply(x, scale[j] * spread[j], out=scratch)
            cross += scratch
        x *= x
        if j == 0:
            np.multiply(x, scale[j], out=d_best)
        else:
            x *= scale[j]
            d_best += x
    d_worst = np.multiply(cross, -2.0, out=cross)
    d_worst += d_best
    d_worst += float((scale * spread * spread).sum())
    np.maximum(d_worst, 0.0, out=d_worst)
    np.sqrt(d_best, out=d_best)
    np.sqrt(d_worst, out=d_worst)
    div = np.add(d_best, d_worst, out=scratch)
    scores = excess[0]
    scores.fill(0.0)
    np.divide(d_worst, div, out=scores, where=div != 0)
    scored_at = time.perf_counter()
    normalised_lo, normalised_hi = lows / norms, highs / norms
    keep = min(limit, k)
    bound = float(scores.max()) if keep == 1 else float(-np.partition(-scores, keep - 1)[keep - 1])
    rows = np.flatnonzero(scores >= bound - 1e-9)
    # Re-score the contenders from exactly computed rows, against the same norms and ideals.
    exact = _topsis_criteria_exact(state, cands, rows) / norms
    d_best = np.sqrt((((exact - normalised_lo) * w) ** 2).sum(axis=1))
    d_worst = np.sqrt((((exact - normalised_hi) * w) ** 2).sum(axis=1))
    div = d_best + d_worst
    close = np.zeros(rows.size)
    np.divide(d_worst, div, out=close, where=div != 0)
    ordered = _tie_order(cands, rows, sid_rank, node_rank, -close)[:keep]
    imb = exact_scores(state, cands, ordered)
    _record(timings, started, scored_at)
    return [Scored(int(i), float(v)) for i, v in zip(ordered.tolist(), imb.tolist(), strict=True)]
