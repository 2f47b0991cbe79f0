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
    state: NodeState, cands: Candidates, sid_rank: I64, node_rank: I64, limit: int = 1
) -> list[Scored]:
    """The ``limit`` best moves by resulting imbalance, PVE's order; [] without candidates.

    ``sid_rank`` ranks each bundle's leading sid; ``node_rank`` each node name.
    """
    k = len(cands)
    if k == 0 or limit <= 0:
        return []
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
    keep = min(limit, k)
    kth = float(np.partition(cv_sq, keep - 1)[keep - 1]) if keep < k else float(cv_sq.max())
    bound = max(kth, 0.0) + slack
    # Values within 1e-15 of each other in imbalance can truncate to the same 15 digits.
    trunc_slack = 2.0 * math.sqrt(bound * (state.cpu.size - 1)) * 2e-15 + 1e-29 * state.cpu.size
    rows = np.flatnonzero(cv_sq <= bound + slack + trunc_slack)
    scores = exact_scores(state, cands, rows)
    ordered = _tie_order(cands, rows, sid_rank, node_rank, scores)
    score_of = dict(zip(rows.tolist(), scores.tolist(), strict=True))
    return [Scored(int(i), score_of[int(i)]) for i in ordered[:keep]]


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


def _criteria_columns(state: NodeState, cands: Candidates) -> list[F64]:
    """The four post-move criteria as separate columns (see :func:`topsis_criteria`)."""
    n = state.cpu.size
    starts, lengths = _runs(cands)
    source = cands.source[starts]
    target = cands.target
    columns: list[F64] = []
    for used, cap, delta in (
        (state.cpu, state.maxcpu, cands.cpu),
        (state.mem, state.maxmem, cands.mem),
    ):
        inv = _ratio(np.ones(n), cap)
        loads = used * inv
        order = np.argsort(-loads, kind="stable")[:3]
        top = np.concatenate([loads[order], np.zeros(3 - order.size)])
        top_at = np.concatenate([order, np.full(3 - order.size, -1)])
        # Per bundle: the source after the move, and the two highest other nodes.
        src_new = np.maximum(used[source] - delta[starts], 0.0) * inv[source]
        first = np.where(top_at[0] == source, top[1], top[0])
        first_at = np.where(top_at[0] == source, top_at[1], top_at[0])
        second = np.where((top_at[0] == source) | (top_at[1] == source), top[2], top[1])
        first = np.maximum(first, src_new)
        second = np.maximum(second, src_new)
        squares = float((loads * loads).sum()) - loads[source] ** 2 + src_new**2

        tgt_new = np.multiply(delta, inv[target])
        tgt_new += loads[target]
        total = np.repeat(squares, lengths)
        total -= (loads * loads)[target]
        total += tgt_new * tgt_new
        np.maximum(total, 0.0, out=total)
        total *= 1.0 / n
        rms = np.sqrt(total, out=total)
        rms += 1.0
        highest = np.where(
            target == np.repeat(first_at, lengths),
            np.repeat(second, lengths),
            np.repeat(first, lengths),
        )
        np.maximum(highest, tgt_new, out=highest)
        highest += 1.0
        columns += [rms, highest]
    return columns


def topsis_criteria(state: NodeState, cands: Candidates) -> F64:
    """[k, 4] post-move criteria: 1+RMS cpu load, 1+max cpu load, 1+RMS mem, 1+max mem.

    Candidates of one bundle must be consecutive (as :func:`generate_candidates` emits them).
    """
    if len(cands) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    return np.stack(_criteria_columns(state, cands), axis=1)


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
    state: NodeState, cands: Candidates, sid_rank: I64, node_rank: I64, limit: int = 1
) -> list[Scored]:
    """The ``limit`` best moves by TOPSIS closeness over the post-move states."""
    k = len(cands)
    if k == 0 or limit <= 0:
        return []
    columns = _criteria_columns(state, cands)
    w = TOPSIS_WEIGHTS / TOPSIS_WEIGHTS.sum()
    norms = np.sqrt(np.array([float(np.square(col).sum()) for col in columns]))
    lows = np.array([float(col.min()) for col in columns])
    highs = np.array([float(col.max()) for col in columns])
    # d+^2 = sum c_j (a_j - min_j)^2 and d-^2 = sum c_j (a_j - max_j)^2 with c_j = (w_j/N_j)^2,
    # expanded as d-^2 = d+^2 - 2 sum c_j R_j (a_j - min_j) + sum c_j R_j^2, R_j = max_j - min_j.
    scale = (w / norms) ** 2
    spread = highs - lows
    d_best = np.zeros(k)
    cross = np.zeros(k)
    for j, col in enumerate(columns):
        col -= lows[j]
        cross += (scale[j] * spread[j]) * col
        col *= col
        d_best += scale[j] * col
    d_worst = d_best - 2.0 * cross
    d_worst += float((scale * spread * spread).sum())
    np.maximum(d_worst, 0.0, out=d_worst)
    np.sqrt(d_best, out=d_best)
    np.sqrt(d_worst, out=d_worst)
    div = d_best + d_worst
    scores = np.zeros(k)
    np.divide(d_worst, div, out=scores, where=div != 0)
    normalised_lo, normalised_hi = lows / norms, highs / norms
    keep = min(limit, k)
    bound = float(-np.partition(-scores, keep - 1)[keep - 1])
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
    return [Scored(int(i), float(v)) for i, v in zip(ordered.tolist(), imb.tolist(), strict=True)]
