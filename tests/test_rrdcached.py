"""collector.rrd with a real rrdcached holding pending updates.

The daemon runs on a temporary unix socket with a one-hour write delay, so updates sent
through it stay in its memory until somebody flushes them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from collector.rrd import read_series
from tests.rrd_helpers import layout_of, minutes, update_rrd, write_series

RRDCACHED = "/usr/bin/rrdcached"
NOW = 1_767_225_600
HOUR = 3600


@dataclass
class Daemon:
    address: str
    base: Path


@pytest.fixture
def rrdcached(tmp_path: Path) -> Iterator[Daemon]:
    base = (tmp_path / "db").resolve()
    base.mkdir()
    # A short directory: unix socket paths are limited to about 100 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="rrdc"))
    socket = run_dir / "sock"
    command = [RRDCACHED, "-g", "-l", f"unix:{socket}", "-p", str(run_dir / "pid")]
    command += ["-b", str(base), "-B", "-F", "-w", "3600", "-f", "7200"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                _, errors = process.communicate(timeout=5)
                pytest.fail(f"rrdcached did not start: {errors.decode(errors='replace')}")
            time.sleep(0.02)
        yield Daemon(f"unix:{socket}", base)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_pending_updates_are_seen_only_through_the_daemon(rrdcached: Daemon) -> None:
    layout = layout_of("guest")
    written = minutes(NOW - HOUR, NOW - 15 * 60)
    path = write_series(rrdcached.base, "guest", "100", written, {"maxcpu": 2, "cpu": 0.5})
    pending = minutes(NOW - 15 * 60 + 60, NOW)
    rows = [(t, {"maxcpu": 2, "cpu": 0.75}) for t in pending]
    update_rrd(path, layout, rows, daemon=rrdcached.address)

    on_disk = read_series(rrdcached.base, "guest", ["100"], NOW - 20 * 60, NOW)
    flushed = read_series(
        rrdcached.base, "guest", ["100"], NOW - 20 * 60, NOW, daemon=rrdcached.address
    )

    recent = pl.col("time") > NOW - 15 * 60
    assert on_disk.frame.filter(~recent)["cpu"].to_list() == pytest.approx([1.0] * 5)
    assert on_disk.frame.filter(recent)["cpu"].null_count() == 15
    assert [f.kind for f in on_disk.findings] == ["rrd-stale"]
    assert flushed.findings == []
    assert flushed.frame.filter(~recent)["cpu"].to_list() == pytest.approx([1.0] * 5)
    assert flushed.frame.filter(recent)["cpu"].to_list() == pytest.approx([1.5] * 15)


def test_unreachable_daemon_is_a_finding_and_files_are_still_read(tmp_path: Path) -> None:
    times = minutes(NOW - HOUR, NOW)
    write_series(tmp_path, "node", "pve1", times, {"maxcpu": 8, "cpu": 0.25})
    address = f"unix:{tmp_path / 'no-such.sock'}"

    read = read_series(tmp_path, "node", ["pve1"], NOW - 10 * 60, NOW, daemon=address)

    assert [(f.kind, f.where) for f in read.findings] == [("rrd-flush", address)]
    assert read.frame["cpu"].to_list() == pytest.approx([2.0] * 10)
