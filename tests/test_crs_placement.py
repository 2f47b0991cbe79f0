"""Start placement in static and dynamic mode, one guest and several guests in one round."""

import math
from collections.abc import Sequence

from balancer.cluster import from_snapshot
from balancer.placement import place_starting_guests, rank_start_nodes
from balancer.rules import resolve_rules
from bench.synthetic import GIB, make_guest, make_node
from model import Rule, Snapshot


def ref_scores(
    cpu: Sequence[float],
    mem: Sequence[float],
    maxcpu: Sequence[float],
    maxmem: Sequence[float],
    add_cpu: float,
    add_mem: float,
) -> list[float]:
    """Plain-Python TOPSIS of starting a guest on each node (facts page section 4)."""
    rows = []
    n = len(cpu)
    for target in range(n):
        cl = [(cpu[i] + (add_cpu if i == target else 0)) / maxcpu[i] for i in range(n)]
        ml = [(mem[i] + (add_mem if i == target else 0)) / maxmem[i] for i in range(n)]
        rows.append(
            [
                1 + math.sqrt(sum(x * x for x in cl) / n),
                1 + max(cl),
                1 + math.sqrt(sum(x * x for x in ml) / n),
                1 + max(ml),
            ]
        )
    norms = [math.sqrt(sum(r[j] ** 2 for r in rows)) for j in range(4)]
    w = [x / 18 for x in (1, 2, 5, 10)]
    scaled = [[r[j] / norms[j] for j in range(4)] for r in rows]
    best = [min(r[j] for r in scaled) for j in range(4)]
    worst = [max(r[j] for r in scaled) for j in range(4)]
    out = []
    for r in scaled:
        dp = math.sqrt(sum((w[j] * (r[j] - best[j])) ** 2 for j in range(4)))
        dm = math.sqrt(sum((w[j] * (r[j] - worst[j])) ** 2 for j in range(4)))
        out.append(dm / (dp + dm) if dp + dm else 0.0)
    return out


def cluster() -> Snapshot:
    nodes = [
        make_node("n1", 8, 32 * GIB, cpu=4, mem=8 * GIB),
        make_node("n2", 8, 32 * GIB, cpu=1, mem=20 * GIB),
        make_node("n3", 16, 64 * GIB, cpu=2, mem=4 * GIB),
    ]
    guests = [
        make_guest(101, "n1", 3.0, 6 * GIB, maxcpu=4, maxmem=8 * GIB),
        make_guest(102, "n2", 0.5, 18 * GIB, maxcpu=2, maxmem=24 * GIB),
        make_guest(103, "n3", 1.0, 2 * GIB, maxcpu=0, maxmem=4 * GIB),
        make_guest(
            200, "n1", 0, 0, maxcpu=4, maxmem=16 * GIB, running=False, service_state="request_start"
        ),
        make_guest(
            201, "n1", 0, 0, maxcpu=4, maxmem=16 * GIB, running=False, service_state="request_start"
        ),
    ]
    return Snapshot(timestamp=0, nodes=nodes, guests=guests)


def test_static_placement_matches_reference():
    snap = cluster()
    c = from_snapshot(snap)
    ranking = rank_start_nodes(c, resolve_rules([], c), c.sid_index()["vm:200"], "static")
    # static usage: running guests at configured size; vm:103 has no limit -> 16 cores of n3
    cpu, mem = [4, 2, 16], [8 * GIB, 24 * GIB, 4 * GIB]
    expected = ref_scores(cpu, mem, [8, 8, 16], [32 * GIB, 32 * GIB, 64 * GIB], 4, 16 * GIB)
    order = sorted(range(3), key=lambda i: (-expected[i], f"n{i + 1}"))
    assert [name for name, _ in ranking] == [f"n{i + 1}" for i in order]
    for name, score in ranking:
        assert abs(score - expected[int(name[1]) - 1]) < 1e-12


def test_dynamic_placement_counts_other_starting_guests():
    snap = cluster()
    c = from_snapshot(snap)
    ranking = rank_start_nodes(c, resolve_rules([], c), c.sid_index()["vm:200"], "dynamic")
    # measured usage plus vm:201 (about to start on n1) at its configured size
    cpu = [4 + 4, 1, 2]
    mem = [8 * GIB + 16 * GIB, 20 * GIB, 4 * GIB]
    expected = ref_scores(cpu, mem, [8, 8, 16], [32 * GIB, 32 * GIB, 64 * GIB], 4, 16 * GIB)
    assert next(n for n, _ in ranking) == f"n{expected.index(max(expected)) + 1}"
    for name, score in ranking:
        assert abs(score - expected[int(name[1]) - 1]) < 1e-12


def test_batch_placement_counts_earlier_placements():
    nodes = [make_node(f"n{i}", 8, 32 * GIB) for i in (1, 2, 3)]
    guests = [
        make_guest(
            300 + i,
            "n1",
            0,
            0,
            maxcpu=4,
            maxmem=16 * GIB,
            running=False,
            service_state="request_start",
        )
        for i in range(3)
    ]
    snap = Snapshot(0, nodes, guests)
    c = from_snapshot(snap)
    rs = resolve_rules([], c)
    placed = place_starting_guests(c, rs, [0, 1, 2], "dynamic")
    # identical empty nodes: the first goes to n1 (name tie-break), the next avoid used nodes
    assert placed == [("vm:300", "n1"), ("vm:301", "n2"), ("vm:302", "n3")]
    # ranked one at a time (each ignoring itself), all three see the same picture
    singles = {rank_start_nodes(c, rs, g, "dynamic")[0][0] for g in range(3)}
    assert len(singles) == 1


def test_placement_respects_rules_and_maintenance():
    snap = cluster()
    snap.nodes[2].maintenance = True
    snap.rules = [
        Rule("apart", "resource-affinity", ["vm:200", "vm:102"], affinity="negative"),
    ]
    c = from_snapshot(snap)
    ranking = rank_start_nodes(c, resolve_rules(snap.rules, c), c.sid_index()["vm:200"], "static")
    assert [name for name, _ in ranking] == ["n1"]


def test_basic_mode_ranks_by_guest_count():
    snap = cluster()
    c = from_snapshot(snap)
    ranking = rank_start_nodes(c, resolve_rules([], c), c.sid_index()["vm:200"], "basic")
    assert ranking == [("n1", 1.0), ("n2", 1.0), ("n3", 1.0)]
    snap.guests[2].node = "n2"
    c = from_snapshot(snap)
    ranking = rank_start_nodes(c, resolve_rules([], c), c.sid_index()["vm:200"], "basic")
    assert ranking == [("n3", 0.0), ("n1", 1.0), ("n2", 2.0)]
