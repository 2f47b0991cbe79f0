"""Property tests: the vectorised CRS scorers against plain-Python references on random clusters."""

import math
from unittest.mock import patch

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from balancer import candidates
from balancer.candidates import Candidates, dominant_targets, generate_candidates
from balancer.cluster import ClusterArrays, from_snapshot
from balancer.crs import CrsState, best_moves, crs_round, movable_bundles
from balancer.imbalance import (
    cv_squared_after_moves,
    cv_squared_on_grid,
    imbalance_after_moves,
    node_load,
)
from balancer.rules import RuleSet, resolve_rules, sid_ranks
from balancer.selection import NodeState, Scored, select_bruteforce, select_topsis
from balancer.usage import node_usage
from bench.synthetic import GIB, make_guest, make_node
from model import Crs, Rule, Snapshot

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def clusters(draw, with_rules: bool = True) -> Snapshot:
    n_nodes = draw(st.integers(2, 6))
    nodes = []
    for i in range(n_nodes):
        nodes.append(
            make_node(
                f"node{draw(st.sampled_from('abcdefgh'))}{i}",
                float(draw(st.sampled_from([2, 4, 8, 16]))),
                draw(st.sampled_from([4, 8, 16])) * GIB,
                cpu=draw(st.floats(0, 1.0)),
                mem=float(draw(st.integers(0, 2**30))),
                maintenance=draw(st.booleans()) and i > 0 and draw(st.booleans()),
            )
        )
    n_guests = draw(st.integers(1, 10))
    guests = []
    for g in range(n_guests):
        node = draw(st.integers(0, n_nodes - 1))
        cpu = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, draw(st.floats(0, 4))]))
        mem = float(
            draw(st.sampled_from([0, 2**29, 2**30, 3 * 2**30, draw(st.integers(0, 4 * 2**30))]))
        )
        vmid = draw(st.sampled_from([100, 1000, 20, 3])) + g
        guests.append(make_guest(vmid, nodes[node].name, cpu, mem, maxcpu=4, maxmem=4 * GIB))
        nodes[node].cpu += cpu
        nodes[node].mem += mem
    rules: list[Rule] = []
    if with_rules and n_guests >= 2:
        sids = [g.sid for g in guests]
        order = draw(st.permutations(range(n_guests)))
        # disjoint positive pairs (members co-located), negatives between different pairs
        pairs = [(order[i], order[i + 1]) for i in range(0, n_guests - 1, 2)][
            : draw(st.integers(0, 2))
        ]
        for k, (a, b) in enumerate(pairs):
            guests[b].node = guests[a].node
            rules.append(
                Rule(f"pos{k}", "resource-affinity", [sids[a], sids[b]], affinity="positive")
            )
            if draw(st.booleans()):
                chosen = draw(
                    st.lists(
                        st.sampled_from([n.name for n in nodes]),
                        min_size=1,
                        max_size=3,
                        unique=True,
                    )
                )
                rules.append(
                    Rule(
                        f"na{k}",
                        "node-affinity",
                        [sids[a], sids[b]],
                        nodes={name: draw(st.integers(0, 2)) for name in chosen},
                        strict=draw(st.booleans()),
                    )
                )
        singles = order[2 * len(pairs) :]
        if len(singles) >= 2 and draw(st.booleans()):
            rules.append(
                Rule(
                    "neg",
                    "resource-affinity",
                    [sids[singles[0]], sids[singles[1]]],
                    affinity="negative",
                )
            )
        # node usage follows guests moved into their pair's node
        for n in nodes:
            n.cpu = draw(st.floats(0, 1.0))
            n.mem = 0.0
        index = {n.name: n for n in nodes}
        for guest in guests:
            index[guest.node].cpu += guest.cpu or 0.0
            index[guest.node].mem += guest.mem or 0.0
    return Snapshot(timestamp=0, nodes=nodes, guests=guests, rules=rules)


def ref_loads(
    cpu: list[float], mem: list[float], maxcpu: list[float], maxmem: list[float]
) -> list[float]:
    return [(c / mc + m / mm) / 2 for c, m, mc, mm in zip(cpu, mem, maxcpu, maxmem, strict=True)]


def ref_imbalance(loads: list[float]) -> float:
    n = len(loads)
    total = 0.0
    for x in loads:
        total += x
    if n < 2 or total == 0.0:
        return 0.0
    mean = total / n
    sq = 0.0
    for x in loads:
        sq += (x - mean) ** 2
    return math.sqrt(sq / n) / mean / math.sqrt(n - 1)


def after_move(
    snap: Snapshot, s: int, t: int, dcpu: float, dmem: float
) -> tuple[list[float], list[float]]:
    cpu = [n.cpu for n in snap.nodes]
    mem = [n.mem for n in snap.nodes]
    cpu[s], mem[s] = max(0.0, cpu[s] - dcpu), max(0.0, mem[s] - dmem)
    cpu[t] += dcpu
    mem[t] += dmem
    return cpu, mem


def reference_candidates(
    snap: Snapshot, method: str
) -> tuple[ClusterArrays, RuleSet, Candidates, list[Scored]]:
    c = from_snapshot(snap)
    rs = resolve_rules(snap.rules, c)
    cands, scored, _ = best_moves(
        c, rs, "dynamic", method, np.zeros(c.n_guests, dtype=np.bool_), limit=1
    )
    return c, rs, cands, scored


@SETTINGS
@given(clusters())
def test_vectorised_scorer_equals_reference(snap):
    c, rs, cands, scored = reference_candidates(snap, "bruteforce")
    maxcpu = [n.maxcpu for n in snap.nodes]
    maxmem = [n.maxmem for n in snap.nodes]
    ref = []
    for i in range(len(cands)):
        s, t = int(cands.source[i]), int(cands.target[i])
        cpu, mem = after_move(snap, s, t, float(cands.cpu[i]), float(cands.mem[i]))
        ref.append(ref_imbalance(ref_loads(cpu, mem, maxcpu, maxmem)))
    approx = imbalance_after_moves(
        c.node_cpu,
        c.node_mem,
        c.node_maxcpu,
        c.node_maxmem,
        cands.source,
        cands.target,
        cands.cpu,
        cands.mem,
    )
    # the O(1) scorer is accurate in squared terms (near 0 the root amplifies rounding)
    assert np.allclose(approx**2, np.array(ref) ** 2, rtol=1e-9, atol=1e-14)
    if not ref:
        assert scored == []
        return
    key = [
        (
            math.trunc(ref[i] * 1e15) / 1e15,
            c.guest_sids[int(rs.bundle_leader[int(cands.bundle[i])])],
            c.node_names[int(cands.source[i])],
            c.node_names[int(cands.target[i])],
        )
        for i in range(len(cands))
    ]
    best = min(range(len(cands)), key=key.__getitem__)
    assert scored[0].index == best
    assert scored[0].imbalance == key[best][0]


@SETTINGS
@given(clusters())
def test_topsis_choice_equals_reference(snap):
    _c, _rs, cands, scored = reference_candidates(snap, "topsis")
    if len(cands) == 0:
        assert scored == []
        return
    maxcpu = [n.maxcpu for n in snap.nodes]
    maxmem = [n.maxmem for n in snap.nodes]
    rows = []
    for i in range(len(cands)):
        cpu, mem = after_move(
            snap,
            int(cands.source[i]),
            int(cands.target[i]),
            float(cands.cpu[i]),
            float(cands.mem[i]),
        )
        cl = [x / m for x, m in zip(cpu, maxcpu, strict=True)]
        ml = [x / m for x, m in zip(mem, maxmem, strict=True)]
        rows.append(
            [
                1 + math.sqrt(sum(x * x for x in cl) / len(cl)),
                1 + max(0.0, *cl),
                1 + math.sqrt(sum(x * x for x in ml) / len(ml)),
                1 + max(0.0, *ml),
            ]
        )
    norms = [math.sqrt(sum(r[j] ** 2 for r in rows)) for j in range(4)]
    w = [x / 18 for x in (1, 2, 5, 10)]
    scaled = [[r[j] / norms[j] for j in range(4)] for r in rows]
    best = [min(r[j] for r in scaled) for j in range(4)]
    worst = [max(r[j] for r in scaled) for j in range(4)]
    close = []
    for r in scaled:
        dp = math.sqrt(sum((w[j] * (r[j] - best[j])) ** 2 for j in range(4)))
        dm = math.sqrt(sum((w[j] * (r[j] - worst[j])) ** 2 for j in range(4)))
        close.append(dm / (dp + dm) if dp + dm else 0.0)
    top = max(close)
    chosen = scored[0].index
    assert close[chosen] >= top - 1e-12
    contenders = [i for i in range(len(cands)) if close[i] >= top - 1e-12]
    if len(contenders) == 1:
        assert chosen == contenders[0]
    cpu, mem = after_move(
        snap,
        int(cands.source[chosen]),
        int(cands.target[chosen]),
        float(cands.cpu[chosen]),
        float(cands.mem[chosen]),
    )
    assert (
        scored[0].imbalance
        == math.trunc(ref_imbalance(ref_loads(cpu, mem, maxcpu, maxmem)) * 1e15) / 1e15
    )


@SETTINGS
@given(clusters(), st.sampled_from(["bruteforce", "topsis"]))
def test_chosen_move_respects_rules_and_lowers_imbalance(snap, method):
    settings_ = Crs(
        ha="dynamic", auto_rebalance=True, threshold=0.0, hold_duration=0, margin=0.5, method=method
    )
    result, _ = crs_round(snap, settings_, CrsState())
    if not result.triggered:
        return
    move = result.moves[0]
    index = {g.sid: g for g in snap.guests}
    target_node = snap.node(move.target)
    assert target_node is not None
    assert target_node.online
    assert not target_node.maintenance
    for rule in snap.rules:
        members = set(rule.resources)
        moved = members & set(move.members)
        if not moved:
            continue
        if rule.type == "node-affinity" and rule.strict:
            assert move.target in (rule.nodes or {})
        if rule.affinity == "positive":
            assert members <= set(move.members)
        if rule.affinity == "negative":
            assert all(index[sid].node != move.target for sid in members - moved)
    # apply the move and recompute from scratch
    dcpu = sum(index[sid].cpu or 0.0 for sid in move.members)
    dmem = sum(index[sid].mem or 0.0 for sid in move.members)
    names = [n.name for n in snap.nodes]
    cpu, mem = after_move(snap, names.index(move.source), names.index(move.target), dcpu, dmem)
    loads = ref_loads(cpu, mem, [n.maxcpu for n in snap.nodes], [n.maxmem for n in snap.nodes])
    after = ref_imbalance(loads)
    # PVE's truncation: trunc(1e15 * x) / 1e15 in floating point (may round up by an ulp)
    assert move.imbalance_after == math.trunc(after * 1e15) / 1e15
    assert after < result.imbalance


@SETTINGS
@given(clusters(with_rules=False) | clusters())
def test_dominance_narrowing_keeps_the_bruteforce_winner(snap):
    c = from_snapshot(snap)
    rs = resolve_rules(snap.rules, c)
    moving = np.zeros(c.n_guests, dtype=np.bool_)
    bundles = movable_bundles(c, rs, "dynamic", moving)
    cpu, mem = node_usage(c, "dynamic")
    state = NodeState(cpu, mem, c.node_maxcpu, c.node_maxmem)
    loads = node_load(cpu, mem, c.node_maxcpu, c.node_maxmem)
    narrowed = dominant_targets(c.node_maxcpu, c.node_maxmem, loads, c.node_usable)
    full = generate_candidates(c, rs, bundles.movable, bundles.cpu, bundles.mem)
    few = generate_candidates(
        c, rs, bundles.movable, bundles.cpu, bundles.mem, narrowed_targets=narrowed
    )
    assert len(few) <= len(full)
    sid_rank = sid_ranks(c.guest_sids)[rs.bundle_leader]
    node_rank = sid_ranks(c.node_names)
    a = select_bruteforce(state, full, sid_rank, node_rank)
    b = select_bruteforce(state, few, sid_rank, node_rank)
    assert len(a) == len(b)
    if a:
        pick_a = (int(full.bundle[a[0].index]), int(full.target[a[0].index]), a[0].imbalance)
        pick_b = (int(few.bundle[b[0].index]), int(few.target[b[0].index]), b[0].imbalance)
        assert pick_a == pick_b


def _state_and_ranks(c: ClusterArrays, rs: RuleSet) -> tuple[NodeState, np.ndarray, np.ndarray]:
    cpu, mem = node_usage(c, "dynamic")
    state = NodeState(cpu, mem, c.node_maxcpu, c.node_maxmem)
    return state, sid_ranks(c.guest_sids)[rs.bundle_leader], sid_ranks(c.node_names)


def _grid_candidates(snap: Snapshot, narrow: bool) -> tuple[ClusterArrays, RuleSet, Candidates]:
    """Candidates with a grid part however few candidates it has (GRID_MIN = 0)."""
    c = from_snapshot(snap)
    rs = resolve_rules(snap.rules, c)
    bundles = movable_bundles(c, rs, "dynamic", np.zeros(c.n_guests, dtype=np.bool_))
    narrowed = None
    if narrow:
        cpu, mem = node_usage(c, "dynamic")
        loads = node_load(cpu, mem, c.node_maxcpu, c.node_maxmem)
        narrowed = dominant_targets(c.node_maxcpu, c.node_maxmem, loads, c.node_usable)
    with patch.object(candidates, "GRID_MIN", 0):
        cands = generate_candidates(
            c, rs, bundles.movable, bundles.cpu, bundles.mem, narrowed_targets=narrowed
        )
    return c, rs, cands


@SETTINGS
@given(clusters(with_rules=False) | clusters(), st.booleans())
def test_grid_candidates_expand_like_listed_ones(snap, narrow):
    _c, _rs, cands = _grid_candidates(snap, narrow)
    listed = cands.as_listed()
    picked = cands.take(np.arange(len(cands)))
    for name in ("bundle", "source", "target", "cpu", "mem"):
        assert np.array_equal(getattr(cands, name), getattr(listed, name))
        assert np.array_equal(getattr(picked, name), getattr(listed, name))
    assert not np.any(cands.source == cands.target)
    if cands.grid is not None:
        grid = cands.grid
        run, column = np.divmod(np.arange(grid.runs * grid.columns.size), grid.columns.size)
        move = column != grid.self_column[run]
        rows = cands.grid_rows(run[move], column[move])
        assert np.array_equal(np.sort(rows), np.arange(cands.grid_size))
        assert np.array_equal(cands.target[rows], grid.columns[column[move]])
        assert np.array_equal(cands.bundle[rows], cands.owners[run[move]])


@SETTINGS
@given(clusters(with_rules=False) | clusters(), st.booleans())
def test_grid_scorer_equals_listed_scorer_bit_for_bit(snap, narrow):
    c, rs, cands = _grid_candidates(snap, narrow)
    if cands.grid is None:
        return
    state, _, _ = _state_and_ranks(c, rs)
    grid = cands.grid
    on_grid, _ = cv_squared_on_grid(
        state.cpu,
        state.mem,
        state.maxcpu,
        state.maxmem,
        cands.run_source[: grid.runs],
        cands.run_cpu[: grid.runs],
        cands.run_mem[: grid.runs],
        grid.columns,
        grid.self_column,
    )
    listed = cands.as_listed()
    flat, _ = cv_squared_after_moves(
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
    column, run = np.divmod(np.arange(on_grid.size), grid.runs)
    move = column != grid.self_column[run]
    rows = cands.grid_rows(run[move], column[move])
    assert np.array_equal(on_grid.reshape(-1)[move], flat[rows])
    assert np.all(on_grid.reshape(-1)[~move] == np.inf)


@SETTINGS
@given(
    clusters(with_rules=False) | clusters(),
    st.sampled_from(["bruteforce", "topsis"]),
    st.integers(1, 4),
    st.booleans(),
)
def test_grid_and_listed_candidates_choose_alike(snap, method, limit, narrow):
    c, rs, cands = _grid_candidates(snap, narrow and method == "bruteforce")
    state, sid_rank, node_rank = _state_and_ranks(c, rs)
    select = select_topsis if method == "topsis" else select_bruteforce
    on_grid = select(state, cands, sid_rank, node_rank, limit)
    assert on_grid == select(state, cands.as_listed(), sid_rank, node_rank, limit)
    assert len(on_grid) == min(limit, len(cands))


def test_topsis_all_alike_falls_back_to_names():
    """Two identical empty nodes: both moves score alike (d+ = d- = 0); names decide."""
    nodes = [
        make_node("nodeb", 8.0, 16 * GIB, cpu=2.0, mem=4.0 * GIB),
        make_node("nodez", 8.0, 16 * GIB),
        make_node("nodea", 8.0, 16 * GIB),
    ]
    guests = [make_guest(100, "nodeb", 2.0, 4.0 * GIB, maxcpu=4, maxmem=4 * GIB)]
    snap = Snapshot(timestamp=0, nodes=nodes, guests=guests, rules=[])
    c, _rs, cands, scored = reference_candidates(snap, "topsis")
    assert len(cands) == 2
    assert [c.node_names[int(cands.target[s.index])] for s in scored] == ["nodea"]
