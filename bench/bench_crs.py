"""Benchmark of the CRS-compatible core: candidates + selection on synthetic clusters.

Run: ``.venv/bin/python -m bench.bench_crs`` (from the repository root). Prints, per
scenario, the candidate count, the median wall time of several runs and the peak RSS.
Scenarios: the RFC anchor (48 nodes, one in maintenance, 9,999 guests: 9,999 x 46 =
459,954 candidates) without rules (all candidates, and with the exact dominance narrowing of
:func:`balancer.candidates.dominant_targets`), with the worst-case rule set, with TOPSIS; and
1,000 nodes x 100,000 guests (one best move, bruteforce, narrowed) in a fresh subprocess for
its peak RSS. Times (median wall and CPU of ``--runs`` runs) exclude rule resolution, which
is timed separately (``rules_median_wall_ms``/``rules_median_cpu_ms``, worst-case set: each
guest in 3 rules); a calibration figure (one 459,954-element multiply) and the load average
show how loaded the shared machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from balancer.candidates import Candidates, dominant_targets, generate_candidates
from balancer.cluster import ClusterArrays
from balancer.crs import movable_bundles
from balancer.imbalance import node_load
from balancer.rules import RuleSet, resolve_rules, sid_ranks
from balancer.selection import NodeState, Scored, select_bruteforce, select_topsis
from balancer.usage import node_usage
from bench.synthetic import synthetic_arrays, synthetic_rules


def one_move(
    c: ClusterArrays, rs: RuleSet, method: str, narrow: bool
) -> tuple[Candidates, list[Scored]]:
    """Candidates and the best move, dynamic mode (what a CRS round computes after the rules)."""
    cpu, mem = node_usage(c, "dynamic")
    state = NodeState(cpu, mem, c.node_maxcpu, c.node_maxmem)
    bundles = movable_bundles(c, rs, "dynamic", np.zeros(c.n_guests, dtype=np.bool_))
    narrowed = None
    if narrow:
        loads = node_load(cpu, mem, c.node_maxcpu, c.node_maxmem)
        narrowed = dominant_targets(c.node_maxcpu, c.node_maxmem, loads, c.node_usable)
    cands = generate_candidates(
        c, rs, bundles.movable, bundles.cpu, bundles.mem, narrowed_targets=narrowed
    )
    sid_rank = sid_ranks(c.guest_sids)[rs.bundle_leader]
    select = select_topsis if method == "topsis" else select_bruteforce
    return cands, select(state, cands, sid_rank, sid_ranks(c.node_names), 1)


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``runs`` calls."""
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def calibration_ms() -> float:
    """Median time of one multiply over 459,954 doubles: how busy the machine is right now."""
    values = np.random.default_rng(0).random(459_954)
    return median_ms(lambda: values * values, 21)[0]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scenario(
    name: str, nodes: int, guests: int, rules: str, method: str, runs: int, narrow: bool
) -> dict[str, object]:
    c = synthetic_arrays(
        nodes, guests, seed=7, unusable_nodes=1 if nodes == 48 else 0, paired=rules == "worst"
    )
    rule_list = synthetic_rules(c, "worst" if rules == "worst" else "none")
    rs = resolve_rules(rule_list, c)
    rules_wall, rules_cpu = median_ms(lambda: resolve_rules(rule_list, c), runs)
    cands, best = one_move(c, rs, method, narrow)
    wall, cpu = median_ms(lambda: one_move(c, rs, method, narrow), runs)
    return {
        "scenario": name,
        "candidates": len(cands),
        "median_wall_ms": round(wall, 1),
        "median_cpu_ms": round(cpu, 1),
        "rules": len(rule_list),
        "rules_median_wall_ms": round(rules_wall, 1),
        "rules_median_cpu_ms": round(rules_cpu, 1),
        "best_imbalance": best[0].imbalance if best else None,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", choices=["anchor", "large"], default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    print("command:", " ".join([sys.executable, "-m", "bench.bench_crs", *sys.argv[1:]]))
    if args.child:
        print(
            json.dumps(
                scenario(
                    "1000 nodes x 100k guests, bruteforce",
                    1000,
                    100_000,
                    "none",
                    "bruteforce",
                    args.runs,
                    True,
                )
            )
        )
        return
    print(
        json.dumps(
            {
                "calibration_multiply_459954_ms": round(calibration_ms(), 3),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "cpus": os.cpu_count(),
            }
        )
    )
    if args.only in (None, "anchor"):
        for name, rules, method, narrow in (
            ("anchor 48x9999, no rules, bruteforce, all candidates", "none", "bruteforce", False),
            (
                "anchor 48x9999, no rules, bruteforce, dominance-narrowed",
                "none",
                "bruteforce",
                True,
            ),
            ("anchor 48x9999, worst-case rules, bruteforce", "worst", "bruteforce", False),
            ("anchor 48x9999, no rules, topsis", "none", "topsis", False),
            ("anchor 48x9999, worst-case rules, topsis", "worst", "topsis", False),
        ):
            print(json.dumps(scenario(name, 48, 9_999, rules, method, args.runs, narrow)))
    if args.only in (None, "large"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.bench_crs",
                "--child",
                "--runs",
                str(max(3, args.runs // 2)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
