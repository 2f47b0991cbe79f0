"""``pve-rebalancer place``: rank the nodes a guest could start on, best first."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cli.main import add_format_option, add_source_options


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "place",
        help="rank nodes for starting a guest",
        description="Rank the nodes a guest may start on, as the CRS would score them.",
    )
    parser.add_argument("--snapshot", type=Path, help="a snapshot JSON file (else: live source)")
    parser.add_argument("--guest", required=True, help="HA sid (vm:100, ct:200) or vmid")
    parser.add_argument(
        "--mode", choices=("basic", "static", "dynamic"), help="default: the snapshot's CRS ha"
    )
    add_source_options(parser)
    add_format_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from balancer.cluster import from_snapshot
    from balancer.placement import rank_start_nodes
    from balancer.rules import resolve_rules
    from cli.errors import CommandError
    from cli.source import snapshot_from_args
    from cli.tables import table

    snapshot = snapshot_from_args(args)
    arrays = from_snapshot(snapshot)
    wanted = args.guest if ":" in args.guest else None
    index = next(
        (
            i
            for i, g in enumerate(snapshot.guests)
            if g.sid == wanted or (wanted is None and str(g.vmid) == args.guest)
        ),
        None,
    )
    if index is None:
        raise CommandError(f"no guest {args.guest!r} in the snapshot")
    mode = args.mode or snapshot.crs.ha
    ruleset = resolve_rules(snapshot.rules, arrays)
    ranking = rank_start_nodes(arrays, ruleset, index, mode)
    guest = snapshot.guests[index]
    if args.format == "json":
        document = {
            "guest": guest.sid,
            "mode": mode,
            "nodes": [{"node": n, "score": s} for n, s in ranking],
            "issues": [f"{f.kind} {f.where}: {f.message}" for f in ruleset.findings],
        }
        print(json.dumps(document, indent=2))
    else:
        score_name = "guests" if mode == "basic" else "TOPSIS score"
        print(f"start placement for {guest.sid} ({guest.name}), mode {mode}")
        print(table(("#", "node", score_name), [(i + 1, n, s) for i, (n, s) in enumerate(ranking)]))
        if not ranking:
            print("no node may start this guest (rules, maintenance, offline)")
    return 0
