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

from collector.gc_pause import gc_paused
from collector.pvecfg.guestcache import GuestConfigCache
from collector.pvecfg.guestconf import GuestConfig
from collector.pvecfg.ha_status import ServiceStatus, ha_config
from collector.pvecfg.tree import PveTree, read_tree, require_root
from collector.rrd import DEFAULT_RRD_ROOT, PendingRead, read_series, start_read
from collector.smoothing import View, characteristic
from collector.statusdump import parse_status_dump
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
    history are read only every ``history.max_age_s`` seconds. The cyclic garbage collector
    is paused while it runs (:mod:`collector.gc_pause`).
    """
    with gc_paused():
        return _build(root, rrd_root, options or CollectOptions(), cache, history)


def _build(
    root: Path,
    rrd_root: Path,
    options: CollectOptions,
    cache: GuestConfigCache | None,
    history: HistoryCache | None,
) -> Snapshot:
    now = int(time.time()) if options.now is None else options.now
    require_root(root)  # before the pool starts fetching for a tree that is not there
    # The guests' RRD files (thousands) are fetched on the process pool while this process
    # parses the configs.
    guest_columns = ["cpu", "mem"]
    guest_read = _start_window_read(rrd_root, "guest", guest_columns, now, options)
    # Everything that does not need the guests' usage is done before waiting for it; the
    # findings keep their order all the same: tree, dump, node and guest series, nodes,
    # cross-check, storages.
    try:
        tree = read_tree(root, cache=cache)
        findings: list[Finding] = list(tree.findings)
        status = _guest_status_from_dump(options.status_dump, findings)
        node_columns = ["cpu", "memused", "maxcpu", "memtotal"]
        node_read = _start_window_read(rrd_root, "node", node_columns, now, options)
        node_usage = _usage(
            rrd_root, "node", node_read, node_columns, now, options, findings, history
        )
        node_findings: list[Finding] = []
        nodes = [_node(name, tree, node_usage, node_findings) for name in _node_names(tree)]
        guests, undecided = _guests(tree, status, {n.name: n.maxcpu for n in nodes})
        storage_findings: list[Finding] = []
        storages = _storages(rrd_root, now, options, storage_findings)
    except BaseException:  # the workers' fetch is waited for, its memfds closed
        guest_read.abandon()
        raise
    # A guest's newest values are not part of the snapshot: only its view is computed.
    guest_usage = _usage(
        rrd_root, "guest", guest_read, guest_columns, now, options, findings, history, newest=False
    )
    _add_usage(guests, undecided, guest_usage)
    findings += node_findings
    _cross_check(tree, guest_usage, findings)
    findings += storage_findings
    return Snapshot(
        timestamp=now,
        nodes=nodes,
        guests=guests,
        rules=list(tree.rules),
        crs=tree.crs,
        issues=findings,
        usage_view=options.usage,
        cluster=tree.members.cluster_name if tree.members else None,
        storages=storages,
    )


Columns = dict[str, dict[str, Any]]
"""A per-id frame as plain dicts: column name -> id -> value (None for null)."""


@dataclass(slots=True)
class _Usage:
    """Per column and id: the characteristic values of the chosen view and the newest values."""

    view: Columns
    last: Columns
    found: set[str]


@dataclass
class HistoryCache:
    """The forecast view's long-history results, kept between rounds of a service.

    The forecast reads days of 30-min rows; that history changes once per 30 minutes, so a
    service re-reads it only every ``max_age_s`` seconds while every round still reads its
    short window for the newest values.
    """

    max_age_s: float = 900.0
    entries: dict[str, tuple[int, Columns, list[Finding]]] = field(default_factory=dict)
    long_reads: int = 0
    """How many long-history reads were made (for tests and logs)."""


def _start_window_read(
    rrd_root: Path, kind: Kind, columns: list[str], now: int, options: CollectOptions
) -> PendingRead:
    """The read of the window of every ``kind`` series, started."""
    return start_read(
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


def _usage(
    rrd_root: Path,
    kind: Kind,
    pending: PendingRead,
    columns: list[str],
    now: int,
    options: CollectOptions,
    findings: list[Finding],
    history: HistoryCache | None = None,
    *,
    newest: bool = True,
) -> _Usage:
    """The window read of every ``kind`` id (``pending``) reduced to the chosen view (and,
    if ``newest``, to their newest known values)."""
    if options.usage == "ewma" and not newest:  # the guests' long frame is never made
        reduced = pending.ewma(options.half_life_s)
        findings.extend(reduced.findings)
        return _Usage(_columns(reduced.frame, columns), {}, reduced.found_ids)
    read = pending.result()
    findings.extend(read.findings)
    last = _columns(characteristic(read.frame, columns, "last"), columns) if newest else {}
    if options.usage == "forecast":
        view = _forecast_columns(rrd_root, kind, columns, now, options, findings, history)
    else:
        frame = characteristic(read.frame, columns, options.usage, half_life_s=options.half_life_s)
        view = _columns(frame, columns)
    return _Usage(view, last, read.found_ids)


def _forecast_columns(
    rrd_root: Path,
    kind: Kind,
    columns: list[str],
    now: int,
    options: CollectOptions,
    findings: list[Finding],
    history: HistoryCache | None,
) -> Columns:
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
    result = _columns(view, columns)
    if history is not None:
        history.entries[kind] = (now, result, own)
        history.long_reads += 1
    return result


def _columns(frame: pl.DataFrame, names: list[str]) -> Columns:
    """``names`` of a frame with one row per ``id``, as :data:`Columns`."""
    ids = frame.get_column("id").to_list()
    return {name: dict(zip(ids, frame.get_column(name).to_list(), strict=True)) for name in names}


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
    view, last = usage.view, usage.last
    maxcpu, maxmem = last["maxcpu"].get(name), last["memtotal"].get(name)
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
        cpu=float(view["cpu"].get(name) or 0.0),
        mem=float(view["memused"].get(name) or 0.0),
        ha_state=ha_state,
        cpu_last=last["cpu"].get(name),
        mem_last=last["memused"].get(name),
    )


def _guests(
    tree: PveTree, dump_status: Columns, node_cores: dict[str, float]
) -> tuple[list[Guest], list[int]]:
    """One guest per .vmlist entry, in vmid order (the lookups shared by all bound once),
    its usage still unknown, and the indexes of those whose status the usage decides (see
    :func:`_add_usage`)."""
    services = tree.manager_status.service_status if tree.manager_status else {}
    resources, configs = tree.ha_resources, tree.guests
    shared = tree.shared_storages()
    dumped_status, dumped_name = dump_status.get("status", {}), dump_status.get("name", {})
    guests: list[Guest] = []
    undecided = []
    for vmid, entry in sorted(tree.vmlist.items()):
        key = str(vmid)
        sid = f"vm:{vmid}" if entry.type == "qemu" else f"ct:{vmid}"
        resource, service = resources.get(sid), services.get(sid)
        name, maxcpu, maxmem, tags, template, pool, maxdisk, local = _config_facts(
            configs.get(vmid), node_cores.get(entry.node, 0.0), tree, shared
        )
        dumped = dumped_name.get(key)
        status = _status(dumped_status.get(key), service)
        if status is None:
            undecided.append(len(guests))
        guests.append(
            Guest(
                vmid,
                sid,
                entry.type,
                str(dumped) if dumped else name,
                entry.node,
                status or "stopped",
                None if resource is None else ha_config(resource, service),
                maxcpu,
                maxmem,
                None,
                None,
                tags,
                template,
                pool,
                maxdisk,
                local,
            )
        )
    return guests, undecided


def _status(dumped: object, service: ServiceStatus | None) -> str | None:
    """Running or stopped: as the status dump says, else as the HA manager's service state
    says; None if neither does (then the usage decides, see :func:`_add_usage`)."""
    if dumped:
        return str(dumped)
    if service is not None:
        return "running" if service.state in HA_RUNNING_STATES else "stopped"
    return None


def _add_usage(guests: list[Guest], undecided: list[int], usage: _Usage) -> None:
    """Each guest's cpu and mem from ``usage``; the ``undecided`` guests are running if their
    memory series has a known value, else stopped."""
    cpus, mems = usage.view["cpu"], usage.view["mem"]
    for guest in guests:
        key = str(guest.vmid)
        cpu, mem = cpus.get(key), mems.get(key)
        guest.cpu = None if cpu is None else float(cpu)
        guest.mem = None if mem is None else float(mem)
    for index in undecided:
        guest = guests[index]
        guest.status = "running" if guest.mem is not None else "stopped"


_Facts = tuple[str, float, float, list[str], bool, str | None, float | None, bool]


def _config_facts(
    config: GuestConfig | None, cores: float, tree: PveTree, shared: frozenset[str]
) -> _Facts:
    """What a guest's config says, as the snapshot's name, maxcpu (``cores`` on its node),
    maxmem, tags, template, pool, maxdisk and local_disk."""
    if config is None:  # read_tree reported it (vmlist-without-config)
        return "", float(cores), 512.0 * MIB, [], False, None, None, False
    return (
        config.name,
        float(config.maxcpu_on(cores)),
        float(config.maxmem),
        list(config.tags),
        bool(config.template),
        config.pool,
        float(config.disk_bytes) if config.disk_bytes else None,
        bool(tree.has_local_disk(config, shared) or config.local_devices),
    )


def _cross_check(tree: PveTree, usage: _Usage, findings: list[Finding]) -> None:
    known = set(map(str, tree.vmlist))
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


def _guest_status_from_dump(path: Path | None, findings: list[Finding]) -> Columns:
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError as error:
        findings.append(Finding("dump-unreadable", str(path), str(error), "error"))
        return {}
    dump = parse_status_dump(text, str(path))
    findings.extend(dump.findings)
    return _columns(dump.guests, ["name", "status"])


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
