"""Join the /etc/pve layout and the RRD series of a cluster into one :class:`model.Snapshot`.

This is the collector's end product. Placement and configuration come from ``/etc/pve``
(``.vmlist`` is the authority for where a guest lives), usage from the RRD files (reduced to
one characteristic value per series by :mod:`collector.smoothing`), and the live state
(guest running or stopped) from the status dump when one is given, else from the HA
manager's service state, else from whether the guest's RRD series has recent known values.

Nothing here raises on bad content: every defect becomes a finding in ``snapshot.issues``
and the rest of the cluster is still collected. Only a missing ``/etc/pve`` root raises
(:class:`collector.pvecfg.tree.PveTreeNotFoundError`): then nothing usable exists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from collector.pvecfg.guestcache import GuestConfigCache
from collector.pvecfg.guestconf import GuestConfig
from collector.pvecfg.ha_status import ha_config
from collector.pvecfg.tree import PveTree, read_tree
from collector.rrd import DEFAULT_RRD_ROOT, read_series
from collector.smoothing import View, characteristic
from collector.status_dump import parse_status_dump
from model import Finding, Guest, Node, Snapshot, Storage
from model.rrd_schema import Kind

MIB = 2**20
FORECAST_HISTORY_S = 7 * 86400
FORECAST_RESOLUTION_S = 1800
HA_RUNNING_STATES = frozenset({"started", "migrate", "relocate", "request_start_balance"})


@dataclass(frozen=True, slots=True)
class CollectOptions:
    """How to turn series into the snapshot's usage numbers."""

    window_s: int = 3600
    usage: View = "ewma"
    half_life_s: float = 600
    daemon: str | None = None
    """rrdcached address (``unix:/var/run/rrdcached.sock``) to flush before reading."""
    now: int | None = None
    """Reference time (unix seconds); default: the wall clock."""
    status_dump: Path | None = None
    """A file holding the live status dump, for guest status and names."""


def build_snapshot(
    root: Path,
    rrd_root: Path = DEFAULT_RRD_ROOT,
    options: CollectOptions | None = None,
    *,
    cache: GuestConfigCache | None = None,
    history: HistoryCache | None = None,
) -> Snapshot:
    """Collect the cluster under ``root`` (an /etc/pve tree) and ``rrd_root`` (RRD files).

    A service passes the same ``cache`` every round, so unchanged config files are only
    stat()ed, not parsed again, and the same ``history``, so the forecast view's days of
    history are read only every ``history.max_age_s`` seconds.
    """
    options = options or CollectOptions()
    now = int(time.time()) if options.now is None else options.now
    tree = read_tree(root, cache=cache)
    findings: list[Finding] = list(tree.findings)

    status = _guest_status_from_dump(options.status_dump, findings)
    node_columns = ["cpu", "memused", "maxcpu", "memtotal"]
    node_usage = _usage(rrd_root, "node", node_columns, now, options, findings, history)
    guest_usage = _usage(rrd_root, "guest", ["cpu", "mem"], now, options, findings, history)

    node_names = _node_names(tree)
    nodes = [_node(name, tree, node_usage, findings) for name in node_names]
    node_cores = {n.name: n.maxcpu for n in nodes}
    guests = [
        _guest(vmid, tree, guest_usage, status, node_cores, findings)
        for vmid in sorted(tree.vmlist)
    ]
    _cross_check(tree, guest_usage, findings)
    return Snapshot(
        timestamp=now,
        nodes=nodes,
        guests=guests,
        rules=list(tree.rules),
        crs=tree.crs,
        issues=findings,
        usage_view=options.usage,
        cluster=tree.members.cluster_name if tree.members else None,
        storages=_storages(rrd_root, now, options, findings),
    )


@dataclass(slots=True)
class _Usage:
    """Per id: the characteristic values of the chosen view and the newest values."""

    view: dict[str, dict[str, Any]]
    last: dict[str, dict[str, Any]]
    found: set[str]


@dataclass
class HistoryCache:
    """The forecast view's long-history results, kept between rounds of a service.

    The forecast reads days of 30-min rows; that history changes once per 30 minutes, so a
    service re-reads it only every ``max_age_s`` seconds while every round still reads its
    short window for the newest values.
    """

    max_age_s: float = 900.0
    entries: dict[str, tuple[int, dict[str, dict[str, Any]], list[Finding]]] = field(
        default_factory=dict
    )
    long_reads: int = 0
    """How many long-history reads were made (for tests and logs)."""


def _usage(
    rrd_root: Path,
    kind: Kind,
    columns: list[str],
    now: int,
    options: CollectOptions,
    findings: list[Finding],
    history: HistoryCache | None = None,
) -> _Usage:
    read = read_series(
        rrd_root,
        kind,
        None,
        now - options.window_s,
        now,
        cf="MAX" if options.usage == "max" else "AVERAGE",
        daemon=options.daemon,
        now=now,
        columns=columns,
    )
    findings.extend(read.findings)
    last = _rows(characteristic(read.frame, columns, "last"))
    if options.usage == "forecast":
        view = _forecast_rows(rrd_root, kind, columns, now, options, findings, history)
    else:
        view = _rows(
            characteristic(read.frame, columns, options.usage, half_life_s=options.half_life_s)
        )
    return _Usage(view, last, read.found_ids)


def _forecast_rows(
    rrd_root: Path,
    kind: Kind,
    columns: list[str],
    now: int,
    options: CollectOptions,
    findings: list[Finding],
    history: HistoryCache | None,
) -> dict[str, dict[str, Any]]:
    cached = history.entries.get(kind) if history is not None else None
    if history is not None and cached is not None and now - cached[0] < history.max_age_s:
        findings.extend(cached[2])
        return cached[1]
    read = read_series(
        rrd_root,
        kind,
        None,
        now - FORECAST_HISTORY_S,
        now,
        resolution=FORECAST_RESOLUTION_S,
        daemon=options.daemon,
        now=now,
        columns=columns,
    )
    own: list[Finding] = []  # file problems are already reported by the round's own read
    view = characteristic(read.frame, columns, "forecast", half_life_s=options.half_life_s)
    fell_back = view.filter(pl.col("fallback"))["id"].to_list()
    if fell_back:
        own.append(
            Finding(
                "forecast-fallback",
                f"{kind} {_preview(fell_back)}",
                f"{len(fell_back)} {kind} series have less than two days of history; "
                "their usage is the EWMA instead of the forecast",
                "info",
            )
        )
    findings.extend(own)
    rows = _rows(view)
    if history is not None:
        history.entries[kind] = (now, rows, own)
        history.long_reads += 1
    return rows


def _rows(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in frame.iter_rows(named=True)}


def _preview(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


def _node_names(tree: PveTree) -> list[str]:
    names: set[str] = set(tree.members.nodes) if tree.members else set()
    names |= {entry.node for entry in tree.vmlist.values()}
    nodes_dir = tree.root / "nodes"
    if nodes_dir.is_dir():
        names |= {p.name for p in nodes_dir.iterdir() if p.is_dir()}
    return sorted(names)


def _node(name: str, tree: PveTree, usage: _Usage, findings: list[Finding]) -> Node:
    member = tree.members.nodes.get(name) if tree.members else None
    ha_state = tree.manager_status.node_status.get(name) if tree.manager_status else None
    online = member.online if member is not None else False
    if member is None:
        findings.append(
            Finding("node-not-member", f"node {name}", "not in .members: treated as offline")
        )
    view = usage.view.get(name, {})
    last = usage.last.get(name, {})
    maxcpu, maxmem = last.get("maxcpu"), last.get("memtotal")
    if name not in usage.found or maxcpu is None or maxmem is None:
        findings.append(
            Finding(
                "node-capacity-unknown",
                f"node {name}",
                "no known maxcpu/memtotal in its RRD data: it cannot receive guests",
                "error",
            )
        )
    return Node(
        name=name,
        online=online,
        maintenance=ha_state == "maintenance",
        maxcpu=float(maxcpu or 0.0),
        maxmem=float(maxmem or 0.0),
        cpu=float(view.get("cpu") or 0.0),
        mem=float(view.get("memused") or 0.0),
        ha_state=ha_state,
        cpu_last=last.get("cpu"),
        mem_last=last.get("memused"),
    )


def _guest(
    vmid: int,
    tree: PveTree,
    usage: _Usage,
    dump_status: dict[str, dict[str, Any]],
    node_cores: dict[str, float],
    findings: list[Finding],
) -> Guest:
    entry = tree.vmlist[vmid]
    sid = f"{'vm' if entry.type == 'qemu' else 'ct'}:{vmid}"
    config: GuestConfig | None = tree.guests.get(vmid)
    resource = tree.ha_resources.get(sid)
    service = tree.manager_status.service_status.get(sid) if tree.manager_status else None
    ha = ha_config(resource, service)
    view = usage.view.get(str(vmid), {})
    dumped = dump_status.get(str(vmid), {})
    cpu, mem = view.get("cpu"), view.get("mem")
    if dumped.get("status"):
        status = str(dumped["status"])
    elif service is not None:
        status = "running" if service.state in HA_RUNNING_STATES else "stopped"
    else:
        status = "running" if mem is not None else "stopped"
    if config is None:  # read_tree reported it (vmlist-without-config)
        maxcpu, maxmem, name, tags = node_cores.get(entry.node, 0.0), 512 * MIB, "", []
    else:
        maxcpu = config.maxcpu_on(node_cores.get(entry.node, 0.0))
        maxmem, name, tags = config.maxmem, config.name, list(config.tags)
    return Guest(
        vmid=vmid,
        sid=sid,
        type=entry.type,
        name=str(dumped.get("name") or name),
        node=entry.node,
        status=status,
        ha=ha,
        maxcpu=float(maxcpu),
        maxmem=float(maxmem),
        cpu=None if cpu is None else float(cpu),
        mem=None if mem is None else float(mem),
        tags=tags,
        template=bool(config.template) if config else False,
        pool=config.pool if config else None,
        maxdisk=float(config.disk_bytes) if config and config.disk_bytes else None,
        local_disk=bool(config and (tree.has_local_disk(config) or config.local_devices)),
    )


def _cross_check(tree: PveTree, usage: _Usage, findings: list[Finding]) -> None:
    known = {str(vmid) for vmid in tree.vmlist}
    missing = sorted(known - usage.found, key=int)
    orphans = sorted(usage.found - known, key=int)
    for vmid in missing:
        entry = tree.vmlist[int(vmid)]
        sid = f"{'vm' if entry.type == 'qemu' else 'ct'}:{vmid}"
        findings.append(
            Finding("vmlist-without-rrd", sid, "in .vmlist but no RRD file: usage unknown")
        )
    if orphans:
        findings.append(
            Finding(
                "rrd-without-vmlist",
                f"guest {_preview(orphans)}",
                f"{len(orphans)} RRD files of guests not in .vmlist (deleted guests?): ignored",
                "info",
            )
        )


def _guest_status_from_dump(
    path: Path | None, findings: list[Finding]
) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError as error:
        findings.append(Finding("dump-unreadable", str(path), str(error), "error"))
        return {}
    dump = parse_status_dump(text, str(path))
    findings.extend(dump.findings)
    return _rows(dump.guests.select("id", "name", "status"))


def _storages(
    rrd_root: Path, now: int, options: CollectOptions, findings: list[Finding]
) -> list[Storage]:
    read = read_series(rrd_root, "storage", None, now - 600, now, now=now)
    findings.extend(f for f in read.findings if f.kind != "rrd-all-unknown")
    last = characteristic(
        read.frame.select("id", "time", "total", "used"), ["total", "used"], "last"
    )
    storages = []
    for row in last.iter_rows(named=True):
        node, _, storage = row["id"].partition("/")
        storages.append(Storage(node, storage, row["total"], row["used"]))
    return storages
