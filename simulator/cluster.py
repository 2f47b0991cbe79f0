"""The evolving simulated cluster: write its history, then advance time and apply changes.

``simulate_cluster`` builds the seeded spec, writes ``out/etc/pve``, ``out/rrd`` (the
equivalent of /var/lib/rrdcached/db) and ``out/status.dump``, and ends at ``SIM_NOW``
(2026-01-01T00:00:00Z) whatever the seed. ``SimulatedCluster`` then moves forward in 60-s
steps, appending a point to every RRD file, and applies migrations (which take
memory / 1 GiB/s, during which the HA state is ``migrate``, ``relocate`` for containers),
guest starts/stops and node maintenance. Placement and run state over time are an initial
array plus a short event log, so any window can be regenerated exactly for checking.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from model.rrd_schema import (
    GUEST_9,
    GUEST_OLD,
    NODE_9,
    NODE_OLD,
    STEP,
    STORAGE_9,
    STORAGE_OLD,
    RrdLayout,
)
from simulator import etc_writer
from simulator.dump_writer import GuestStatus, render_dump
from simulator.model import (
    DIR_STORAGE,
    GIB,
    LOCAL_STORAGE,
    SHARED_STORAGE,
    SIM_NOW,
    ClusterSpec,
    build_cluster,
)
from simulator.rrd_writer import create_template, rrd_path, write_points
from simulator.usage import (
    DAY,
    STORAGE_TOTALS,
    BoolArray,
    FloatArray,
    GuestSeries,
    IntArray,
    UsageParams,
    build_usage_params,
    guest_series,
    node_series,
    node_sums,
    storage_series,
)

MIGRATION_BYTES_PER_SECOND = GIB
POINTS_PER_CHUNK = 400_000
"""Guests per worker task = this / points per guest: bounds each task's memory."""
STORAGES = (DIR_STORAGE, LOCAL_STORAGE, SHARED_STORAGE)

_Task = TypeVar("_Task")
_Result = TypeVar("_Result")


@dataclass(frozen=True, slots=True)
class Migration:
    vmid: int
    sid: str
    source: str
    target: str
    started: int
    done: int


@dataclass(frozen=True, slots=True)
class _Event:
    time: int
    guest: int
    field: Literal["node", "running"]
    value: int


@dataclass(frozen=True, slots=True)
class _GuestChunk:
    """One worker task: write ``times`` for a slice of guests, return their node sums."""

    seed: int
    params: UsageParams
    times: IntArray
    node_index: IntArray
    """[guests] (placement fixed over the window) or [guests, times]."""
    running: BoolArray
    node_cores: FloatArray
    paths: list[Path]
    layout: RrdLayout
    template: Path | None


def _write_guest_chunk(task: _GuestChunk) -> tuple[FloatArray, FloatArray]:
    shape = (len(task.params), len(task.times))
    node_index = np.broadcast_to(
        task.node_index if task.node_index.ndim == 2 else task.node_index[:, None], shape
    )
    running = np.broadcast_to(
        task.running if task.running.ndim == 2 else task.running[:, None], shape
    )
    series = guest_series(task.seed, task.params, task.times, node_index, running, task.node_cores)
    write_points(task.paths, task.layout, task.times, series.columns, task.template)
    count = len(task.node_cores)
    return node_sums(node_index, series.cores, count), node_sums(
        node_index, series.mem_bytes, count
    )


def _run(
    function: Callable[[_Task], _Result], tasks: Sequence[_Task], workers: int
) -> list[_Result]:
    if workers <= 1 or len(tasks) <= 1:
        return [function(task) for task in tasks]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(function, tasks))


def minute_times(first: int, count: int) -> IntArray:
    return first + STEP * np.arange(count, dtype=np.int64)


class SimulatedCluster:
    """A synthetic cluster on disk whose state can move forward in time."""

    def __init__(
        self,
        out: Path,
        spec: ClusterSpec,
        *,
        now: int = SIM_NOW,
        legacy_files: bool = False,
        workers: int | None = None,
    ) -> None:
        self.out = out
        self.spec = spec
        self.now = now
        self.legacy_files = legacy_files
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self.params, self.node_params = build_usage_params(spec)
        self.node_names = [n.name for n in spec.nodes]
        self._node_of = spec.node_index()
        self._vmid_index = {g.vmid: i for i, g in enumerate(spec.guests)}
        self.initial_node = np.array([self._node_of[g.node] for g in spec.guests], dtype=np.int64)
        self.initial_running = np.array([g.running for g in spec.guests], dtype=bool)
        self.events: list[_Event] = []
        self.node_status = dict.fromkeys(self.node_names, "online")
        self.migrations: dict[int, Migration] = {}
        self.vmlist_version = 1
        self.started_at = SIM_NOW - 3 * DAY + (self.params.vmid * 617) % DAY
        self._storage_keys, self._storage_totals, self._storage_used = self._storage_layout()

    @property
    def etc_root(self) -> Path:
        return self.out / "etc" / "pve"

    @property
    def rrd_root(self) -> Path:
        return self.out / "rrd"

    @property
    def dump_path(self) -> Path:
        return self.out / "status.dump"

    @property
    def node_cores(self) -> FloatArray:
        return self.node_params.maxcpu

    def guest_index(self, vmid: int) -> int:
        try:
            return self._vmid_index[vmid]
        except KeyError:
            raise KeyError(f"no guest {vmid} in the simulated cluster") from None

    # ----- state over time -------------------------------------------------------------

    def state_at(self, guests: IntArray, times: IntArray) -> tuple[IntArray, BoolArray]:
        """Node index and run state of ``guests`` at ``times``: two [guests, times] arrays."""
        shape = (len(guests), len(times))
        node = np.array(np.broadcast_to(self.initial_node[guests][:, None], shape))
        running = np.array(np.broadcast_to(self.initial_running[guests][:, None], shape))
        position = {int(g): row for row, g in enumerate(guests)}
        for event in self.events:
            row = position.get(event.guest)
            if row is None:
                continue
            after = times >= event.time
            if event.field == "node":
                node[row, after] = event.value
            else:
                running[row, after] = bool(event.value)
        return node, running

    def guest_series(self, times: IntArray, guests: IntArray | None = None) -> GuestSeries:
        """What the generator says for ``guests`` (indices, default all) at ``times``."""
        index = np.arange(len(self.spec.guests)) if guests is None else guests
        node, running = self.state_at(index, times)
        return guest_series(
            self.spec.seed, self.params.take(index), times, node, running, self.node_cores
        )

    def node_series(self, times: IntArray) -> dict[str, FloatArray]:
        """Node data sources at ``times``: host overhead plus running guests' sums."""
        cores, mem = self._node_sums(times)
        return node_series(self.spec.seed, self.node_params, times, cores, mem)

    def storage_series(self, times: IntArray) -> dict[str, FloatArray]:
        """Rows follow ``storage_keys``: (node, storage) pairs."""
        return storage_series(self._storage_totals, self._storage_used, times)

    @property
    def storage_keys(self) -> list[tuple[str, str]]:
        return list(self._storage_keys)

    def _node_sums(self, times: IntArray) -> tuple[FloatArray, FloatArray]:
        count = len(self.node_names)
        cores = np.zeros((count, len(times)))
        mem = np.zeros((count, len(times)))
        for chunk in self._guest_chunks(len(times)):
            node, _ = self.state_at(chunk, times)
            series = self.guest_series(times, chunk)
            cores += node_sums(node, series.cores, count)
            mem += node_sums(node, series.mem_bytes, count)
        return cores, mem

    def _guest_chunks(self, points: int) -> list[IntArray]:
        size = max(1, POINTS_PER_CHUNK // max(points, 1))
        total = len(self.spec.guests)
        return [np.arange(s, min(s + size, total)) for s in range(0, total, size)]

    def _storage_layout(self) -> tuple[list[tuple[str, str]], FloatArray, FloatArray]:
        local_used = dict.fromkeys(self.node_names, 0.0)
        shared_used = 0.0
        for guest in self.spec.guests:
            for disk in guest.disks:
                if disk.storage == LOCAL_STORAGE:
                    local_used[guest.node] += 0.5 * disk.size_gib * GIB
                else:
                    shared_used += 0.5 * disk.size_gib * GIB
        keys, totals, used = [], [], []
        for node in self.node_names:
            for storage in STORAGES:
                keys.append((node, storage))
                totals.append(STORAGE_TOTALS[storage])
                if storage == DIR_STORAGE:
                    used.append(0.1 * STORAGE_TOTALS[storage])
                elif storage == LOCAL_STORAGE:
                    used.append(min(local_used[node], 0.9 * STORAGE_TOTALS[storage]))
                else:
                    used.append(min(shared_used, 0.9 * STORAGE_TOTALS[storage]))
        return keys, np.array(totals, dtype=np.float64), np.array(used, dtype=np.float64)

    # ----- writing ---------------------------------------------------------------------

    def write_initial(self, days: float) -> None:
        """Write /etc/pve, ``days`` of 60-s RRD history ending at ``now``, and the dump."""
        for path in (self.etc_root, self.rrd_root):
            if path.exists() and any(path.iterdir()):
                raise FileExistsError(f"{path} is not empty: simulate into a fresh directory")
        etc_writer.write_etc_tree(self.etc_root, self.spec, self.vmlist_version)
        self.write_manager_status()
        steps = max(1, round(days * 1440))
        current = minute_times(self.now - steps * STEP, steps + 1)
        templates = self.out / ".rrd-templates"
        try:
            self._write_window(current, (GUEST_9, NODE_9, STORAGE_9), templates)
            if self.legacy_files:
                older = current - steps * STEP - STEP
                self._write_window(older, (GUEST_OLD, NODE_OLD, STORAGE_OLD), templates)
        finally:
            shutil.rmtree(templates, ignore_errors=True)
        self.write_dump()

    def _write_window(
        self,
        times: IntArray,
        layouts: tuple[RrdLayout, RrdLayout, RrdLayout],
        templates: Path | None,
    ) -> None:
        guest_layout, node_layout, storage_layout = layouts

        def template(layout: RrdLayout) -> Path | None:
            if templates is None:
                return None
            return create_template(templates / layout.directory, layout, int(times[0]))

        guest_template = template(guest_layout)
        static = not any(e.time <= times[-1] for e in self.events)
        tasks = []
        for chunk in self._guest_chunks(len(times)):
            if static:
                node, running = self.initial_node[chunk], self.initial_running[chunk]
            else:
                node, running = self.state_at(chunk, times)
            paths = [
                rrd_path(self.rrd_root, guest_layout, str(self.spec.guests[i].vmid)) for i in chunk
            ]
            tasks.append(
                _GuestChunk(
                    self.spec.seed,
                    self.params.take(chunk),
                    times,
                    node,
                    running,
                    self.node_cores,
                    paths,
                    guest_layout,
                    guest_template,
                )
            )
        count = len(self.node_names)
        cores = np.zeros((count, len(times)))
        mem = np.zeros((count, len(times)))
        for chunk_cores, chunk_mem in _run(_write_guest_chunk, tasks, self.workers):
            cores += chunk_cores
            mem += chunk_mem
        nodes = node_series(self.spec.seed, self.node_params, times, cores, mem)
        node_paths = [rrd_path(self.rrd_root, node_layout, name) for name in self.node_names]
        write_points(node_paths, node_layout, times, nodes, template(node_layout))
        storage_paths = [
            rrd_path(self.rrd_root, storage_layout, f"{node}/{storage}")
            for node, storage in self._storage_keys
        ]
        write_points(
            storage_paths, storage_layout, times, self.storage_series(times),
            template(storage_layout),
        )  # fmt: skip

    def write_dump(self) -> None:
        """The live status dump at ``now``, reflecting starts/stops/migrations done so far."""
        now_only = np.array([self.now], dtype=np.int64)
        everyone = np.arange(len(self.spec.guests))
        node, running = self.state_at(everyone, now_only + 1)
        series = guest_series(self.spec.seed, self.params, now_only, node, running, self.node_cores)
        count = len(self.node_names)
        nodes = node_series(
            self.spec.seed, self.node_params, now_only,
            node_sums(node, series.cores, count), node_sums(node, series.mem_bytes, count),
        )  # fmt: skip
        boot = SIM_NOW - 40 * DAY
        node_rows = [(n.name, self.now - boot - 3571 * n.nodeid) for n in self.spec.nodes]
        statuses = [
            GuestStatus(
                g.vmid,
                g.name,
                "running" if running[i, 0] else "stopped",
                g.template,
                int(self.now - self.started_at[i]) if running[i, 0] else 0,
            )
            for i, g in enumerate(self.spec.guests)
        ]
        storage = self.storage_series(now_only)
        storage_rows = [
            (node_name, name, float(storage["total"][row, 0]), float(storage["used"][row, 0]))
            for row, (node_name, name) in enumerate(self._storage_keys)
        ]
        text = render_dump(
            self.now,
            node_rows,
            {k: v[:, 0] for k, v in nodes.items()},
            statuses,
            {k: v[:, 0] for k, v in series.columns.items()},
            storage_rows,
            legacy_keys=self.legacy_files,
        )
        temporary = self.dump_path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(self.dump_path)

    def write_manager_status(self) -> None:
        overrides = {}
        for migration in self.migrations.values():
            guest = self.spec.guests[self.guest_index(migration.vmid)]
            overrides[migration.sid] = {
                "node": migration.source,
                "state": "migrate" if guest.kind == "qemu" else "relocate",
                "target": migration.target,
            }
        text = etc_writer.render_manager_status(self.spec, self.node_status, overrides, self.now)
        etc_writer.write_text(self.etc_root / "ha" / "manager_status", text)

    def _write_vmlist(self) -> None:
        self.vmlist_version += 1
        text = etc_writer.render_vmlist(self.spec, self.vmlist_version)
        etc_writer.write_text(self.etc_root / ".vmlist", text)

    # ----- evolution -------------------------------------------------------------------

    def advance(self, seconds: int) -> IntArray:
        """Move ``seconds`` forward (whole minutes), appending a point per minute everywhere.

        Returns the timestamps written. Migrations whose time is up are completed.
        """
        steps = int(seconds) // STEP
        if steps < 1:
            raise ValueError(f"advance needs at least {STEP} s, got {seconds}")
        times = minute_times(self.now + STEP, steps)
        self._write_window(times, (GUEST_9, NODE_9, STORAGE_9), None)
        self.now = int(times[-1])
        self._complete_migrations()
        self.write_manager_status()
        self.write_dump()
        return times

    def migrate(self, vmid: int, target: str) -> Migration:
        """Start moving a guest; it takes memory / 1 GiB/s (a stopped guest moves at once)."""
        index = self.guest_index(vmid)
        guest = self.spec.guests[index]
        if target not in self._node_of:
            raise ValueError(f"{guest.sid}: unknown target node {target!r}")
        if target == guest.node:
            raise ValueError(f"{guest.sid} already runs on {target}")
        if vmid in self.migrations:
            raise ValueError(f"{guest.sid} is already moving to {self.migrations[vmid].target}")
        duration = 0
        if guest.running:
            mem = self.guest_series(np.array([self.now]), np.array([index])).mem_bytes[0, 0]
            duration = max(1, math.ceil(mem / MIGRATION_BYTES_PER_SECOND))
        migration = Migration(
            vmid, guest.sid, guest.node, target, self.now, self.now + duration + 1
        )
        self.events.append(_Event(migration.done, index, "node", self._node_of[target]))
        self.migrations[vmid] = migration
        if duration == 0:
            self._finish(migration)
        self.write_manager_status()
        return migration

    def start_guest(self, vmid: int) -> None:
        self._set_running(vmid, True)

    def stop_guest(self, vmid: int) -> None:
        self._set_running(vmid, False)

    def set_maintenance(self, node: str, enabled: bool) -> None:
        if node not in self._node_of:
            raise ValueError(f"unknown node {node!r}")
        self.node_status[node] = "maintenance" if enabled else "online"
        self.write_manager_status()

    def _set_running(self, vmid: int, running: bool) -> None:
        index = self.guest_index(vmid)
        guest = self.spec.guests[index]
        if guest.template:
            raise ValueError(f"{guest.sid} is a template and cannot run")
        if vmid in self.migrations:
            raise ValueError(f"{guest.sid} is migrating; wait for it to finish")
        if guest.running == running:
            return
        self.events.append(_Event(self.now + 1, index, "running", int(running)))
        guest.running = running
        if running:
            self.started_at[index] = self.now
        if guest.ha_state is not None:
            guest.ha_state = "started" if running else "stopped"
            etc_writer.write_text(
                self.etc_root / "ha" / "resources.cfg", etc_writer.render_resources(self.spec)
            )
        self.write_manager_status()
        self.write_dump()

    def _complete_migrations(self) -> None:
        for migration in sorted(self.migrations.values(), key=lambda m: (m.done, m.vmid)):
            if migration.done <= self.now:
                self._finish(migration)

    def _finish(self, migration: Migration) -> None:
        guest = self.spec.guests[self.guest_index(migration.vmid)]
        etc_writer.guest_config_path(self.etc_root, guest, guest.node).unlink(missing_ok=True)
        guest.node = migration.target
        etc_writer.write_guest_config(self.etc_root, guest, self.spec.seed)
        del self.migrations[migration.vmid]
        self._write_vmlist()


def simulate_cluster(
    out: Path,
    nodes: int,
    guests: int,
    days: float,
    seed: int,
    *,
    legacy_files: bool = False,
    legacy_groups: bool = False,
    workers: int | None = None,
) -> SimulatedCluster:
    """Write a fresh synthetic cluster under ``out`` ending at ``SIM_NOW``; return it live."""
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    spec = build_cluster(nodes, guests, seed, legacy_groups=legacy_groups)
    cluster = SimulatedCluster(Path(out), spec, legacy_files=legacy_files, workers=workers)
    cluster.write_initial(days)
    return cluster


__all__ = ["SIM_NOW", "Migration", "SimulatedCluster", "simulate_cluster"]
