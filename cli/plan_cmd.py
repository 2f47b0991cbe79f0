"""``pve-rebalancer plan``: one balancing decision for a snapshot or a live source.

Without flags the settings follow the snapshot's ``crs`` block (datacenter.cfg). A one-shot
run has no history, so it decides as the service would once the cluster had looked like this
for the hold duration: it runs up to hold-duration + 1 rounds on the same snapshot and
reports the first round that triggers (or the last one).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cli.main import add_format_option, add_source_options

METHODS = ("bruteforce", "topsis", "greedy", "optimal", "consolidate")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "plan",
        help="decide which migrations to make",
        description="Measure imbalance and plan migrations for a snapshot or a live cluster.",
    )
    parser.add_argument("--snapshot", type=Path, help="a snapshot JSON file (else: live source)")
    parser.add_argument("--mode", choices=("basic", "static", "dynamic"), help="usage mode")
    parser.add_argument("--method", choices=METHODS, help="selection method")
    parser.add_argument("--max-moves", type=int, help="most moves in one plan")
    parser.add_argument(
        "--scope", choices=("ha", "all"), help="ha: started HA resources; all: running guests"
    )
    parser.add_argument("--threshold", type=float, help="imbalance threshold, percent")
    parser.add_argument("--margin", type=float, help="minimum relative improvement, percent")
    parser.add_argument(
        "--crs-compatible", action="store_true", help="decide exactly as the PVE HA manager"
    )
    parser.add_argument("--exclude-tag", action="append", default=[], metavar="TAG")
    parser.add_argument("--exclude-id", action="append", default=[], metavar="ID")
    parser.add_argument("--exclude-pool", action="append", default=[], metavar="POOL")
    parser.add_argument("--no-containers", action="store_true", help="never move containers")
    parser.add_argument("--top", type=int, help="how many best single moves to list")
    add_source_options(parser)
    add_format_option(parser)
    parser.set_defaults(run=run)


def options_from_args(args: argparse.Namespace, snapshot: Any) -> tuple[Any, Any]:
    """BalancerOptions and the CRS block in force: the snapshot's, overridden by the flags.

    The CRS-compatible path reads the CRS settings from the snapshot itself, so the caller
    decides on a copy of the snapshot carrying the returned CRS block.
    """
    from balancer.options import BalancerOptions
    from cli.errors import CommandError

    crs = snapshot.crs
    overrides: dict[str, Any] = {}
    if args.threshold is not None:
        overrides["threshold"] = args.threshold
        crs = replace(crs, threshold=args.threshold)
    if args.margin is not None:
        overrides["margin"] = args.margin
        crs = replace(crs, margin=args.margin)
    if args.mode is not None:
        crs = replace(crs, ha=args.mode)
        overrides["mode"] = "static" if args.mode == "basic" else args.mode
    if args.method in ("bruteforce", "topsis"):
        crs = replace(crs, method=args.method)
    for flag, key in (("method", "method"), ("max_moves", "max_moves"), ("top", "top_n")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.scope is not None:
        overrides["scope"] = "crs" if args.scope == "ha" else "all"
    overrides["exclude_tags"] = args.exclude_tag
    overrides["exclude_ids"] = args.exclude_id
    overrides["exclude_pools"] = args.exclude_pool
    overrides["include_containers"] = not args.no_containers
    overrides["crs_compatible"] = args.crs_compatible
    options = BalancerOptions.from_crs(crs, **overrides)
    problems = options.validate()
    if problems:
        raise CommandError("; ".join(problems))
    return options, crs


def run(args: argparse.Namespace) -> int:
    from balancer.engine import decide
    from balancer.stability import BalancerState
    from cli.source import snapshot_from_args
    from cli.tables import result_table

    collected = snapshot_from_args(args)
    options, crs = options_from_args(args, collected)
    snapshot = replace(collected, crs=crs)
    state = BalancerState()
    now = float(snapshot.timestamp or time.time())
    rounds = max(options.hold_duration, options.overload_hold) + 1
    for _ in range(rounds):
        result, state = decide(snapshot, options, state, now)
        if result.triggered or result.moves:
            break
    if rounds > 1:
        result.notes.append(
            f"one-shot run: decided as if this state had held for {rounds - 1} earlier rounds"
        )
    print(result.dumps() if args.format == "json" else result_table(result))
    return 0
