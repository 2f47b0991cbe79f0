"""Benchmark: one full service round on a 48-node, 10,000-guest cluster.

Target (issue 5): collect from files, smooth, plan, export in <= 1.5 s wall and <= 600 MB peak
on the 2-core reference machine. Uses the simulated cluster that ``bench.bench_collect``
writes once under /tmp (real-size PVE 9 RRD files and /etc/pve tree). One process runs
``--rounds`` rounds through the service's RoundRunner (config cache warm after the first),
each followed by a /metrics render as a scrape would do; the first round is reported apart.

    .venv/bin/python -m bench.bench_round [--rounds 8]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

from prometheus_client import generate_latest

from balancer.options import BalancerOptions
from bench.bench_collect import ensure_cluster
from cli.service import RoundRunner
from collector.pvecfg.guestcache import GuestConfigCache
from collector.rrd_fast import shutdown_pool
from collector.snapshot_builder import CollectOptions, build_snapshot
from exporters.metrics import make_registry
from exporters.state import RoundPublisher
from model import Snapshot


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--cluster", type=Path, default=Path("/tmp/pve-rebalancer-bench-cluster"))
    args = parser.parse_args()
    now = ensure_cluster(args.cluster, 48, 10_000, 7)
    cache = GuestConfigCache()

    def collect() -> Snapshot:
        return build_snapshot(
            args.cluster / "etc" / "pve",
            args.cluster / "rrd",
            CollectOptions(now=now),
            cache=cache,
        )

    publisher = RoundPublisher()
    registry = make_registry(publisher)
    options = BalancerOptions(
        method="greedy", scope="all", threshold=1.0, hold_duration=0, max_moves=10
    )
    runner = RoundRunner(
        collect=collect, publisher=publisher, options=options, freeze_gc_after_first_round=True
    )  # as the service (Daemon) runs it
    walls: list[float] = []
    moves = 0
    exposition = 0
    for _ in range(args.rounds):
        started = time.perf_counter()
        published = runner.run_once()
        exposition = len(generate_latest(registry))
        walls.append(time.perf_counter() - started)
        assert published.ok, published.error
        moves = len(published.result.moves) if published.result else 0
    shutdown_pool()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"command: {' '.join(sys.argv)}")
    print(f"cluster: 48 nodes, 10000 guests; plan of {moves} moves; /metrics {exposition} bytes")
    print(f"first round (cold config parse): {walls[0]:.3f} s")
    later = walls[1:]
    print(
        f"service rounds: median {statistics.median(later):.3f} s, min {min(later):.3f} s, "
        f"max {max(later):.3f} s over {len(later)} rounds"
    )
    print(f"peak RSS MB: service process {peak:.0f}, largest fetch worker {workers:.0f}")


if __name__ == "__main__":
    main()
