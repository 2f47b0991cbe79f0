"""Benchmark collector.status_dump on a generated dump (default: 10,000 guests on 40 nodes).

Run: ``.venv/bin/python -m bench.bench_status_dump [--guests N] [--nodes N] [--repeat N]``.
Prints the command line, the dump size, wall and CPU times of repeated parses and the peak
RSS, for two dumps: the generated one, every line well formed (what pvestatd writes: read by
the C scanner), and the same with one line damaged (the whole dump then goes to the polars
parser, as does every dump when the extension is not built).
The target is a 10,000-guest dump parsed in at most 50 ms.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time

from bench.calibration import python_speed_ms
from collector.statusdump import DumpRead, parse_status_dump

CTIME = 1_767_225_600


def generate_dump(guests: int, nodes: int, seed: int = 1) -> str:
    """A dump mixing both key generations, stopped guests and storages, like a real one."""
    rng = random.Random(seed)
    lines: list[str] = []
    for index in range(nodes):
        psi = ":".join(f"{rng.random():.2f}" for _ in range(5))
        prefix = "pve-node-9.0" if index % 10 else "pve2-node"
        fields = [
            "86400",
            "c",
            str(CTIME),
            f"{rng.uniform(0, 20):.2f}",
            "64",
            f"{rng.random():.4f}",
            "0.01",
            str(256 * 2**30),
            str(rng.randrange(2**30, 200 * 2**30)),
            "0",
            "0",
            str(2**40),
            str(2**38),
            str(rng.randrange(10**9)),
            str(rng.randrange(10**9)),
        ]
        if prefix == "pve-node-9.0":
            fields += [str(100 * 2**30), "0", psi]
        lines.append(f"{prefix}/node{index}:" + ":".join(fields))
        lines.append(f"pve-storage-9.0/node{index}/local:{CTIME}:{2**40}:{2**39}")
    for index in range(guests):
        vmid = 100 + index
        running = rng.random() < 0.8
        prefix = "pve-vm-9.0" if index % 10 else "pve2.3-vm"
        cpu = f"{rng.random():.4f}" if running else "U"
        mem = str(rng.randrange(2**28, 2**33)) if running else "U"
        fields = [
            str(rng.randrange(10**6)) if running else "U",
            f"guest-{vmid}",
            "running" if running else "stopped",
            "0",
            str(CTIME - rng.randrange(10)),
            str(rng.choice([1, 2, 4, 8])),
            cpu,
            str(2**33),
            mem,
            str(2**35),
            "0",
            str(rng.randrange(10**9)),
            str(rng.randrange(10**9)),
            str(rng.randrange(10**9)),
            str(rng.randrange(10**9)),
        ]
        if prefix == "pve-vm-9.0":
            fields += [mem, "0.1", "0", "0.2", "0", "0", "0"]
        lines.append(f"{prefix}/{vmid}:" + ":".join(fields))
    rng.shuffle(lines)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)

    print("command:", " ".join([sys.executable, "-m", "bench.bench_status_dump", *sys.argv[1:]]))
    text = generate_dump(args.guests, args.nodes)
    print(f"dump: {len(text.splitlines())} lines, {len(text) / 1e6:.2f} MB")
    lines = text.splitlines(keepends=True)
    lines[len(lines) // 2] = "pve-vm-9.0/not-a-vmid:" + lines[len(lines) // 2].split(":", 1)[1]
    damaged = "".join(lines)
    for label, dump in (("well-formed dump", text), ("one line damaged", damaged)):
        print(f"-- {label}")
        _time_parses(dump, args.repeat)


def _time_parses(text: str, repeat: int) -> None:
    parse_status_dump(text)  # warm-up: polars thread pool and expression caches
    speed_before = min(python_speed_ms() for _ in range(5))
    walls: list[float] = []
    cpus: list[float] = []
    read: DumpRead | None = None
    for _ in range(repeat):
        began, cpu_began = time.perf_counter(), time.process_time()
        read = parse_status_dump(text)
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu_began)
    assert read is not None
    print(
        f"frames: {read.nodes.height} nodes, {read.guests.height} guests, "
        f"{read.storages.height} storages, {len(read.findings)} findings"
    )
    fastest, median, slowest = (1e3 * x for x in (min(walls), statistics.median(walls), max(walls)))
    print(
        f"parse wall: min {fastest:.1f} ms, median {median:.1f} ms, max {slowest:.1f} ms "
        f"over {repeat} runs"
    )
    print(f"parse process CPU (all polars threads): median {statistics.median(cpus) * 1e3:.1f} ms")
    speed_after = min(python_speed_ms() for _ in range(5))
    print(
        f"python speed calibration (bench.calibration): {speed_before:.2f} ms before, "
        f"{speed_after:.2f} ms after"
    )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {peak_kib / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
