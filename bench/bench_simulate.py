"""Benchmark: write a synthetic cluster (default 48 nodes, 10,000 guests, 1 day of history).

Prints the command, wall and CPU time, peak RSS of this process and of the worker
processes, and what was written. The output is also the input of the collector benchmark:
pass ``--out DIR --keep`` to leave it on disk.

    .venv/bin/python -m bench.bench_simulate --out /tmp/sim48 --keep
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from simulator.cluster import simulate_cluster


def _disk_usage(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=48)
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--legacy-files", action="store_true")
    parser.add_argument("--out", type=Path, help="output directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the output")
    args = parser.parse_args(argv)

    print("command:", shlex.join([sys.executable, "-m", "bench.bench_simulate", *sys.argv[1:]]))
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-sim-"))
    wall = time.perf_counter()
    cpu = time.process_time()
    cluster = simulate_cluster(
        out,
        args.nodes,
        args.guests,
        args.days,
        args.seed,
        legacy_files=args.legacy_files,
        workers=args.workers,
    )
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    step_wall = time.perf_counter()
    cluster.advance(60)
    step_wall = time.perf_counter() - step_wall
    rrd_files, rrd_bytes = _disk_usage(cluster.rrd_root)
    etc_files, _ = _disk_usage(cluster.etc_root)
    points = round(args.days * 1440) + 1
    print(
        f"cluster: {args.nodes} nodes, {args.guests} guests, {args.days:g} days "
        f"({points} points per file), seed {args.seed}, {args.workers} workers"
    )
    print(f"wall time: {wall:.1f} s")
    print(f"cpu time: main {cpu:.1f} s, workers {children.ru_utime + children.ru_stime:.1f} s")
    print(f"peak RSS: main {own.ru_maxrss / 1024:.0f} MiB, largest worker "
          f"{children.ru_maxrss / 1024:.0f} MiB")  # fmt: skip
    print(f"rrd: {rrd_files} files, {rrd_bytes / 2**30:.2f} GiB; etc: {etc_files} files")
    print(f"guest files per second: {args.guests / wall:.0f}")
    print(f"advance(60) afterwards (one point in every file + dump): {step_wall:.2f} s")
    print(f"output: {out}" + ("" if args.keep else " (removed)"))
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
