"""``pve-rebalancer snapshot``: collect a cluster into one snapshot, as JSON or a table."""

from __future__ import annotations

import argparse
from typing import Any

from cli.main import add_format_option, add_source_options


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "snapshot",
        help="collect /etc/pve and the RRD files into one cluster snapshot",
        description="Build a cluster snapshot from an /etc/pve tree and an RRD directory.",
    )
    add_source_options(parser)
    add_format_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cli.source import snapshot_from_args
    from cli.tables import snapshot_table

    snapshot = snapshot_from_args(args)
    print(snapshot.dumps() if args.format == "json" else snapshot_table(snapshot))
    return 0
