"""Build the same :class:`model.Snapshot` as :mod:`collector.snapshot_builder`, through the API.

For clusters the rebalancer cannot read on disk (it runs off the nodes), the snapshot comes
from the PVE API instead of ``/etc/pve`` and the RRD files:

- ``/cluster/status``: online nodes and the cluster name; ``/cluster/resources``: guests
  (node, status, name, tags, template, pool, maxcpu, maxmem, maxdisk) and nodes. Both are
  required: when either fails, :class:`ApiCollectError` says which and why;
- ``rrddata`` of every node and guest (``cf=MAX`` for the ``max`` view, else ``AVERAGE``;
  the smallest timeframe that covers the window: ``hour`` for the default hour, ``week``,
  30-minute rows, for the forecast's 7 days) -> the metric frame of :mod:`collector.series`
  (``cpu`` in cores), cut to the window the file reader reads ->
  :func:`collector.smoothing.characteristic`. In the forecast view the newest values
  (``cpu_last``/``mem_last``) also come from the 30-minute rows, where the file source reads
  them from the 1-minute window each round: one rrddata call per guest, not two. A failing
  ``rrddata`` is a finding naming
  the node or guest (its usage stays unknown) and the round goes on;
- ``/cluster/ha/resources``, ``/cluster/ha/rules`` (PVE 9), ``/cluster/ha/groups`` (PVE 8
  groups, turned into node-affinity rules as :func:`collector.pvecfg.groups_to_rules`
  does), ``/cluster/options`` (``crs``), ``/cluster/ha/status/manager_status``: each is
  rendered back into its file format and read by the very parser the file source uses,
  so both sources agree on every default; a failing one is a finding.

Shapes, as read in pve-manager, pve-cluster and pve-ha-manager (``PVE::RRD``,
``API2::HA::Rules``, ``API2::HA::Resources``, ``API2::HA::Status``, ``DataCenterConfig``):

- ``rrddata`` rows are ``{"time": T, "<ds>": value, ...}``, unknown values left out. ``T``
  is the END of the row's interval (``RRDs::fetch`` returns start + step and PVE counts on
  from there), as in :mod:`collector.rrd`. Timeframes of 9.0 files: hour 60 x 60 s,
  day 1440 x 60 s, week 336 x 30 min, month 1440 x 30 min, year 1440 x 6 h; older
  ``pve2`` files: hour 60 x 60 s, then 70 rows of 30 min, 3 h, 12 h, 7 d. The step is
  taken from the rows themselves.
- ``/cluster/options`` returns ``crs`` parsed into an object (a property string is
  accepted too). ``/cluster/ha/resources`` lists each resource's config keys plus ``sid``.
- ``/cluster/ha/rules`` (PVE 9) encodes ``resources`` and ``nodes`` as strings and ALSO
  lists the not yet migrated PVE 8 groups as ``ha-group-<group>`` rules. Those are replaced
  by the rules built from ``/cluster/ha/groups`` (as the file source builds them from
  groups.cfg: id ``group:<group>``, origin ``groups.cfg``); once groups.cfg is gone the
  rules endpoint's own entries are all there is. On PVE 8 the rules endpoint fails (an info
  finding) and the groups are all the rules.
- ``/cluster/ha/status/manager_status`` is ``{"manager_status": {...}, "quorum": ...,
  "lrm_status": ...}``.

- storages: the ``storage`` entries of ``/cluster/resources`` (``maxdisk`` total, ``disk``
  used bytes), ordered by ``node/storage`` as the file source orders its RRD ids.
- ``local_disk``: ``GET /storage`` (the storage config: rendered back into storage.cfg text
  and read by :func:`collector.pvecfg.parse_storage_cfg`, so the same types count as shared;
  when it fails, a finding, and the ``shared`` flags of the resources' storage entries are
  used) and every guest's ``GET /nodes/{node}/{qemu|lxc}/{vmid}/config`` (rendered back into
  ``key: value`` lines, read by :func:`collector.pvecfg.guestconf.parse_guest_config`):
  a volume on a non-shared or unknown storage, a host path or a pass-through device makes
  it True, as :meth:`collector.pvecfg.tree.PveTree.has_local_disk` decides. The configs are
  fetched by the rrddata worker threads; a :class:`GuestDiskCache` the caller keeps between
  rounds holds what each config says, refetched when the guest's resources entry changes
  node or ``maxdisk``. A failing config fetch is a ``guest-config-failed`` finding naming
  the guest, whose ``local_disk`` stays False. The config is read with pending changes
  applied (the API default), the file source reads the current values.

``CollectOptions.daemon`` and ``status_dump`` do not apply here (the API flushes rrdcached
itself and ``/cluster/resources`` carries the live status). ``maxdisk`` is the resources
list's value (for real VMs the boot disk, not the sum of all disks). Uncertain: the
resource order inside a migrated group rule, the PVE 9.2 ``auto-rebalance`` key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from collector.pvecfg.datacenter import parse_crs
from collector.pvecfg.guestconf import GuestConfig, parse_guest_config, split_tags
from collector.pvecfg.ha_resources import HaResource, parse_resources_cfg
from collector.pvecfg.ha_rules import (
    HaGroup,
    groups_to_rules,
    overlapping_node_affinity,
    parse_groups_cfg,
    parse_rules_cfg,
)
from collector.pvecfg.ha_status import ManagerStatus, ha_config, parse_manager_status
from collector.pvecfg.storage import SHARED_TYPES, StorageConfig, parse_storage_cfg
from collector.pvecfg.tree import PveTree
from collector.series import conform, cpu_to_cores, empty_frame
from collector.smoothing import characteristic
from collector.snapshot_builder import (
    FORECAST_HISTORY_S,
    HA_RUNNING_STATES,
    CollectOptions,
)
from model import Crs, Finding, Guest, Node, Rule, Snapshot, Storage
from model.rrd_schema import Kind
from pveapi.errors import PveApiError

TIMEFRAMES = (
    ("hour", 60, 60),
    ("day", 60, 1440),
    ("week", 1800, 336),
    ("month", 1800, 1440),
    ("year", 21600, 1440),
)
"""PVE 9 ``rrddata`` timeframes: name, seconds per row, rows (``PVE::RRD::create_rrd_data``)."""
NODE_COLUMNS = ["cpu", "memused", "maxcpu", "memtotal"]
GUEST_COLUMNS = ["cpu", "mem"]
_RULE_KEYS = {
    "node-affinity": ("resources", "nodes", "strict", "disable", "comment"),
    "resource-affinity": ("resources", "affinity", "disable", "comment"),
}
_GROUP_KEYS = ("nodes", "restricted", "nofailback", "comment")
_RESOURCE_KEYS = (
    "group",
    "state",
    "max_restart",
    "max_relocate",
    "failback",
    "auto-rebalance",
    "comment",
)
_STORAGE_KEYS = ("shared", "disable", "nodes", "content", "path")
_CONFIG_SKIPPED = frozenset({"digest", "description"})


class ApiReader(Protocol):
    """What the collector needs of :class:`pveapi.PveApiClient`."""

    def get(self, path: str, **params: Any) -> Any: ...


class ApiCollectError(RuntimeError):
    """A required endpoint failed: no snapshot can be built."""


@dataclass(frozen=True, slots=True)
class _DiskFacts:
    """What a guest's config says about its disks, as read at ``maxdisk``."""

    maxdisk: Any
    config: GuestConfig
    findings: tuple[Finding, ...]


class GuestDiskCache:
    """Per (vmid, node): the disk facts of a guest config, kept between rounds.

    An entry is used while the guest's ``/cluster/resources`` entry shows the same node and
    ``maxdisk``; entries of guests gone from the cluster are dropped each round.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], _DiskFacts] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, vmid: int, node: str, maxdisk: Any) -> _DiskFacts | None:
        with self._lock:
            facts = self._entries.get((vmid, node))
        return facts if facts is not None and facts.maxdisk == maxdisk else None

    def put(self, vmid: int, node: str, facts: _DiskFacts) -> None:
        with self._lock:
            self._entries[(vmid, node)] = facts

    def keep_only(self, keys: set[tuple[int, str]]) -> None:
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if k in keys}


@dataclass(frozen=True, slots=True)
class _Target:
    kind: Kind
    ident: str
    """Node name or vmid as text (the frame id)."""
    path: str
    where: str
    """What a finding names: ``node pve1`` or the guest's sid."""


def build_snapshot_from_api(
    client: ApiReader,
    options: CollectOptions | None = None,
    *,
    workers: int = 4,
    cache: GuestDiskCache | None = None,
) -> Snapshot:
    """Collect the cluster behind ``client``; ``workers`` threads fetch rrddata and configs.

    A service passes the same ``cache`` every round, so unchanged guests' configs are not
    fetched again.
    """
    options = options or CollectOptions()
    cache = GuestDiskCache() if cache is None else cache
    now = int(time.time()) if options.now is None else options.now
    findings: list[Finding] = []
    status = _required(client, "/cluster/status")
    resources = _required(client, "/cluster/resources")
    if not isinstance(status, list) or not isinstance(resources, list):
        raise ApiCollectError("/cluster/status and /cluster/resources must return lists")

    cluster_name = next(
        (str(i.get("name")) for i in status if i.get("type") == "cluster" and i.get("name")),
        None,
    )
    online = {
        str(i["name"]): bool(i.get("online"))
        for i in status
        if i.get("type") == "node" and i.get("name")
    }
    node_items = {str(i["node"]): i for i in resources if i.get("type") == "node" and i.get("node")}
    guest_items = sorted(
        (
            i
            for i in resources
            if i.get("type") in ("qemu", "lxc") and i.get("vmid") and i.get("node")
        ),
        key=lambda i: int(i["vmid"]),
    )

    crs = _crs(client, findings)
    ha_resources = _ha_resources(client, findings)
    rules = _rules(client, ha_resources, {int(i["vmid"]): i["type"] for i in guest_items}, findings)
    manager = _manager_status(client, findings)

    node_names = sorted(set(online) | set(node_items) | {str(i["node"]) for i in guest_items})
    targets = [_Target("node", n, f"/nodes/{n}/rrddata", f"node {n}") for n in node_names]
    targets += [
        _Target(
            "guest",
            str(i["vmid"]),
            f"/nodes/{i['node']}/{i['type']}/{i['vmid']}/rrddata",
            _sid(i),
        )
        for i in guest_items
    ]
    storage_items = [i for i in resources if i.get("type") == "storage" and i.get("storage")]
    storage_config = _storage_config(client, storage_items, findings)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        disks = _start_config_fetches(client, guest_items, cache, pool)
        frames = _fetch_series(client, targets, now, options, findings, pool)
        local = _local_disks(guest_items, disks, cache, storage_config, findings)
    node_view, node_last = _reduce("node", frames["node"], NODE_COLUMNS, now, options, findings)
    guest_view, _ = _reduce("guest", frames["guest"], GUEST_COLUMNS, now, options, findings)

    nodes = [
        _node(name, online, node_items.get(name, {}), node_view, node_last, manager, findings)
        for name in node_names
    ]
    guests = [
        _guest(item, guest_view, ha_resources, manager, local.get(_sid(item), False))
        for item in guest_items
    ]
    return Snapshot(
        timestamp=now,
        nodes=nodes,
        guests=guests,
        rules=rules,
        crs=crs,
        issues=findings,
        usage_view=options.usage,
        cluster=cluster_name,
        storages=_storages(storage_items),
    )


def _sid(item: dict[str, Any]) -> str:
    return f"{'vm' if item['type'] == 'qemu' else 'ct'}:{item['vmid']}"


def _required(client: ApiReader, path: str) -> Any:
    try:
        return client.get(path)
    except PveApiError as error:
        raise ApiCollectError(f"cannot collect the cluster: {error}") from None


def _optional(client: ApiReader, path: str, findings: list[Finding] | None) -> Any:
    """The data of ``path``, or None (with an ``api-endpoint-failed`` finding if asked)."""
    try:
        return client.get(path)
    except PveApiError as error:
        if findings is not None:
            findings.append(Finding("api-endpoint-failed", path, str(error), "error"))
        return None


# ----- configuration -------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


def _section_text(
    items: Iterable[tuple[str, str, dict[str, Any]]], keys: Callable[[str], tuple[str, ...]]
) -> str:
    """Section-config text of (type, id, values) items, only the ``keys`` of each type."""
    blocks = []
    for kind, ident, values in items:
        lines = [f"{kind}: {ident}"]
        lines += [f"\t{k} {_value(values[k])}" for k in keys(kind) if values.get(k) is not None]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _crs(client: ApiReader, findings: list[Finding]) -> Crs:
    data = _optional(client, "/cluster/options", findings)
    if not isinstance(data, dict) or data.get("crs") is None:
        return Crs()
    raw = data["crs"]
    text = raw if isinstance(raw, str) else ",".join(f"{k}={_value(v)}" for k, v in raw.items())
    crs, crs_findings = parse_crs(text, "/cluster/options crs")
    findings.extend(crs_findings)
    return crs


def _ha_resources(client: ApiReader, findings: list[Finding]) -> dict[str, HaResource]:
    data = _optional(client, "/cluster/ha/resources", findings)
    items = []
    for item in data if isinstance(data, list) else []:
        kind, _, vmid = str(item.get("sid", "")).partition(":")
        items.append((str(item.get("type") or kind), vmid, item))
    text = _section_text(items, lambda _kind: _RESOURCE_KEYS)
    resources, parse_findings = parse_resources_cfg(text, "/cluster/ha/resources")
    findings.extend(parse_findings)
    return resources


def _rules(
    client: ApiReader,
    resources: dict[str, HaResource],
    guest_types: dict[int, Any],
    findings: list[Finding],
) -> list[Rule]:
    """rules.cfg rules, then the rules of PVE 8 groups (see the module docstring)."""
    rules_data = _optional(client, "/cluster/ha/rules", None)
    groups_data = _optional(client, "/cluster/ha/groups", None)
    if rules_data is None and groups_data is None:
        findings.append(
            Finding(
                "api-endpoint-failed",
                "/cluster/ha/rules",
                "neither HA rules (PVE 9) nor HA groups (PVE 8) could be read: no rules",
                "error",
            )
        )
        return []
    groups: dict[str, HaGroup] = {}
    if isinstance(groups_data, list) and groups_data:
        items = [("group", str(i.get("group")), i) for i in groups_data if isinstance(i, dict)]
        groups, group_findings = parse_groups_cfg(
            _section_text(items, lambda _kind: _GROUP_KEYS), "/cluster/ha/groups"
        )
        findings.extend(group_findings)
    rules: list[Rule] = []
    if isinstance(rules_data, list):
        migrated = {f"ha-group-{group}" for group in groups}
        items = [
            (str(i.get("type")), str(i.get("rule")), i)
            for i in rules_data
            if isinstance(i, dict) and i.get("rule") not in migrated
        ]
        text = _section_text(items, lambda kind: _RULE_KEYS.get(kind, ()))
        parsed, parse_findings = parse_rules_cfg(text, "/cluster/ha/rules", guest_types)
        rules += parsed
        findings.extend(parse_findings)
    else:
        findings.append(
            Finding(
                "api-no-ha-rules",
                "/cluster/ha/rules",
                "no HA rules endpoint (PVE 8?): only HA groups are used, as node-affinity rules",
                "info",
            )
        )
    group_rules, rule_findings = groups_to_rules(groups, resources, "/cluster/ha/resources")
    findings.extend(rule_findings)
    rules += group_rules
    findings.extend(overlapping_node_affinity(rules))
    return rules


def _manager_status(client: ApiReader, findings: list[Finding]) -> ManagerStatus | None:
    data = _optional(client, "/cluster/ha/status/manager_status", findings)
    if not isinstance(data, dict):
        return None
    status, parse_findings = parse_manager_status(
        json.dumps(data.get("manager_status") or {}), "/cluster/ha/status/manager_status"
    )
    findings.extend(parse_findings)
    return status


# ----- usage ---------------------------------------------------------------------------


def _window(now: int, options: CollectOptions) -> int:
    """Seconds of history the usage view needs."""
    return FORECAST_HISTORY_S if options.usage == "forecast" else options.window_s


def timeframe_for(window_s: int) -> str:
    """The smallest rrddata timeframe whose rows reach ``window_s`` back."""
    for name, resolution, rows in TIMEFRAMES:
        if resolution * rows >= window_s:
            return name
    return TIMEFRAMES[-1][0]


def rrddata_frame(
    kind: Kind, ident: str, rows: list[dict[str, Any]], columns: list[str]
) -> pl.DataFrame:
    """One id's ``rrddata`` rows as a metric frame (``cpu`` in cores); bad rows are skipped."""
    rows = [r for r in rows if isinstance(r, dict) and isinstance(r.get("time"), int | float)]
    if not rows:
        return empty_frame(kind, columns)
    wanted = [*columns, "maxcpu"] if "maxcpu" not in columns else columns
    data: dict[str, list[Any]] = {"id": [ident] * len(rows), "time": []}
    data.update({name: [] for name in wanted})
    for row in rows:
        data["time"].append(int(row["time"]))
        for name in wanted:
            value = row.get(name)
            data[name].append(float(value) if isinstance(value, int | float) else None)
    schema: dict[str, pl.DataType] = {"id": pl.Utf8(), "time": pl.Int64()}
    schema.update({name: pl.Float64() for name in wanted})
    # Where PVE joins an old and a 9.0 file the seam row comes twice: the 9.0 row wins.
    frame = pl.DataFrame(data, schema=schema).unique("time", keep="last", maintain_order=True)
    frame = cpu_to_cores(frame).sort("time")
    return conform(frame, kind, columns=columns)


def _fetch_series(
    client: ApiReader,
    targets: list[_Target],
    now: int,
    options: CollectOptions,
    findings: list[Finding],
    pool: ThreadPoolExecutor,
) -> dict[str, pl.DataFrame]:
    params = {
        "timeframe": timeframe_for(_window(now, options)),
        "cf": "MAX" if options.usage == "max" else "AVERAGE",
    }

    def fetch(target: _Target) -> Any:
        try:
            return client.get(target.path, **params)
        except PveApiError as error:
            return error

    answers = list(pool.map(fetch, targets))
    parts: dict[str, list[pl.DataFrame]] = {"node": [], "guest": []}
    for target, answer in zip(targets, answers, strict=True):
        if isinstance(answer, PveApiError):
            message = f"rrddata failed, usage unknown: {answer}"
            findings.append(Finding("rrddata-failed", target.where, message, "error"))
            continue
        columns = NODE_COLUMNS if target.kind == "node" else GUEST_COLUMNS
        rows = answer if isinstance(answer, list) else []
        parts[target.kind].append(rrddata_frame(target.kind, target.ident, rows, columns))
    return {
        "node": pl.concat([empty_frame("node", NODE_COLUMNS), *parts["node"]]),
        "guest": pl.concat([empty_frame("guest", GUEST_COLUMNS), *parts["guest"]]),
    }


def _reduce(
    kind: Kind,
    frame: pl.DataFrame,
    columns: list[str],
    now: int,
    options: CollectOptions,
    findings: list[Finding],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(usage view, newest values) per id, over the same window the file reader reads."""
    steps = frame.group_by("id").agg(pl.col("time").diff().min().alias("step"))
    smallest = steps["step"].min() if not steps.is_empty() else None
    step = int(smallest) if isinstance(smallest, int) and smallest > 0 else 60
    start = now - _window(now, options)
    aligned_start = (start // step) * step
    aligned_end = -(-now // step) * step
    window = frame.filter((pl.col("time") > aligned_start) & (pl.col("time") <= aligned_end))
    view = characteristic(window, columns, options.usage, half_life_s=options.half_life_s)
    fell_back = view.filter(pl.col("fallback"))["id"].to_list()
    if fell_back:
        shown = ", ".join(fell_back[:5]) + (
            f" (+{len(fell_back) - 5} more)" if len(fell_back) > 5 else ""
        )
        findings.append(
            Finding(
                "forecast-fallback",
                f"{kind} {shown}",
                f"{len(fell_back)} {kind} series have less than two days of history; "
                "their usage is the EWMA instead of the forecast",
                "info",
            )
        )
    last_frame = window.filter(pl.col("time") > now - options.window_s)
    last = characteristic(last_frame, columns, "last")
    return _rows(view), _rows(last)


def _rows(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in frame.iter_rows(named=True)}


# ----- nodes and guests ----------------------------------------------------------------


def _node(
    name: str,
    online: dict[str, bool],
    item: dict[str, Any],
    view: dict[str, dict[str, Any]],
    last: dict[str, dict[str, Any]],
    manager: ManagerStatus | None,
    findings: list[Finding],
) -> Node:
    ha_state = manager.node_status.get(name) if manager else None
    if name not in online:
        findings.append(
            Finding("node-not-member", f"node {name}", "not in /cluster/status: treated as offline")
        )
    usage, newest = view.get(name, {}), last.get(name, {})
    maxcpu = newest.get("maxcpu") or item.get("maxcpu")
    maxmem = newest.get("memtotal") or item.get("maxmem")
    if not maxcpu or not maxmem:
        findings.append(
            Finding(
                "node-capacity-unknown",
                f"node {name}",
                "no known maxcpu/memtotal in its rrddata or resources: it cannot receive guests",
                "error",
            )
        )
    return Node(
        name=name,
        online=online.get(name, False),
        maintenance=ha_state == "maintenance",
        maxcpu=float(maxcpu or 0.0),
        maxmem=float(maxmem or 0.0),
        cpu=float(usage.get("cpu") or 0.0),
        mem=float(usage.get("memused") or 0.0),
        ha_state=ha_state,
        cpu_last=newest.get("cpu"),
        mem_last=newest.get("memused"),
    )


def _guest(
    item: dict[str, Any],
    view: dict[str, dict[str, Any]],
    ha_resources: dict[str, HaResource],
    manager: ManagerStatus | None,
    local_disk: bool,
) -> Guest:
    sid = _sid(item)
    vmid = int(item["vmid"])
    resource = ha_resources.get(sid)
    service = manager.service_status.get(sid) if manager else None
    ha = ha_config(resource, service)
    usage = view.get(str(vmid), {})
    cpu, mem = usage.get("cpu"), usage.get("mem")
    if item.get("status"):
        status = str(item["status"])
    elif service is not None:
        status = "running" if service.state in HA_RUNNING_STATES else "stopped"
    else:
        status = "running" if mem is not None else "stopped"
    maxdisk = item.get("maxdisk")
    return Guest(
        vmid=vmid,
        sid=sid,
        type="qemu" if item["type"] == "qemu" else "lxc",
        name=str(item.get("name") or ""),
        node=str(item["node"]),
        status=status,
        ha=ha,
        maxcpu=float(item.get("maxcpu") or 0.0),
        maxmem=float(item.get("maxmem") or 0.0),
        cpu=None if cpu is None else float(cpu),
        mem=None if mem is None else float(mem),
        tags=list(split_tags(str(item.get("tags") or ""))),
        template=bool(item.get("template")),
        pool=str(item["pool"]) if item.get("pool") else None,
        maxdisk=float(maxdisk) if maxdisk else None,
        local_disk=local_disk,
    )


# ----- storages and guest disks --------------------------------------------------------


def _storages(items: list[dict[str, Any]]) -> list[Storage]:
    """``storage`` resources in the file source's order (its RRD ids ``node/storage``)."""

    def number(value: Any) -> float | None:
        return float(value) if isinstance(value, int | float) else None

    rows = sorted(
        (f"{i.get('node')}/{i['storage']}", i) for i in items if i.get("node") is not None
    )
    return [
        Storage(str(i["node"]), str(i["storage"]), number(i.get("maxdisk")), number(i.get("disk")))
        for _, i in rows
    ]


def _storage_config(
    client: ApiReader, storage_items: list[dict[str, Any]], findings: list[Finding]
) -> dict[str, StorageConfig]:
    """``GET /storage`` as storage.cfg would give it; on failure, the resources' flags."""
    data = _optional(client, "/storage", findings)
    if isinstance(data, list):
        items = [
            (str(i.get("type")), str(i.get("storage")), i)
            for i in data
            if isinstance(i, dict) and i.get("storage") and i.get("type")
        ]
        text = _section_text(items, lambda _kind: _STORAGE_KEYS)
        storages, parse_findings = parse_storage_cfg(text, "/storage")
        findings.extend(f for f in parse_findings if f.kind != "config-unknown-section")
        return storages
    fallback: dict[str, StorageConfig] = {}
    for item in storage_items:
        kind = str(item.get("plugintype") or "")
        shared = bool(item.get("shared")) or kind in SHARED_TYPES
        name = str(item["storage"])
        if name not in fallback or shared:  # one entry per node: any shared one wins
            fallback[name] = StorageConfig(name, kind, shared)
    return fallback


def _config_text(data: dict[str, Any]) -> str:
    """A config's JSON (``GET .../config``) as the ``key: value`` lines of its file."""
    lines = []
    for key, value in data.items():
        if key in _CONFIG_SKIPPED or value is None:
            continue
        text = _value(value)
        if "\n" not in text:
            lines.append(f"{key}: {text}\n")
    return "".join(lines)


def _start_config_fetches(
    client: ApiReader,
    guest_items: list[dict[str, Any]],
    cache: GuestDiskCache,
    pool: ThreadPoolExecutor,
) -> dict[str, Future[_DiskFacts | PveApiError]]:
    """Fetch (in ``pool``) the configs of the guests ``cache`` holds nothing current for."""

    def fetch(item: dict[str, Any]) -> _DiskFacts | PveApiError:
        vmid, node, kind = int(item["vmid"]), str(item["node"]), item["type"]
        path = f"/nodes/{node}/{kind}/{vmid}/config"
        try:
            data = client.get(path)
        except PveApiError as error:
            return error
        text = _config_text(data if isinstance(data, dict) else {})
        config, parse_findings = parse_guest_config(
            text, vmid, "qemu" if kind == "qemu" else "lxc", node, path
        )
        facts = _DiskFacts(item.get("maxdisk"), config, tuple(parse_findings))
        cache.put(vmid, node, facts)
        return facts

    cache.keep_only({(int(i["vmid"]), str(i["node"])) for i in guest_items})
    return {
        _sid(item): pool.submit(fetch, item)
        for item in guest_items
        if cache.get(int(item["vmid"]), str(item["node"]), item.get("maxdisk")) is None
    }


def _local_disks(
    guest_items: list[dict[str, Any]],
    fetched: dict[str, Future[_DiskFacts | PveApiError]],
    cache: GuestDiskCache,
    storages: dict[str, StorageConfig],
    findings: list[Finding],
) -> dict[str, bool]:
    """sid -> whether the guest has a node-bound disk or device (see the module docstring)."""
    tree = PveTree(Path("/storage"), storages=storages)
    local: dict[str, bool] = {}
    for item in guest_items:
        sid = _sid(item)
        future = fetched.get(sid)
        answer = (
            future.result()
            if future is not None
            else cache.get(int(item["vmid"]), str(item["node"]), item.get("maxdisk"))
        )
        if isinstance(answer, PveApiError):
            message = f"config failed, local disks unknown (taken as none): {answer}"
            findings.append(Finding("guest-config-failed", sid, message, "error"))
            continue
        if answer is None:
            continue
        findings.extend(answer.findings)
        config = answer.config
        local[sid] = bool(tree.has_local_disk(config) or config.local_devices)
    return local
