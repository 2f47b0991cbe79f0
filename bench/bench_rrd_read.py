"""Benchmark collector.rrd.read_series against bare librrd fetch loops: serial, threads, processes.

Run: ``.venv/bin/python -m bench.bench_rrd_read [--guests N] [--minutes N] [--old N]``, or
on an existing RRD root (nothing built, nothing deleted), e.g. the collect benchmark's
real-size simulated cluster::

    .venv/bin/python -m bench.bench_rrd_read --rrd-dir /tmp/pve-rebalancer-bench-cluster/rrd

Otherwise builds ``--guests`` guest files of the PVE 9.0 DS list in a temporary RRD root
(one file made with the ``rrdtool`` command line and copied; only 1-minute archives of 180
rows, so 10,000 files take ~0.5 GB instead of 13 GB; real PVE files hold 8 archives,
~1.3 MB), optionally ``--old`` pre-9 files to join, then times:

1. raw fetch through the ``rrdtool`` binding (tuples of Python floats), nothing else;
2. raw fetch through librrd's ``rrd_fetch_r`` (:mod:`collector.rrd_fast`), its loop over the
   files in C (``collector._rrdbatch``, when built) and through ctypes,
   narrowed to ``--columns``: serially, on ``--threads`` threads (with each thread's own
   CPU time) and on the process pool (one contiguous part per worker);
3. ``read_series`` (fetch + numpy/polars frame + checks) with ``--columns`` on threads and
   on the process pool, with every column (automatic choice), and (``--binding``) with
   librrd forced unavailable.

Each stage runs in a forked child, so its peak RSS is its own (pool workers not counted).
Prints the command line, the load average, and per stage the best wall and CPU times of
``--repeat`` runs after a warm-up (the pool is created then); CPU is the stage process's plus
its pool workers' (from ``/proc``, in clock ticks) and is the steadier figure on a shared
machine.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collector.rrd import read_series, selection_for
from collector.rrd_fast import Chunk, FetchMode, Librrd, Selection
from model.rrd_schema import CONSOLIDATIONS, DERIVE_DS, GUEST_9, GUEST_OLD, HEARTBEAT, STEP

END = 1_767_225_600
HISTORY_ROWS = 180


class _ThreadTimed(Librrd):
    """Records the CPU time each thread spends in :meth:`fetch_chunk`."""

    def __init__(self, name: str, *, batch: bool = True) -> None:
        super().__init__(name, batch=batch)
        self.cpu: dict[int, float] = {}
        self._lock = threading.Lock()

    def fetch_chunk(
        self,
        paths: Sequence[str],
        cf: str,
        start: int,
        end: int,
        resolution: int,
        selection: Selection | None = None,
    ) -> Chunk:
        began = time.thread_time()
        chunk = super().fetch_chunk(paths, cf, start, end, resolution, selection)
        spent = time.thread_time() - began
        with self._lock:
            ident = threading.get_ident()
            self.cpu[ident] = self.cpu.get(ident, 0.0) + spent
        return chunk


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's live children: the pool workers."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in children:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _best(repeat: int, run: Callable[[], str]) -> tuple[float, float, str]:
    """Best wall and best CPU seconds (with the pool workers') of ``repeat`` runs, last result."""
    walls: list[float] = []
    cpus: list[float] = []
    result = run()  # warm-up (page cache, imports, caches, the pool); not timed
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time() + _children_cpu()
        result = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() + _children_cpu() - cpu)
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
        rrd_fast.shutdown_pool()
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


def _librrd_stage(
    name: str,
    paths: list[str],
    window: tuple[int, int],
    mode: FetchMode,
    threads: int,
    selection: Selection,
    batch: bool,
) -> Callable[[], str]:
    timed = _ThreadTimed(name, batch=batch)
    start, end = window

    def run() -> str:
        timed.cpu.clear()  # each run has its own pool threads
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                mock.patch.object(rrd_fast, "default_workers", return_value=threads)
            )
            if not batch:  # the pool's workers too
                stack.enter_context(mock.patch.object(rrd_fast, "_batch_module", return_value=None))
            chunks = timed.fetch_files(
                paths, "AVERAGE", start, end, STEP, selection=selection, mode=mode
            )
        rows = sum(
            result.values.shape[0]
            for chunk in chunks
            for result in chunk.results
            if isinstance(result, rrd_fast.Fetched)
        )
        if mode != "threads":
            return f"{rows} rows in {len(chunks)} chunks"
        per_thread = sorted(timed.cpu.values(), reverse=True)
        cpu = ", ".join(f"{spent:.3f}" for spent in per_thread)
        return f"{rows} rows; last run's CPU per thread: {cpu} s"

    return run


def _read_stage(
    root: Path,
    window: tuple[int, int],
    columns: list[str] | None,
    binding: bool = False,
    processes: bool | None = None,
) -> Callable[[], str]:
    """``read_series``; ``processes`` True/False forces the pool / threads (None: automatic)."""
    start, end = window

    def run() -> str:
        with contextlib.ExitStack() as stack:
            if binding:
                stack.enter_context(mock.patch.object(rrd_fast, "load_librrd", return_value=None))
            if processes is not None:
                threshold = 1 if processes else 10**9
                stack.enter_context(mock.patch.object(rrd_fast, "PROCESS_MIN_FILES", threshold))
            read = read_series(root, "guest", None, start, end, columns=columns)
        return f"{read.frame.height} x {read.frame.width}, {len(read.findings)} findings"

    return run


def _measure(args: argparse.Namespace, root: Path, now: int) -> None:
    start = now - args.minutes * STEP
    window = ["-r", str(STEP), "-s", str(start), "-e", str(now)]
    paths = [str(p) for p in sorted((root / GUEST_9.directory).iterdir())]
    for path in paths:  # warm the page cache so every stage reads from memory
        rrdtool.fetch(path, "AVERAGE", *window)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs; each stage in a forked child: best")
    print(f"of {args.repeat} runs after a warm-up, wall / CPU (with pool workers), peak RSS:")
    stages: list[tuple[str, Callable[[], str]]] = []
    if not args.no_binding_fetch:
        stages.append(("raw fetch, rrdtool binding", _binding_stage(paths, window)))
    columns = [name.strip() for name in args.columns.split(",") if name.strip()]
    library = rrd_fast.load_librrd()
    if library is None:
        print("  librrd cannot be loaded through ctypes: no ctypes figures")
    else:
        selection = selection_for("guest", tuple(columns))
        workers = rrd_fast.process_workers()
        modes: list[tuple[str, FetchMode]] = [
            ("serial", "serial"),
            (f"{args.threads} threads", "threads"),
            (f"{workers} processes", "processes"),
        ]
        loops = [("C loop", True), ("ctypes loop", False)] if rrd_fast._batch_module() else []
        for loop, batch in loops or [("ctypes loop", False)]:
            for label, mode in modes:
                stage = _librrd_stage(
                    library.name, paths, (start, now), mode, args.threads, selection, batch
                )
                stages.append((f"raw fetch, {loop}, {label}", stage))
    listed = ",".join(columns)
    read_window = (start, now)
    stages.append(
        (
            f"read_series, {listed}, threads",
            _read_stage(root, read_window, columns, processes=False),
        )
    )
    stages.append(
        (
            f"read_series, {listed}, processes",
            _read_stage(root, read_window, columns, processes=True),
        )
    )
    stages.append(("read_series, all columns", _read_stage(root, read_window, None)))
    if args.binding:
        stages.append(("read_series, binding path", _read_stage(root, read_window, None, True)))
    for label, run in stages:
        wall, cpu, what, peak = _in_child(args.repeat, run)
        print(f"  {label:<38} {wall:6.3f} s / {cpu:6.3f} s  {peak:5.0f} MiB  {what}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--old", type=int, default=0, help="also write N pre-9 files to join")
    parser.add_argument("--minutes", type=int, default=60, help="window length (1-min rows)")
    parser.add_argument("--keep", type=Path, help="build the files here and keep them")
    parser.add_argument(
        "--rrd-dir",
        type=Path,
        help="read this existing RRD root (its pve-vm-9.0 files); nothing built or deleted",
    )
    parser.add_argument(
        "--now", type=int, help="window end (default: the last update of the first file read)"
    )
    parser.add_argument(
        "--no-binding-fetch", action="store_true", help="skip the raw rrdtool-binding stage"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=rrd_fast.default_workers(), help="ctypes fetch threads"
    )
    parser.add_argument(
        "--columns", default="cpu,mem", help="columns of the narrow fetches and reads"
    )
    parser.add_argument(
        "--binding", action="store_true", help="also time read_series with librrd unavailable"
    )
    parser.add_argument(
        "--old-untouched",
        action="store_true",
        help="date old files before the window, as after an upgrade (they are then skipped)",
    )
    args = parser.parse_args(argv)
    if args.minutes >= HISTORY_ROWS and args.rrd_dir is None:
        parser.error(f"--minutes must be below {HISTORY_ROWS}")

    print("command:", " ".join([sys.executable, "-m", "bench.bench_rrd_read", *sys.argv[1:]]))
    if args.rrd_dir is not None:
        directory = args.rrd_dir / GUEST_9.directory
        first = min(directory.iterdir())
        now = args.now or int(rrdtool.last(str(first)))
        count = sum(1 for _ in directory.iterdir())
        size = first.stat().st_size / 1e6
        print(f"files: {count} in {directory} (first {size:.2f} MB), window end {now}")
        _measure(args, args.rrd_dir, now)
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-rrd-"))
    try:
        began = time.perf_counter()
        if not (root / GUEST_9.directory).exists():
            untouched = END - 2 * args.minutes * STEP if args.old_untouched else None
            _populate(root, args.guests, args.old, args.minutes, untouched)
        built = time.perf_counter() - began
        print(f"files: {args.guests} current + {args.old} old in {root} (built in {built:.1f} s)")
        _measure(args, root, args.now or END)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
