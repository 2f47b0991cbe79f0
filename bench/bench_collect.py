"""Benchmark: collect a 48-node, 10,000-guest cluster from RRD files into a snapshot.

Target (issue 2): 1-hour window with EWMA smoothing, <= 1.0 s wall and <= 500 MB peak RSS on
the 2-core reference machine. The simulated cluster is written once into a cache directory
(``--cluster DIR``, default under /tmp, about 13 GB) and reused. Each measured run is two fresh
processes (so that each peak RSS is its own), one after the other:

- a one-shot collect, as ``pve-rebalancer snapshot`` makes it: no config cache, every guest
  config parsed, once;
- a service: one config cache for ``--rounds`` collects. Its first round parses every config
  and fills the cache; the later ones are what the service does every round (the cache only
  stat()s unchanged files).

The collect pauses the cyclic garbage collector (:mod:`collector.gc_pause`); the young
collection it leaves for later is made right after each collect, timed, and counted in the
figures (``collect + its deferred GC``), so that pausing cannot hide a cost.

    .venv/bin/python -m bench.bench_collect [--nodes 48] [--guests 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.calibration import python_speed_ms
from collector.smoothing import View


def ensure_cluster(path: Path, nodes: int, guests: int, seed: int) -> int:
    """Write the simulated cluster once; return its 'now'."""
    from simulator.cluster import simulate_cluster

    marker = path / "bench-cluster.json"
    if marker.is_file():
        meta = json.loads(marker.read_text())
        if meta["nodes"] == nodes and meta["guests"] == guests and meta["seed"] == seed:
            return int(meta["now"])
    started = time.perf_counter()
    cluster = simulate_cluster(path, nodes, guests, days=1, seed=seed)
    print(f"simulated cluster written in {time.perf_counter() - started:.1f} s", flush=True)
    meta = {"nodes": nodes, "guests": guests, "seed": seed, "now": cluster.now}
    marker.write_text(json.dumps(meta))
    return int(cluster.now)


def one_run(cluster: Path, now: int, usage: View, rounds: int, cached: bool) -> dict[str, Any]:
    """Run in a child process: collect ``rounds`` times, with one config cache if ``cached``."""
    import resource

    # Module imports are process start-up, not collect: polars imports numpy.ma on its
    # first Series from numpy (about 40 ms), so it is imported here with the others.
    import numpy.ma  # noqa: F401

    from collector.pvecfg.guestcache import GuestConfigCache
    from collector.snapshot_builder import CollectOptions, build_snapshot

    cache = GuestConfigCache() if cached else None
    walls: list[float] = []
    cpus: list[float] = []
    deferred: list[float] = []
    guests = findings = 0
    for _ in range(rounds):
        started, cpu_started = time.perf_counter(), time.process_time()
        snapshot = build_snapshot(
            cluster / "etc" / "pve",
            cluster / "rrd",
            CollectOptions(now=now, usage=usage),
            cache=cache,
        )
        built = time.perf_counter()
        gc.collect(1)  # the young and middle generations the paused build left unscanned
        deferred.append(time.perf_counter() - built)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu_started)
        guests, findings = len(snapshot.guests), len(snapshot.issues)
    from collector.rrd_fast import shutdown_pool

    shutdown_pool()  # the fetch workers end here, so their peak RSS is counted below
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "worker_peak_rss_mb": worker_peak_mb,
        "walls": walls,
        "deferred_gc": deferred,
        "cpus": cpus,
        "peak_rss_mb": peak_mb,
        "guests": guests,
        "findings": findings,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=48)
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3, help="fresh processes")
    parser.add_argument("--rounds", type=int, default=5, help="collects per process")
    parser.add_argument("--usage", default="ewma")
    parser.add_argument("--cluster", type=Path, default=Path("/tmp/pve-rebalancer-bench-cluster"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--now", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--uncached", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = one_run(args.cluster, args.now, args.usage, args.rounds, not args.uncached)
        print(json.dumps(result))
        return
    now = ensure_cluster(args.cluster, args.nodes, args.guests, args.seed)
    oneshots: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    speeds: list[float] = []
    for _ in range(args.runs):
        speeds.append(min(python_speed_ms() for _ in range(5)))
        child = [sys.executable, "-m", "bench.bench_collect", "--child"]
        child += ["--cluster", str(args.cluster), "--now", str(now), "--usage", args.usage]
        kinds = (
            (oneshots, ["--rounds", "1", "--uncached"]),
            (runs, ["--rounds", str(args.rounds)]),
        )
        for target, extra in kinds:
            out = subprocess.run(child + extra, check=True, capture_output=True, text=True)
            target.append(json.loads(out.stdout.strip().splitlines()[-1]))
    oneshot = [r["walls"][0] for r in oneshots]
    oneshot_gc = [r["deferred_gc"][0] for r in oneshots]
    oneshot_cpu = [r["cpus"][0] for r in oneshots]
    cold = [r["walls"][0] for r in runs]
    cold_gc = [r["deferred_gc"][0] for r in runs]
    warm_gc = [g for r in runs for g in r["deferred_gc"][1:]]
    cold_cpu = [r["cpus"][0] for r in runs]
    warm = [w for r in runs for w in r["walls"][1:]]
    warm_cpu = [c for r in runs for c in r["cpus"][1:]]
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"python speed calibration: median {statistics.median(speeds):.2f} ms "
        f"(range {min(speeds):.2f}-{max(speeds):.2f}), load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"cluster: {args.nodes} nodes, {runs[0]['guests']} guests, window 1h, usage "
        f"{args.usage}, {runs[0]['findings']} findings"
    )
    print(
        "one-shot collect (no config cache, with its deferred GC): "
        f"wall median {statistics.median(oneshot):.3f} s (min {min(oneshot):.3f}), "
        f"cpu median {statistics.median(oneshot_cpu):.3f} s over {len(oneshot)} processes "
        f"(of which deferred GC median {statistics.median(oneshot_gc) * 1000:.0f} ms)"
    )
    print(
        "service first round (fills the config cache, with its deferred GC): "
        f"wall median {statistics.median(cold):.3f} s (min {min(cold):.3f}), "
        f"cpu median {statistics.median(cold_cpu):.3f} s over {len(cold)} processes "
        f"(of which deferred GC median {statistics.median(cold_gc) * 1000:.0f} ms)"
    )
    if warm:
        print(
            "service round collect (with its deferred GC): "
            f"wall median {statistics.median(warm):.3f} s (min {min(warm):.3f}), "
            f"cpu median {statistics.median(warm_cpu):.3f} s over {len(warm)} rounds "
            f"(deferred GC median {statistics.median(warm_gc) * 1000:.0f} ms)"
        )
    print(
        f"peak RSS MB: one-shot process {max(r['peak_rss_mb'] for r in oneshots):.0f}, "
        f"service process {max(r['peak_rss_mb'] for r in runs):.0f}, largest fetch worker "
        f"{max(r['worker_peak_rss_mb'] for r in [*oneshots, *runs]):.0f}"
    )


if __name__ == "__main__":
    main()
