"""The ``pve-rebalancer`` command: argument parsing and dispatch to one module per command.

Each command lives in its own module under ``cli/`` with a ``register(subparsers)`` function
that adds its parser and sets ``run``; a command's heavy imports happen inside its ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from cli.errors import CommandError
from collector.smoothing import VIEWS

COMMAND_MODULES = (
    "cli.demo",
    "cli.snapshot_cmd",
    "cli.simulate_cluster_cmd",
    "cli.plan_cmd",
    "cli.place_cmd",
    "cli.run_cmd",
    "cli.check_config_cmd",
    "cli.history_cmd",
    "cli.simulate_cmd",
)


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """The options that name a live source: an /etc/pve tree and an RRD directory."""
    group = parser.add_argument_group("live source")
    group.add_argument("--root", type=Path, default=Path("/etc/pve"), help="/etc/pve tree")
    group.add_argument(
        "--rrd-dir", type=Path, default=Path("/var/lib/rrdcached/db"), help="RRD root"
    )
    group.add_argument("--rrdcached", metavar="SOCKET", help="flush through rrdcached first")
    group.add_argument("--window", default="1h", help="history window, e.g. 30m, 1h, 2d")
    group.add_argument("--usage", choices=VIEWS, default="ewma", help="characteristic usage")
    group.add_argument("--half-life", default="10m", help="EWMA half-life")
    group.add_argument("--status-dump", type=Path, help="file holding the live status dump")
    group.add_argument(
        "--now", type=int, help="reference time in unix seconds (default: the wall clock)"
    )


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("json", "table"), default="table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pve-rebalancer",
        description="Load-balancing decisions for a Proxmox VE cluster from its RRD metrics.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except CommandError as error:
        print(f"pve-rebalancer {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
