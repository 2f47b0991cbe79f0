"""Benchmark collector.rrd.read_series against bare librrd fetch loops.

Run: ``.venv/bin/python -m bench.bench_rrd_read [--guests N] [--minutes N] [--old N]``.
Builds ``--guests`` guest files of the PVE 9.0 DS list in a temporary RRD root (one file
made with the ``rrdtool`` command line and copied; only 1-minute archives of 180 rows, so
10,000 files take ~0.5 GB instead of 13 GB: fetch cost depends on the rows read, not on
the archive length), optionally ``--old`` pre-9 files to join, then times:

1. raw fetch through the ``rrdtool`` binding (tuples of Python floats), nothing else;
2. raw fetch through librrd's ``rrd_fetch_r`` with ctypes (:mod:`collector.rrd_fast`), on
   one thread and on ``--threads`` threads, with each thread's own CPU time: the busiest
   thread bounds the wall time on an idle machine;
3. ``read_series`` (fetch + numpy/polars frame + checks) with every column, with
   ``--columns`` only, and (``--binding``) with librrd forced unavailable.

Each stage runs in a forked child, so its peak RSS is its own. Prints the command line, the
load average, and per stage the best wall and process-CPU times of ``--repeat`` runs after a
warm-up (CPU time is the steadier figure on a shared machine), the peak RSS and the output.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

import rrdtool

from collector import rrd_fast
from collector.rrd import read_series
from collector.rrd_fast import Chunk, Librrd
from model.rrd_schema import CONSOLIDATIONS, DERIVE_DS, GUEST_9, GUEST_OLD, HEARTBEAT, STEP

END = 1_767_225_600
HISTORY_ROWS = 180


class _ThreadTimed(Librrd):
    """Records the CPU time each thread spends in :meth:`fetch_chunk`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.cpu: dict[int, float] = {}
        self._lock = threading.Lock()

    def fetch_chunk(
        self, paths: Sequence[str], cf: str, start: int, end: int, resolution: int
    ) -> Chunk:
        began = time.thread_time()
        chunk = super().fetch_chunk(paths, cf, start, end, resolution)
        spent = time.thread_time() - began
        with self._lock:
            ident = threading.get_ident()
            self.cpu[ident] = self.cpu.get(ident, 0.0) + spent
        return chunk


def _best(repeat: int, run: Callable[[], str]) -> tuple[float, float, str]:
    """Best wall and best process-CPU seconds of ``repeat`` runs, and the last result."""
    walls: list[float] = []
    cpus: list[float] = []
    result = run()  # warm-up (page cache, imports, caches); not timed
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def _in_child(repeat: int, run: Callable[[], str]) -> tuple[float, float, str, float]:
    """``_best`` of ``run`` in a forked child, so that its peak RSS is this stage's alone.

    Returns best wall and CPU seconds, the description the last run gave, and the child's
    peak RSS in MiB.
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def child() -> None:
        wall, cpu, what = _best(repeat, run)
        sender.send((wall, cpu, what, _peak_mib()))

    process = context.Process(target=child)
    process.start()
    sender.close()
    try:
        wall, cpu, what, peak = receiver.recv()
    except EOFError:
        raise SystemExit(f"benchmark stage died (exit code {process.exitcode})") from None
    finally:
        process.join()
    return wall, cpu, what, peak


def _binding_stage(paths: list[str], window: list[str]) -> Callable[[], str]:
    def run() -> str:
        rows = sum(len(rrdtool.fetch(path, "AVERAGE", *window)[2]) for path in paths)
        return f"{rows} rows"

    return run


def _ctypes_stage(name: str, paths: list[str], start: int, threads: int) -> Callable[[], str]:
    timed = _ThreadTimed(name)

    def run() -> str:
        timed.cpu.clear()  # each run has its own pool threads
        chunks = timed.fetch_many(paths, "AVERAGE", start, END, STEP, workers=threads)
        rows = sum(
            result.values.shape[0]
            for chunk in chunks
            for result in chunk.results
            if isinstance(result, rrd_fast.Fetched)
        )
        per_thread = sorted(timed.cpu.values(), reverse=True)
        cpu = ", ".join(f"{spent:.3f}" for spent in per_thread)
        return f"{rows} rows; last run's CPU per thread: {cpu} s"

    return run


def _read_stage(
    root: Path, start: int, columns: list[str] | None, binding: bool = False
) -> Callable[[], str]:
    def run() -> str:
        if binding:
            with mock.patch.object(rrd_fast, "load_librrd", return_value=None):
                read = read_series(root, "guest", None, start, END, columns=columns)
        else:
            read = read_series(root, "guest", None, start, END, columns=columns)
        return f"{read.frame.height} x {read.frame.width}, {len(read.findings)} findings"

    return run


def _measure(args: argparse.Namespace, root: Path) -> None:
    start = END - args.minutes * STEP
    window = ["-r", str(STEP), "-s", str(start), "-e", str(END)]
    paths = [str(p) for p in sorted((root / GUEST_9.directory).iterdir())]
    for path in paths:  # warm the page cache so every stage reads from memory
        rrdtool.fetch(path, "AVERAGE", *window)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs; each stage in a forked child: best")
    print(f"of {args.repeat} runs after a warm-up, wall / process CPU, the child's peak RSS:")
    stages: list[tuple[str, Callable[[], str]]] = [
        ("raw fetch, rrdtool binding", _binding_stage(paths, window))
    ]
    library = rrd_fast.load_librrd()
    if library is None:
        print("  librrd cannot be loaded through ctypes: no ctypes figures")
    else:
        for threads in sorted({1, args.threads}):
            label = f"raw fetch, ctypes, {threads} thread{'s' if threads > 1 else ''}"
            stages.append((label, _ctypes_stage(library.name, paths, start, threads)))
    columns = [name.strip() for name in args.columns.split(",") if name.strip()]
    stages.append(("read_series, all columns", _read_stage(root, start, None)))
    stages.append((f"read_series, {','.join(columns)}", _read_stage(root, start, columns)))
    if args.binding:
        stages.append(("read_series, binding path", _read_stage(root, start, None, True)))
    for label, run in stages:
        wall, cpu, what, peak = _in_child(args.repeat, run)
        print(f"  {label:<34} {wall:6.3f} s / {cpu:6.3f} s  {peak:5.0f} MiB  {what}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--old", type=int, default=0, help="also write N pre-9 files to join")
    parser.add_argument("--minutes", type=int, default=60, help="window length (1-min rows)")
    parser.add_argument("--keep", type=Path, help="build the files here and keep them")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=rrd_fast.default_workers(), help="ctypes fetch threads"
    )
    parser.add_argument("--columns", default="cpu,mem,maxcpu", help="narrow read_series columns")
    parser.add_argument(
        "--binding", action="store_true", help="also time read_series with librrd unavailable"
    )
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
        built = time.perf_counter() - began
        print(f"files: {args.guests} current + {args.old} old in {root} (built in {built:.1f} s)")
        _measure(args, root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
