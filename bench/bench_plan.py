"""Benchmark of the multi-move planner: a 20-move greedy plan on 48 nodes x 10,000 guests.

Run: ``.venv/bin/python -m bench.bench_plan`` (from the repository root). Builds the synthetic
cluster of :mod:`bench.synthetic` once (not timed), then times, over several runs:

- ``plan``: the planning problem (bundles, masks, limits) plus the greedy search, collapse
  and wave ordering for up to 20 moves (``balancer.safety.build_problem`` +
  ``balancer.planner.plan_greedy``), i.e. what the budget of 0.5 s covers;
- ``decide``: the whole engine round (rules, triggers, state, result) for the same plan.

Prints the median and worst wall time, the median CPU time of the plan (the wall time on an
idle core: numpy runs single-threaded here), moves found, imbalance before/after and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

from balancer.cluster import from_snapshot
from balancer.engine import decide
from balancer.options import BalancerOptions
from balancer.planner import plan_greedy
from balancer.rules import resolve_rules
from balancer.safety import build_problem
from balancer.stability import BalancerState
from bench.synthetic import synthetic_snapshot
from model import Snapshot


def realistic(snapshot: Snapshot, cpu_scale: float = 0.15, mem_scale: float = 0.45) -> Snapshot:
    """Scale the synthetic guests' usage so nodes sit around 30-70% instead of above 100%.

    The synthetic generator packs ~200 guests per node, far beyond capacity; the safety
    limits would then leave almost no legal target and the benchmark would measure nothing.
    """
    by_name = {node.name: node for node in snapshot.nodes}
    for node in snapshot.nodes:
        node.cpu, node.mem = 0.5, 2.0 * 2**30
    for guest in snapshot.guests:
        guest.cpu = (guest.cpu or 0.0) * cpu_scale
        guest.mem = (guest.mem or 0.0) * mem_scale
        by_name[guest.node].cpu += guest.cpu
        by_name[guest.node].mem += guest.mem
    return snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=48)
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    snapshot = realistic(synthetic_snapshot(args.nodes, args.guests, seed=1))
    options = BalancerOptions(
        mode="dynamic",
        method="greedy",
        threshold=0.0,
        stop_threshold=0.0,
        hold_duration=0,
        margin=0.0,
        max_moves=args.moves,
        min_gain_per_gib=0.0,
        concurrency=4,
    )
    c = from_snapshot(snapshot)
    rules = resolve_rules(snapshot.rules, c)

    plan_times: list[float] = []
    plan_cpu: list[float] = []
    moves = 0
    before = after = 0.0
    for _ in range(args.runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        problem, _ = build_problem(snapshot, c, rules, options, "dynamic", set())
        outcome = plan_greedy(
            problem, args.moves, options.stop_level, options.concurrency, options.top_n
        )
        plan_times.append(time.perf_counter() - start)
        plan_cpu.append(time.process_time() - start_cpu)
        moves, before, after = len(outcome.moves), outcome.imbalance_before, outcome.imbalance_after

    decide_times: list[float] = []
    for _ in range(args.runs):
        start = time.perf_counter()
        result, _ = decide(snapshot, options, BalancerState(), now=0.0)
        decide_times.append(time.perf_counter() - start)

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"command: {sys.executable} -m bench.bench_plan " + " ".join(argv or sys.argv[1:]))
    print(
        f"cluster: {args.nodes} nodes x {args.guests} guests, "
        f"{args.guests * (args.nodes - 1)} single-move candidates per step"
    )
    print(
        f"plan ({args.moves} moves max): median {statistics.median(plan_times) * 1000:.1f} ms, "
        f"worst {max(plan_times) * 1000:.1f} ms, median CPU time "
        f"{statistics.median(plan_cpu) * 1000:.1f} ms; {moves} moves, "
        f"imbalance {before * 100:.3f}% -> {after * 100:.3f}%"
    )
    print(
        f"decide (whole round): median {statistics.median(decide_times) * 1000:.1f} ms, "
        f"worst {max(decide_times) * 1000:.1f} ms; {len(result.moves)} moves; phases (ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
    )
    print(f"peak RSS: {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
