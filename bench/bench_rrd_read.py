"""Benchmark collector.rrd.read_series against the bare librrd fetch loop.

Run: ``.venv/bin/python -m bench.bench_rrd_read [--guests N] [--minutes N] [--old N]``.
Builds ``--guests`` guest files of the PVE 9.0 DS list in a temporary RRD root (one file
made with the ``rrdtool`` command line and copied; only 1-minute archives of 180 rows, so
10,000 files take ~0.5 GB instead of 13 GB: fetch cost depends on the rows read, not on
the archive length), optionally ``--old`` pre-9 files to join, then times:

1. the raw loop: ``rrdtool.fetch`` of every file, nothing else;
2. ``read_series`` over the same window (fetch + numpy/polars frame + checks).

Prints the command line, the best wall and process-CPU times of ``--repeat`` runs (CPU time
is the steadier figure on a shared machine), rows, and the peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rrdtool

from collector.rrd import read_series
from model.rrd_schema import CONSOLIDATIONS, DERIVE_DS, GUEST_9, GUEST_OLD, HEARTBEAT, STEP

END = 1_767_225_600
HISTORY_ROWS = 180


def _template(path: Path, ds: tuple[str, ...], minutes: int) -> None:
    """One filled file, made and updated with the rrdtool command line."""
    definitions = [
        f"DS:{name}:{'DERIVE' if name in DERIVE_DS else 'GAUGE'}:{HEARTBEAT}:0:U" for name in ds
    ]
    archives = [f"RRA:{cf}:0.5:1:{HISTORY_ROWS}" for cf in CONSOLIDATIONS]
    start = END - minutes * STEP
    command = ["rrdtool", "create", str(path), "--start", str(start - STEP), "--step", str(STEP)]
    subprocess.run([*command, *definitions, *archives], check=True)
    updates = [
        f"{start + i * STEP}:" + ":".join(str(i * 100 + k) for k in range(len(ds)))
        for i in range(minutes + 1)
    ]
    subprocess.run(["rrdtool", "update", str(path), *updates], check=True)


def _populate(root: Path, guests: int, old: int, minutes: int, old_mtime: int | None) -> None:
    for layout, count in ((GUEST_9, guests), (GUEST_OLD, old)):
        directory = root / layout.directory
        directory.mkdir(parents=True)
        template = root / f"template-{layout.generation}"
        _template(template, layout.ds, minutes)
        for index in range(count):
            shutil.copyfile(template, directory / str(100 + index))
            if layout is GUEST_OLD and old_mtime is not None:
                os.utime(directory / str(100 + index), (old_mtime, old_mtime))
        template.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--old", type=int, default=0, help="also write N pre-9 files to join")
    parser.add_argument("--minutes", type=int, default=60, help="window length (1-min rows)")
    parser.add_argument("--keep", type=Path, help="build the files here and keep them")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--old-untouched",
        action="store_true",
        help="date old files before the window, as after an upgrade (they are then skipped)",
    )
    args = parser.parse_args(argv)
    if args.minutes >= HISTORY_ROWS:
        parser.error(f"--minutes must be below {HISTORY_ROWS}")

    print("command:", " ".join([sys.executable, "-m", "bench.bench_rrd_read", *sys.argv[1:]]))
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-rrd-"))
    try:
        began = time.perf_counter()
        if not (root / GUEST_9.directory).exists():
            untouched = END - 2 * args.minutes * STEP if args.old_untouched else None
            _populate(root, args.guests, args.old, args.minutes, untouched)
        print(f"files: {args.guests} current + {args.old} old in {root} "
              f"(built in {time.perf_counter() - began:.1f} s)")  # fmt: skip
        start = END - args.minutes * STEP
        window = ["-r", str(STEP), "-s", str(start), "-e", str(END)]
        paths = [str(p) for p in sorted((root / GUEST_9.directory).iterdir())]

        for path in paths:  # warm the page cache so both runs read from memory
            rrdtool.fetch(path, "AVERAGE", *window)
        raw_runs: list[tuple[float, float]] = []
        read_runs: list[tuple[float, float]] = []
        for _ in range(args.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            raw_rows = sum(len(rrdtool.fetch(path, "AVERAGE", *window)[2]) for path in paths)
            raw_runs.append((time.perf_counter() - wall, time.process_time() - cpu))
            wall, cpu = time.perf_counter(), time.process_time()
            read = read_series(root, "guest", None, start, END)
            read_runs.append((time.perf_counter() - wall, time.process_time() - cpu))
        raw_wall, raw_cpu = min(raw_runs)
        read_wall, read_cpu = min(read_runs)
        print(f"best of {args.repeat} runs (wall / process CPU):")
        print(f"  raw librrd fetch loop: {raw_wall:.3f} s / {raw_cpu:.3f} s for {raw_rows} rows")
        print(
            f"  read_series: {read_wall:.3f} s / {read_cpu:.3f} s for {read.frame.height} rows x "
            f"{read.frame.width} columns, {len(read.findings)} findings"
        )
        print(
            f"  ratio read_series / raw: {read_wall / raw_wall:.2f} wall, "
            f"{read_cpu / raw_cpu:.2f} CPU"
        )
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"peak RSS: {peak_kib / 1024:.0f} MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
