"""Property tests: no plan ever breaks a strict rule, a resource-affinity rule or the memory
headroom at any intermediate step, and every step lowers the imbalance."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import Rule, Snapshot
from tests.test_plan_support import GIB, cluster, run, vm

NODES = ["a", "b", "c", "d", "e"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Snapshot, dict[str, object]]:
    n_nodes = draw(st.integers(2, 5))
    names = NODES[:n_nodes]
    n_guests = draw(st.integers(1, 14))
    guests = [
        vm(
            100 + i,
            draw(st.sampled_from(names[: max(1, n_nodes - 1)])),
            draw(st.floats(0.0, 3.0)),
            draw(st.floats(0.5, 30.0)),
            kind=draw(st.sampled_from(["qemu", "qemu", "lxc"])),
        )
        for i in range(n_guests)
    ]
    sids = [g.sid for g in guests]
    rules: list[Rule] = []
    pinned = draw(st.lists(st.sampled_from(sids), unique=True, max_size=3))
    for k, sid in enumerate(pinned):
        allowed = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        rules.append(Rule(f"pin{k}", "node-affinity", [sid], nodes=dict.fromkeys(allowed, 0),
                          strict=True))  # fmt: skip
    if len(sids) >= 2:
        for k in range(draw(st.integers(0, 2))):
            pair = draw(st.lists(st.sampled_from(sids), min_size=2, max_size=2, unique=True))
            rules.append(Rule(f"apart{k}", "resource-affinity", pair, affinity="negative"))
        if draw(st.booleans()):
            pair = draw(st.lists(st.sampled_from(sids), min_size=2, max_size=2, unique=True))
            rules.append(Rule("together", "resource-affinity", pair, affinity="positive"))
    snap = cluster(names, guests, rules=rules)
    overrides: dict[str, object] = {
        "threshold": 1.0,
        "stop_threshold": 0.0,
        "mem_headroom": draw(st.floats(0.3, 0.95)),
        "cpu_cap": draw(st.floats(0.3, 0.95)),
        "max_moves": draw(st.integers(1, 8)),
        "concurrency": draw(st.integers(1, 3)),
        "lookahead_width": draw(st.sampled_from([0, 3])),
        "method": draw(st.sampled_from(["greedy", "greedy", "bruteforce", "topsis"])),
    }
    return snap, overrides


def check_plan(snap: Snapshot, overrides: dict[str, object], lowering: bool = True) -> int:
    """Replay the plan independently of the planner; returns the number of moves."""
    result, _ = run(snap, **overrides)
    dropped = {
        f.where.split("'")[1]
        for f in result.findings
        if f.message.startswith("rule dropped") and "'" in f.where
    }
    rules = [r for r in snap.rules if r.id not in dropped]
    where = {g.sid: g.node for g in snap.guests}
    mem_of = {g.sid: (g.mem or 0.0) for g in snap.guests}
    cpu_of = {g.sid: (g.cpu or 0.0) for g in snap.guests}
    node_mem = {n.name: n.mem for n in snap.nodes}
    node_cpu = {n.name: n.cpu for n in snap.nodes}
    limits = {n.name: n.maxmem * float(overrides["mem_headroom"]) for n in snap.nodes}  # type: ignore[arg-type]
    cpu_limits = {n.name: n.maxcpu * float(overrides["cpu_cap"]) for n in snap.nodes}  # type: ignore[arg-type]
    previous = result.imbalance
    wave = None
    for move in result.moves:
        members = move.members or [move.sid]
        this_wave = re.search(r"wave (\d+)", move.reason)
        assert this_wave is not None
        if this_wave.group(1) != wave:
            # a wave runs concurrently: its guests arrive before any of them has left
            wave, wave_mem, wave_start = this_wave.group(1), dict(node_mem), dict(where)
        for sid in members:
            assert where[sid] == move.source
            for rule in rules:
                if sid not in rule.resources:
                    continue
                if rule.type == "node-affinity" and rule.strict:
                    assert move.target in (rule.nodes or {}), (rule.id, move)
                if rule.affinity == "negative":
                    partners = [p for p in rule.resources if p != sid and p in where]
                    assert all(where[p] != move.target for p in partners), (rule.id, move)
                    assert all(wave_start[p] != move.target for p in partners), (rule.id, move)
                if rule.affinity == "positive":
                    assert all(p in members for p in rule.resources if p in where), rule.id
        moved_mem = sum(mem_of[s] for s in members)
        moved_cpu = sum(cpu_of[s] for s in members)
        assert node_mem[move.target] + moved_mem <= limits[move.target] * (1 + 1e-9) + 1.0
        wave_mem[move.target] += moved_mem
        assert wave_mem[move.target] <= limits[move.target] * (1 + 1e-9) + 1.0
        assert node_cpu[move.target] + moved_cpu <= cpu_limits[move.target] * (1 + 1e-9) + 1e-9
        node_mem[move.target] += moved_mem
        node_mem[move.source] = max(node_mem[move.source] - moved_mem, 0.0)
        node_cpu[move.target] += moved_cpu
        node_cpu[move.source] = max(node_cpu[move.source] - moved_cpu, 0.0)
        for sid in members:
            where[sid] = move.target
        assert move.imbalance_after < previous or not lowering, move
        previous = move.imbalance_after
        assert move.gib_moved * GIB >= moved_mem - 1.0
    return len(result.moves)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_plan_breaks_rules_or_headroom_and_every_step_helps(
    scenario: tuple[Snapshot, dict[str, object]],
) -> None:
    check_plan(*scenario)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_optimal_plans_never_break_rules_or_headroom(
    scenario: tuple[Snapshot, dict[str, object]],
) -> None:
    snap, overrides = scenario
    check_plan(snap, {**overrides, "method": "optimal"}, lowering=False)
