"""``pve-rebalancer simulate-cluster``: write a synthetic cluster in the real PVE formats."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "simulate-cluster",
        help="write a synthetic cluster (RRD files, status dump, /etc/pve tree)",
        description="Write a seeded synthetic Proxmox VE cluster in the real on-disk formats: "
        "OUT/etc/pve, OUT/rrd (like /var/lib/rrdcached/db) and OUT/status.dump.",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--guests", type=int, default=60)
    parser.add_argument("--days", type=float, default=1.0, help="days of 60-s history")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--legacy-files", action="store_true", help="also write pre-9 RRD files")
    parser.add_argument("--legacy-groups", action="store_true", help="HA groups, not rules")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cli.errors import CommandError
    from simulator.cluster import simulate_cluster

    if args.nodes < 1 or args.guests < 0 or args.days <= 0:
        raise CommandError("--nodes must be >= 1, --guests >= 0 and --days > 0")
    started = time.perf_counter()
    cluster = simulate_cluster(
        args.out,
        args.nodes,
        args.guests,
        args.days,
        args.seed,
        legacy_files=args.legacy_files,
        legacy_groups=args.legacy_groups,
    )
    print(
        f"wrote {args.nodes} nodes and {args.guests} guests with {args.days:g} days of history "
        f"to {args.out} in {time.perf_counter() - started:.1f} s"
    )
    print(f"simulated time now: {cluster.now}; collect it with:")
    print(
        f"  pve-rebalancer snapshot --root {cluster.etc_root} --rrd-dir {cluster.rrd_root} "
        f"--status-dump {cluster.dump_path} --now {cluster.now}"
    )
    return 0
