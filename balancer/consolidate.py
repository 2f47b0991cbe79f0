"""Consolidation: when the cluster is quiet, empty the least-loaded nodes so they can sleep.

Only considered when the mean node load is below ``consolidate_below_percent``. Nodes are
tried least-loaded first, at most ``consolidate_max_nodes`` per round. A node qualifies when:

- everything running on it can move (a running guest that is out of scope, excluded,
  cooling down or pinned by a strict rule keeps the node up);
- each of its bundles finds a legal target among the remaining nodes (rules, partners,
  memory headroom, cpu cap), placed largest first on the least-loaded legal node;
- N+1 headroom holds afterwards: for every remaining node r, the other remaining nodes have
  enough free memory and cpu (within their limits, summed) to absorb r's usage, and every
  bundle on r has some other remaining node its strict rules allow. The summed-free-space test
  is a fluid approximation of re-packing r's guests.

The result names the nodes that could be powered down; the moves are ordered in waves so every
intermediate state is legal (they need not lower the imbalance: emptying a node raises it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from balancer.cluster import F64, I64, Bool
from balancer.planner import (
    PlanOutcome,
    Step,
    node_loads,
    order_in_waves,
    state_imbalance,
    to_moves,
)
from balancer.safety import PlanProblem, move_violation


@dataclass(slots=True)
class ConsolidationResult:
    outcome: PlanOutcome
    nodes_to_power_down: list[str] = field(default_factory=list)


def _n_plus_one(problem: PlanProblem, cpu: F64, mem: F64, where: I64, active: Bool) -> str | None:
    """Why the active nodes could not absorb the loss of any one of them, or None."""
    free_mem = np.where(active, np.maximum(problem.mem_limit - mem, 0.0), 0.0)
    free_cpu = np.where(active, np.maximum(problem.cpu_limit - cpu, 0.0), 0.0)
    for node in np.flatnonzero(active):
        name = problem.node_names[node]
        if free_mem.sum() - free_mem[node] < mem[node]:
            return f"the others could not absorb {name}'s memory"
        if free_cpu.sum() - free_cpu[node] < cpu[node]:
            return f"the others could not absorb {name}'s cpu"
        others = active.copy()
        others[node] = False
        here = (where == node) & problem.bundle_running
        stranded = here & ~(problem.bundle_targets & others[None, :]).any(axis=1)
        if stranded.any():
            bundle = int(np.flatnonzero(stranded)[0])
            return f"{','.join(problem.bundle_members[bundle])} could not leave {name}"
    return None


def plan_consolidation(
    problem: PlanProblem,
    below_percent: float,
    max_nodes: int,
    concurrency: int,
) -> ConsolidationResult:
    """Moves emptying up to ``max_nodes`` lightly loaded nodes, and those nodes' names."""
    p = problem
    before = state_imbalance(p, p.node_cpu, p.node_mem)
    loads = node_loads(p, p.node_cpu, p.node_mem)
    mean = float(loads[p.node_counted].mean()) if p.node_counted.any() else 0.0
    notes: list[str] = []
    if mean * 100.0 >= below_percent:
        notes.append(
            f"consolidation: mean node load {mean * 100:.1f}% is not below {below_percent:g}%"
        )
        return ConsolidationResult(PlanOutcome([], [], before, before, notes=notes))

    cpu = p.node_cpu.astype(np.float64, copy=True)
    mem = p.node_mem.astype(np.float64, copy=True)
    where = p.bundle_node.astype(np.int64, copy=True)
    active = p.node_usable.copy()
    steps: list[Step] = []
    emptied: list[str] = []
    for node in np.argsort(loads, kind="stable"):
        if len(emptied) >= max_nodes or active.sum() <= 2:
            break
        if not active[node]:
            continue
        name = p.node_names[node]
        here = np.flatnonzero((where == node) & p.bundle_running)
        pinned = here[~p.bundle_movable[here]]
        if pinned.size:
            label = ",".join(p.bundle_members[int(pinned[0])])
            notes.append(f"consolidation: {name} keeps {label}, which may not move")
            continue
        trial_cpu, trial_mem, trial_where = cpu.copy(), mem.copy(), where.copy()
        trial_active = active.copy()
        trial_active[node] = False
        trial_steps: list[Step] = []
        failure = None
        for bundle in here[np.argsort(-p.bundle_mem[here], kind="stable")]:
            order = np.argsort(node_loads(p, trial_cpu, trial_mem), kind="stable")
            target = next(
                (
                    int(t)
                    for t in order
                    if trial_active[t]
                    and move_violation(p, trial_cpu, trial_mem, trial_where, int(bundle), int(t))
                    is None
                ),
                None,
            )
            if target is None:
                failure = f"{','.join(p.bundle_members[int(bundle)])} has no legal target"
                break
            trial_cpu[node] = max(trial_cpu[node] - p.bundle_cpu[bundle], 0.0)
            trial_mem[node] = max(trial_mem[node] - p.bundle_mem[bundle], 0.0)
            trial_cpu[target] += p.bundle_cpu[bundle]
            trial_mem[target] += p.bundle_mem[bundle]
            trial_where[bundle] = target
            trial_steps.append(Step(int(bundle), int(node), target))
        if failure is None:
            failure = _n_plus_one(p, trial_cpu, trial_mem, trial_where, trial_active)
        if failure is not None:
            notes.append(f"consolidation: {name} cannot be emptied: {failure}")
            continue
        cpu, mem, where, active = trial_cpu, trial_mem, trial_where, trial_active
        steps += trial_steps
        emptied.append(name)

    ordered = (
        order_in_waves(p, steps, concurrency, require_improvement=False)
        or order_in_waves(p, steps, 1, require_improvement=False)
        or []
    )
    moves = to_moves(p, ordered, before)
    for name in emptied:
        count = sum(1 for m in moves if m.source == name)
        notes.append(
            f"consolidation: node {name} could be powered down after {count} move(s); "
            "the remaining nodes keep N+1 headroom"
        )
    after = moves[-1].imbalance_after if moves else before
    outcome = PlanOutcome(moves, [], before, after, notes=notes)
    return ConsolidationResult(outcome, emptied)
