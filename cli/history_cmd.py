"""``pve-rebalancer history``: the last decisions the service recorded in its state store.

Reads the SQLite state of a (possibly running) service read-only in spirit: it never
creates a state database, it only opens an existing one (WAL mode lets it read while the
service writes). The state directory comes from ``--state-dir`` or from the configuration.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.main import add_format_option


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "history",
        help="show the last decisions of the service",
        description="Print the last rounds the service recorded: imbalance, trigger, moves.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="the service's TOML configuration")
    where.add_argument("--state-dir", type=Path, help="the service's state directory")
    parser.add_argument("--limit", type=int, default=20, help="rows to show (newest first)")
    add_format_option(parser)
    parser.set_defaults(run=run)


def state_dir_of(args: argparse.Namespace) -> Path:
    from cli.config import Config, ConfigError, load_config
    from cli.errors import CommandError

    if args.state_dir is not None:
        return Path(args.state_dir)
    if args.config is not None:
        try:
            return Path(load_config(args.config).state.dir)
        except ConfigError as error:
            raise CommandError(f"invalid configuration:\n{error}") from error
    return Path(Config().state.dir)


def run(args: argparse.Namespace) -> int:
    from cli.errors import CommandError
    from cli.state_store import STATE_FILE, StateStore
    from cli.tables import table

    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    path = state_dir_of(args) / STATE_FILE
    if not path.is_file():
        raise CommandError(f"no state database at {path} (has the service run yet?)")
    with StateStore(path) as store:
        entries = store.history(args.limit)
    if args.format == "json":
        print(json.dumps([e.to_json() for e in entries], indent=2))
        return 0
    rows = [
        (
            datetime.fromtimestamp(e.finished_at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            e.imbalance * 100,
            None if e.imbalance_after is None else e.imbalance_after * 100,
            e.threshold,
            "yes" if e.triggered else "no",
            e.hold_count,
            ", ".join(f"{m['sid']} {m['source']}->{m['target']}" for m in e.moves) or "-",
            e.reason,
        )
        for e in entries
    ]
    headers = ("time (UTC)", "imbalance %", "after %", "threshold %", "triggered", "hold",
               "moves", "reason")  # fmt: skip
    print(table(headers, rows) if rows else "no rounds recorded yet")
    return 0
