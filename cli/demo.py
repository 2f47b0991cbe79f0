"""``pve-rebalancer demo``: the whole service on the embedded simulated cluster.

The simulator writes a cluster (real RRD files, status dump, /etc/pve tree) into a temporary
directory; the collector reads it back into a snapshot; the balancer decides, both exactly
as the PVE CRS would and with the beyond-CRS planner, and prints both. Then (unless
``--once``) the service keeps running on that cluster as it evolves: a round every
``--interval`` seconds, ``/metrics`` and the status page served, one summary line per round.
Nothing outside the temporary directory is touched.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="simulate a cluster, collect it and plan (the embedded default)",
        description="Run the pipeline on a simulated cluster in a temporary directory.",
    )
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--guests", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="write the cluster here and keep it")
    parser.add_argument(
        "--once", action="store_true", help="print the decisions and stop (no service)"
    )
    serve = parser.add_argument_group("service mode (without --once)")
    serve.add_argument("--listen", default="127.0.0.1", help="exporter address")
    serve.add_argument("--port", type=int, default=9878, help="exporter port (0: any free)")
    serve.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    serve.add_argument(
        "--sim-step", type=int, default=60, help="simulated seconds per round (whole minutes)"
    )
    serve.add_argument("--rounds", type=int, help="stop after this many rounds")
    serve.add_argument(
        "--apply-moves", action="store_true", help="carry planned moves out in the simulator"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.keep is not None:
        return _demo(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="pve-rebalancer-demo-") as tmp:
        return _demo(args, Path(tmp))


def _demo(args: argparse.Namespace, out: Path) -> int:
    from balancer.engine import decide
    from balancer.options import BalancerOptions
    from balancer.stability import BalancerState
    from cli.demo_service import serve_simulated
    from cli.tables import result_table, snapshot_table
    from collector.snapshot_builder import CollectOptions, build_snapshot
    from simulator.cluster import simulate_cluster

    started = time.perf_counter()
    cluster = simulate_cluster(out, args.nodes, args.guests, days=1, seed=args.seed)
    print(
        f"== simulated {args.nodes} nodes, {args.guests} guests, 1 day of history in {out} "
        f"({time.perf_counter() - started:.1f} s)\n"
    )

    started = time.perf_counter()
    snapshot = build_snapshot(
        cluster.etc_root,
        cluster.rrd_root,
        CollectOptions(now=cluster.now, usage="ewma", status_dump=cluster.dump_path),
    )
    print(f"== collected snapshot ({(time.perf_counter() - started) * 1000:.0f} ms)")
    print(snapshot_table(snapshot))

    for title, options in (
        (
            "as the PVE CRS would decide (crs-compatible)",
            BalancerOptions.from_crs(snapshot.crs, crs_compatible=True),
        ),
        (
            "pve-rebalancer plan (greedy, all running guests)",
            BalancerOptions.from_crs(snapshot.crs, method="greedy", scope="all", hold_duration=0),
        ),
    ):
        state = BalancerState()
        for _ in range(max(options.hold_duration, options.overload_hold) + 1):
            result, state = decide(snapshot, options, state, float(cluster.now))
            if result.triggered:
                break
        print(f"\n== {title}")
        print(result_table(result))
    if args.once:
        return 0
    print("\n== the service on the evolving cluster (Ctrl-C stops it)", flush=True)
    return serve_simulated(args, cluster)
