"""Benchmark: collect a 48-node, 10,000-guest cluster from RRD files into a snapshot.

Target (issue 2): 1-hour window with EWMA smoothing, <= 1.0 s wall and <= 500 MB peak RSS on
the 2-core reference machine. The simulated cluster is written once into a cache directory
(``--cluster DIR``, default under /tmp) and reused; each measured run is a fresh process so
that its peak RSS is its own.

    .venv/bin/python -m bench.bench_collect [--nodes 48] [--guests 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


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
    marker.write_text(
        json.dumps({"nodes": nodes, "guests": guests, "seed": seed, "now": cluster.now})
    )
    return int(cluster.now)


def one_run(cluster: Path, now: int, usage: str) -> dict[str, float]:
    """Run in a child process: collect once, report wall time and peak RSS."""
    import resource

    from collector.snapshot_builder import CollectOptions, build_snapshot

    started = time.perf_counter()
    snapshot = build_snapshot(
        cluster / "etc" / "pve",
        cluster / "rrd",
        CollectOptions(now=now, usage=usage),  # type: ignore[arg-type]
    )
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "wall_s": wall,
        "peak_rss_mb": peak_mb,
        "guests": len(snapshot.guests),
        "findings": len(snapshot.issues),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=48)
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--usage", default="ewma")
    parser.add_argument("--cluster", type=Path, default=Path("/tmp/pve-rebalancer-bench-cluster"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--now", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.cluster, args.now, args.usage)))
        return
    now = ensure_cluster(args.cluster, args.nodes, args.guests, args.seed)
    runs = []
    for _ in range(args.runs):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.bench_collect",
                "--child",
                "--cluster",
                str(args.cluster),
                "--now",
                str(now),
                "--usage",
                args.usage,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    walls = [r["wall_s"] for r in runs]
    print(f"command: {' '.join(sys.argv)}")
    print(f"cluster: {args.nodes} nodes, {runs[0]['guests']} guests, window 1h, usage {args.usage}")
    print(
        f"collect wall s: median {statistics.median(walls):.3f}, min {min(walls):.3f}, "
        f"max {max(walls):.3f} over {len(runs)} runs"
    )
    print(f"peak RSS MB: max {max(r['peak_rss_mb'] for r in runs):.0f}")


if __name__ == "__main__":
    main()
