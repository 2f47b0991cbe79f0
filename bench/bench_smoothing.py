"""Benchmark of collector.smoothing on synthetic usage frames.

Run: ``.venv/bin/python -m bench.bench_smoothing`` (from the repository root). Prints the
command, then per scenario the frame size, the minimum and median wall time of several
runs, the minimum CPU time (user + system, all threads: meaningful when other jobs share
the cores) and the process's peak RSS. Scenarios: every view over 10,000 ids x 60
one-minute points x 4 columns (the EWMA target is well under 100 ms), ``ewma_frame`` on the
same frame, and the Holt-Winters forecast over 10,000 ids x 7 days of 30-minute points (336
per id) for one and two columns. Frames carry 2 % nulls and come in shuffled id blocks, as a
reader would hand them over."""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import polars as pl

from collector.smoothing import VIEWS, characteristic, ewma_frame

COLUMNS = ("cpu", "mem", "netin", "netout")


def usage_frame(n_ids: int, n_points: int, step: int, n_columns: int, seed: int) -> pl.DataFrame:
    """``n_ids`` blocks of ``n_points`` rows, a daily pattern plus noise, 2 % nulls."""
    rng = np.random.default_rng(seed)
    size = n_ids * n_points
    steps = np.tile(np.arange(n_points), n_ids)
    daily = 1.0 + 0.5 * np.sin(2 * np.pi * steps * step / 86400)
    columns = {}
    for name in COLUMNS[:n_columns]:
        values = daily * rng.uniform(0.5, 2.0, size=size)
        values[rng.random(size) < 0.02] = np.nan
        columns[name] = values
    order = rng.permutation(n_ids)
    names = np.array([f"{100 + i}" for i in range(n_ids)])
    return pl.DataFrame(
        {
            "id": np.repeat(names[order], n_points),
            "time": 1_700_000_000 + step * steps,
            **columns,
        }
    ).with_columns(pl.col(name).fill_nan(None) for name in columns)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(label: str, rows: int, runs: int, action: Callable[[], object]) -> None:
    """Prints min/median wall time and min CPU time (user+system, all threads) of ``runs``."""
    wall = []
    cpu = []
    for _ in range(runs):
        cpu_start = time.process_time()
        start = time.perf_counter()
        action()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    print(
        f"{label:<26} rows={rows:>9,}  wall min={min(wall) * 1e3:7.1f} ms"
        f" median={statistics.median(wall) * 1e3:7.1f} ms  cpu min={min(cpu) * 1e3:7.1f} ms"
        f"  peak_rss={peak_rss_mib():6.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ids", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print("command:", " ".join([sys.executable, "-m", "bench.bench_smoothing", *sys.argv[1:]]))

    minutes = usage_frame(args.ids, 60, 60, 4, seed=1)
    columns = list(COLUMNS)
    for view in VIEWS:
        measure(
            f"{view} {args.ids}x60x4",
            minutes.height,
            args.runs,
            lambda view=view: characteristic(minutes, columns, view),  # type: ignore[misc]
        )
    measure(
        f"ewma_frame {args.ids}x60x4",
        minutes.height,
        args.runs,
        lambda: ewma_frame(minutes, columns, 600),
    )

    week = usage_frame(args.ids, 7 * 48, 1800, 2, seed=2)
    for n_columns in (1, 2):
        measure(
            f"forecast {args.ids}x336x{n_columns}",
            week.height,
            max(1, args.runs // 2),
            lambda n=n_columns: characteristic(week, columns[:n], "forecast"),  # type: ignore[misc]
        )
    result = characteristic(week, columns[:2], "forecast")
    print(f"forecast fallbacks: {int(result['fallback'].sum())} of {result.height} ids")


if __name__ == "__main__":
    main()
