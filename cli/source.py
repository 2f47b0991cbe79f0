"""Turn the live-source options of a command into a snapshot (or a clear error)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.durations import parse_duration
from cli.errors import CommandError
from collector.pvecfg.tree import PveTreeNotFoundError
from collector.snapshot_builder import CollectOptions, build_snapshot
from model import Snapshot


def collect_options(args: argparse.Namespace) -> CollectOptions:
    try:
        window = int(parse_duration(args.window))
        half_life = parse_duration(args.half_life)
    except ValueError as error:
        raise CommandError(str(error)) from error
    if window <= 0 or half_life <= 0:
        raise CommandError("--window and --half-life must be positive")
    daemon = args.rrdcached
    if daemon and not daemon.startswith(("unix:", "/")) and ":" not in daemon:
        daemon = f"unix:{daemon}"
    return CollectOptions(
        window_s=window,
        usage=args.usage,
        half_life_s=half_life,
        daemon=daemon,
        now=args.now,
        status_dump=args.status_dump,
    )


def snapshot_from_args(args: argparse.Namespace) -> Snapshot:
    """A snapshot from ``--snapshot FILE`` when the command has it and it is set, else live."""
    path: Path | None = getattr(args, "snapshot", None)
    if path is not None:
        try:
            return Snapshot.load(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CommandError(f"cannot read snapshot {path}: {error}") from error
    options = collect_options(args)
    if not args.root.is_dir():
        raise CommandError(f"/etc/pve root {str(args.root)!r} does not exist or is not a dir")
    if not args.rrd_dir.is_dir():
        raise CommandError(f"RRD directory {str(args.rrd_dir)!r} does not exist")
    try:
        return build_snapshot(args.root, args.rrd_dir, options)
    except PveTreeNotFoundError as error:
        raise CommandError(str(error)) from error
