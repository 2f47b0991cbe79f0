"""Serve the subset of the Proxmox VE API the rebalancer uses, from a live SimulatedCluster.

An HTTP(S) server on 127.0.0.1 (port 0: any free port) that answers like ``pveproxy``
(``/api2/json/...``, every reply ``{"data": ...}``, errors as the HTTP status with the
message as reason phrase and in ``message``), so the API collector and the actuator can be
tested end to end without a real cluster:

- reads: ``/cluster/status``, ``/cluster/resources``, ``/cluster/options``,
  ``/cluster/ha/resources``, ``/cluster/ha/rules`` (501 with ``pve_major=8``; on PVE 9
  it also lists legacy groups as ``ha-group-<id>`` rules, as PVE 9 migrates them on the
  fly), ``/cluster/ha/groups``, ``/cluster/ha/status/manager_status``, node and guest
  ``rrddata`` (read from the simulator's RRD files the way ``PVE::RRD::create_rrd_data``
  does: the timeframe's rows up to now, old ``pve2`` rows first while they cover the start,
  the seam row twice as PVE gives it, ``time`` = end of each row's interval), ``/storage``
  (storage.cfg as :mod:`simulator.etc_writer` renders it) and guest ``config`` (the keys
  etc_writer writes to the guest's config, integers as numbers, plus ``digest``);
- writes: POST ``/cluster/ha/resources/{sid}/migrate`` and ``/relocate`` (``node``),
  ``/nodes/{node}/qemu/{vmid}/migrate`` (``target``, ``online``),
  ``/nodes/{node}/lxc/{vmid}/migrate`` (``target``, ``restart``): each answers a UPID
  (id: the vmid) and calls ``cluster.migrate``; ``GET /nodes/{node}/tasks/{upid}/status``
  says ``running`` until the simulated migration is done, then ``stopped`` with
  ``exitstatus`` ``OK``, or at once the refusal message when the simulator refused it.
  (Real PVE's HA endpoints queue a CRM command and return no UPID; here they get one so
  every move can be polled.)

Authentication: the ``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`` header, 401
without it or with another value. Time only moves when the test calls
``cluster.advance()``; every request holds ``lock``, which callers that change the cluster
while the server runs should hold too. ``fail_rrddata`` (node names or vmids as text)
makes those ``rrddata`` calls fail with 500, as a missing or damaged RRD file does;
``fail_paths`` (API paths such as ``/cluster/options``) makes any call of them fail with 500.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import rrdtool

from model.rrd_schema import LAYOUTS, Kind
from pveapi.tasks import Upid
from simulator.cluster import SimulatedCluster
from simulator.etc_writer import guest_config_lines, render_storage_cfg
from simulator.model import LOCAL_STORAGE, SHARED_STORAGE

log = logging.getLogger(__name__)

PREFIX = "/api2/json"
TIMEFRAMES = {
    "hour": (60, 60),
    "day": (60, 1440),
    "week": (1800, 336),
    "month": (1800, 1440),
    "year": (21600, 1440),
    "decade": (604800, 570),
}
"""PVE 9 (9.0 files): seconds per row and rows of each ``rrddata`` timeframe."""
TIMEFRAMES_PVE2 = {
    "hour": (60, 60),
    "day": (1800, 70),
    "week": (10800, 70),
    "month": (43200, 70),
    "year": (604800, 70),
    "decade": (604800, 70),
}
"""The same for the older ``pve2-*`` files."""


class ApiError(Exception):
    """An error reply: HTTP ``status`` and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Server(ThreadingHTTPServer):
    """Threads per request; the TLS handshake happens in the request's thread."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("request from %s failed", client_address, exc_info=True)


@dataclass(slots=True)
class _Task:
    upid: str
    node: str
    vmid: int
    started: int
    error: str | None


Handler = Callable[[dict[str, str], re.Match[str]], Any]


class SimulatedApiServer:
    """The API of ``cluster`` on ``host:port``; TLS when ``cert`` and ``key`` (PEM) are given."""

    def __init__(
        self,
        cluster: SimulatedCluster,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cert: Path | None = None,
        key: Path | None = None,
        pve_major: int = 9,
    ) -> None:
        """``token``: ``USER@REALM!TOKENID=SECRET``, the only credential accepted."""
        ident, sep, secret = token.partition("=")
        if not sep or "!" not in ident or not secret:
            raise ValueError("token must look like USER@REALM!TOKENID=SECRET")
        self.cluster = cluster
        self.lock = threading.RLock()
        self.pve_major = pve_major
        self.fail_rrddata: set[str] = set()
        self.fail_paths: set[str] = set()
        self._user = ident
        self._expected = f"PVEAPIToken={ident}={secret}".encode()
        self._tasks: dict[str, _Task] = {}
        self._pid = 0x1000
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) if cert else None
        if self._tls is not None and cert is not None:
            self._tls.load_cert_chain(cert, key)
        self._bind = (host, port)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/cluster/status"), self._cluster_status),
            ("GET", re.compile(r"/cluster/resources"), self._resources),
            ("GET", re.compile(r"/cluster/options"), self._options),
            ("GET", re.compile(r"/cluster/ha/resources"), self._ha_resources),
            ("GET", re.compile(r"/cluster/ha/rules"), self._ha_rules),
            ("GET", re.compile(r"/cluster/ha/groups"), self._ha_groups),
            ("GET", re.compile(r"/cluster/ha/status/manager_status"), self._manager_status),
            ("GET", re.compile(r"/storage"), self._storage),
            ("GET", re.compile(r"/nodes/(?P<node>[^/]+)/rrddata"), self._node_rrddata),
            (
                "GET",
                re.compile(r"/nodes/(?P<node>[^/]+)/(?P<kind>qemu|lxc)/(?P<vmid>\d+)/config"),
                self._guest_config,
            ),
            (
                "GET",
                re.compile(r"/nodes/(?P<node>[^/]+)/(?P<kind>qemu|lxc)/(?P<vmid>\d+)/rrddata"),
                self._guest_rrddata,
            ),
            (
                "POST",
                re.compile(
                    r"/cluster/ha/resources/(?P<sid>(?:vm|ct):\d+)/(?P<op>migrate|relocate)"
                ),
                self._ha_migrate,
            ),
            (
                "POST",
                re.compile(r"/nodes/(?P<node>[^/]+)/(?P<kind>qemu|lxc)/(?P<vmid>\d+)/migrate"),
                self._guest_migrate,
            ),
            (
                "GET",
                re.compile(r"/nodes/(?P<node>[^/]+)/tasks/(?P<upid>[^/]+)/status"),
                self._task_status,
            ),
        ]

    # ----- lifecycle -------------------------------------------------------------------

    def start(self) -> SimulatedApiServer:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        httpd = _Server(self._bind, self._handler_class())
        httpd.tls = self._tls
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="sim-pve-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SimulatedApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as a client host entry."""
        return f"{self._bind[0]}:{self.port}"

    # ----- HTTP ------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(self.timeout)
                    self.request.do_handshake()  # here, not in the accepting thread
                super().setup()

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload, reason = server._dispatch(
                    method, self.path, self.headers.get("Authorization"), body,
                    self.headers.get("Content-Type", ""),
                )  # fmt: skip
                data = json.dumps(payload).encode()
                self.send_response(status, reason)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        return _Handler

    def _dispatch(
        self, method: str, raw_path: str, auth: str | None, body: bytes, content_type: str
    ) -> tuple[int, dict[str, Any], str | None]:
        url = urlsplit(raw_path)
        path = unquote(url.path)
        if not path.startswith(PREFIX + "/"):
            return 404, {"data": None, "message": "not found"}, "Not Found"
        if auth is None or not hmac.compare_digest(auth.encode(), self._expected):
            message = "No ticket" if auth is None else "invalid token value"
            return 401, {"data": None, "message": message}, message
        path = path[len(PREFIX) :].rstrip("/")
        args = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if method == "POST" and body:
            if "json" in content_type:
                args.update({k: str(v) for k, v in json.loads(body).items()})
            else:
                args.update({k: v[-1] for k, v in parse_qs(body.decode()).items()})
        if path in self.fail_paths:
            message = f"simulated failure of {path}"
            return 500, {"data": None, "message": message}, message
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method:
                continue
            try:
                with self.lock:
                    return 200, {"data": handler(args, match)}, None
            except ApiError as error:
                reason = error.message.splitlines()[0] if error.message else None
                return error.status, {"data": None, "message": error.message}, reason
        message = f"Method '{method} {path}' not implemented"
        return 501, {"data": None, "message": message}, message

    # ----- reads -----------------------------------------------------------------------

    def _cluster_status(self, args: dict[str, str], match: re.Match[str]) -> Any:
        spec = self.cluster.spec
        items: list[dict[str, Any]] = [
            {
                "type": "cluster",
                "id": "cluster",
                "name": spec.name,
                "nodes": len(spec.nodes),
                "quorate": 1,
                "version": 1,
            }
        ]
        for index, node in enumerate(spec.nodes):
            items.append(
                {
                    "type": "node",
                    "id": f"node/{node.name}",
                    "name": node.name,
                    "nodeid": node.nodeid,
                    "ip": node.ip,
                    "online": 1,
                    "local": int(index == 0),
                    "level": "",
                }
            )
        return items

    def _resources(self, args: dict[str, str], match: re.Match[str]) -> Any:
        wanted = args.get("type")
        if wanted not in (None, "vm", "node", "storage"):
            raise ApiError(400, f"type: value '{wanted}' does not have a value in the enum")
        cluster = self.cluster
        now = np.array([cluster.now], dtype=np.int64)
        items: list[dict[str, Any]] = []
        if wanted in (None, "node"):
            nodes = cluster.node_series(now)
            for i, node in enumerate(cluster.spec.nodes):
                items.append(
                    {
                        "id": f"node/{node.name}",
                        "type": "node",
                        "node": node.name,
                        "status": "online",
                        "maxcpu": int(nodes["maxcpu"][i, 0]),
                        "cpu": float(nodes["cpu"][i, 0]),
                        "maxmem": int(nodes["memtotal"][i, 0]),
                        "mem": int(nodes["memused"][i, 0]),
                        "maxdisk": int(nodes["roottotal"][i, 0]),
                        "disk": int(nodes["rootused"][i, 0]),
                        "uptime": 40 * 86400,
                        "level": "",
                    }
                )
        if wanted in (None, "vm"):
            items += self._guest_resources(now)
        if wanted in (None, "storage"):
            storage = cluster.storage_series(now)
            for row, (host, name) in enumerate(cluster.storage_keys):
                items.append(
                    {
                        "id": f"storage/{host}/{name}",
                        "type": "storage",
                        "node": host,
                        "storage": name,
                        "status": "available",
                        "shared": int(name == SHARED_STORAGE),
                        "maxdisk": int(storage["total"][row, 0]),
                        "disk": int(storage["used"][row, 0]),
                        "plugintype": {LOCAL_STORAGE: "lvmthin", SHARED_STORAGE: "rbd"}.get(
                            name, "dir"
                        ),
                    }
                )
        return items

    def _guest_resources(self, now: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
        cluster = self.cluster
        series = cluster.guest_series(now).columns
        cores = {n.name: n.cores for n in cluster.spec.nodes}
        items = []
        for i, guest in enumerate(cluster.spec.guests):
            running = bool(guest.running)
            cpu, mem = series["cpu"][i, 0], series["mem"][i, 0]
            item: dict[str, Any] = {
                "id": f"{guest.kind}/{guest.vmid}",
                "type": guest.kind,
                "vmid": guest.vmid,
                "name": guest.name,
                "node": guest.node,
                "status": "running" if running else "stopped",
                "template": int(guest.template),
                "maxcpu": guest.maxcpu(cores[guest.node]),
                "cpu": float(cpu) if running and cpu == cpu else 0,
                "maxmem": guest.maxmem,
                "mem": int(mem) if running and mem == mem else 0,
                "maxdisk": guest.maxdisk,
                "disk": 0,
                "uptime": int(cluster.now - cluster.started_at[i]) if running else 0,
            }
            if guest.tags:
                item["tags"] = ";".join(guest.tags)
            if guest.pool is not None:
                item["pool"] = guest.pool
            if guest.ha_state is not None:
                item["hastate"] = guest.ha_state
            items.append(item)
        return items

    def _options(self, args: dict[str, str], match: re.Match[str]) -> Any:
        crs: dict[str, Any] = {}
        for item in self.cluster.spec.crs.split(","):
            key, _, value = item.partition("=")
            crs[key] = int(value) if value.isdigit() else value
        return {"crs": crs, "keyboard": "en-us"}

    def _ha_resources(self, args: dict[str, str], match: re.Match[str]) -> Any:
        items = []
        for guest in self.cluster.spec.guests:
            if guest.ha_state is None:
                continue
            item: dict[str, Any] = {
                "sid": guest.sid,
                "type": guest.sid.split(":")[0],
                "state": guest.ha_state,
                "max_relocate": 1,
                "max_restart": 1,
                "digest": "0" * 40,
            }
            if guest.group is not None:
                item["group"] = guest.group
            if not guest.auto_rebalance:
                item["auto-rebalance"] = 0
                item["comment"] = "licence bound to host"
            items.append(item)
        return items

    def _ha_rules(self, args: dict[str, str], match: re.Match[str]) -> Any:
        if self.pve_major < 9:
            raise ApiError(501, "Method 'GET /cluster/ha/rules' not implemented")
        items = []
        for order, rule in enumerate(self.cluster.spec.rules, start=1):
            item: dict[str, Any] = {
                "rule": rule.id,
                "type": rule.type,
                "resources": ",".join(rule.resources),
                "order": order,
                "digest": "0" * 40,
            }
            if rule.type == "node-affinity":
                item["nodes"] = ",".join(f"{n}:{p}" for n, p in rule.nodes)
                item["strict"] = int(rule.strict)
            else:
                item["affinity"] = rule.affinity
            if rule.disable:
                item["disable"] = 1
            if rule.comment:
                item["comment"] = rule.comment
            items.append(item)
        members: dict[str, list[str]] = {}
        for guest in self.cluster.spec.guests:
            if guest.ha_state is not None and guest.group is not None:
                members.setdefault(guest.group, []).append(guest.sid)
        for group in self.cluster.spec.groups:
            if group.id in members:  # PVE 9 migrates groups on the fly (migrate_groups_to_rules)
                items.append(
                    {
                        "rule": f"ha-group-{group.id}",
                        "type": "node-affinity",
                        "resources": ",".join(sorted(members[group.id])),
                        "nodes": ",".join(f"{n}:{p}" for n, p in group.nodes),
                        "strict": int(group.restricted),
                        "order": len(items) + 1,
                        "digest": "0" * 40,
                    }
                )
        return items

    def _ha_groups(self, args: dict[str, str], match: re.Match[str]) -> Any:
        return [
            {
                "group": group.id,
                "type": "group",
                "nodes": ",".join(f"{n}:{p}" for n, p in group.nodes),
                "restricted": int(group.restricted),
                "nofailback": 0,
                "digest": "0" * 40,
            }
            for group in self.cluster.spec.groups
        ]

    def _manager_status(self, args: dict[str, str], match: re.Match[str]) -> Any:
        path = self.cluster.etc_root / "ha" / "manager_status"
        status = json.loads(path.read_text())
        master = status.get("master_node")
        return {
            "manager_status": status,
            "quorum": {"node": master, "quorate": 1},
            "lrm_status": {
                name: {"mode": "active", "state": "active"}
                for name in status.get("node_status", {})
            },
        }

    def _storage(self, args: dict[str, str], match: re.Match[str]) -> Any:
        items = []
        for block in render_storage_cfg().split("\n\n"):
            header, *lines = block.strip().splitlines()
            kind, _, ident = header.partition(": ")
            item: dict[str, Any] = {"storage": ident, "type": kind, "digest": "0" * 40}
            for line in lines:
                key, _, value = line.strip().partition(" ")
                item[key] = value
            items.append(item)
        return items

    def _guest_config(self, args: dict[str, str], match: re.Match[str]) -> Any:
        guest = self._guest_on(match["node"], match["kind"], int(match["vmid"]))
        keys = guest_config_lines(guest, self.cluster.spec.seed)
        if guest.has_snapshot:
            keys["parent"] = "before-upgrade"
        data: dict[str, Any] = {
            key: int(value) if value.isdigit() else value for key, value in sorted(keys.items())
        }
        data["digest"] = "0" * 40
        return data

    def _node_rrddata(self, args: dict[str, str], match: re.Match[str]) -> Any:
        node = match["node"]
        if node not in self.cluster.node_names:
            raise ApiError(500, f"hostname lookup '{node}' failed - no such node")
        return self._rrddata("node", node, args)

    def _guest_rrddata(self, args: dict[str, str], match: re.Match[str]) -> Any:
        guest = self._guest_on(match["node"], match["kind"], int(match["vmid"]))
        return self._rrddata("guest", str(guest.vmid), args)

    def _rrddata(self, kind: Kind, ident: str, args: dict[str, str]) -> Any:
        """PVE's create_rrd_data: the timeframe's rows up to now from the 9.0 file, rows of
        the old file first while it still covers the start; ``time`` ends each interval."""
        timeframe = args.get("timeframe")
        if timeframe not in TIMEFRAMES:
            raise ApiError(400, "timeframe: value does not have a value in the enum")
        cf = args.get("cf", "AVERAGE")
        if cf not in ("AVERAGE", "MAX"):
            raise ApiError(400, "cf: value does not have a value in the enum")
        if ident in self.fail_rrddata:
            raise ApiError(500, f"RRD error: simulated failure for {ident}")
        current_layout, old_layout = LAYOUTS[kind]
        current = self.cluster.rrd_root / current_layout.directory / ident
        old = self.cluster.rrd_root / old_layout.directory / ident
        now = self.cluster.now
        rows: list[dict[str, Any]] = []
        if not current.is_file():
            if not old.is_file():
                raise ApiError(500, f"RRD error: opening '{current}': No such file or directory")
            reso, count = TIMEFRAMES_PVE2[timeframe]
            ctime = reso * (now // reso)
            return _fetch(old, cf, ctime - reso * count, ctime - 1, reso, rows)
        reso, count = TIMEFRAMES[timeframe]
        ctime = reso * (now // reso)
        start = ctime - reso * count
        if old.is_file():
            last_old = int(rrdtool.last(str(old)))
            if start < last_old:
                old_reso, old_count = TIMEFRAMES_PVE2[timeframe]
                old_start = old_reso * (now // old_reso) - old_reso * old_count
                _fetch(old, cf, old_start, last_old, old_reso, rows)
                start = last_old
        return _fetch(current, cf, start, ctime - 1, reso, rows)

    # ----- writes ----------------------------------------------------------------------

    def _guest_on(self, node: str, kind: str, vmid: int) -> Any:
        try:
            guest = self.cluster.spec.guests[self.cluster.guest_index(vmid)]
        except KeyError:
            guest = None
        if guest is None or guest.kind != kind or guest.node != node:
            conf = "qemu-server" if kind == "qemu" else "lxc"
            raise ApiError(
                500, f"Configuration file 'nodes/{node}/{conf}/{vmid}.conf' does not exist"
            )
        return guest

    def _ha_migrate(self, args: dict[str, str], match: re.Match[str]) -> Any:
        sid, op = match["sid"], match["op"]
        target = args.get("node")
        if not target:
            raise ApiError(400, "node: property is missing and it is not optional")
        vmid = int(sid.split(":")[1])
        try:
            guest = self.cluster.spec.guests[self.cluster.guest_index(vmid)]
        except KeyError:
            raise ApiError(500, f"service '{sid}' not defined") from None
        if guest.ha_state is None or guest.sid != sid:
            raise ApiError(500, f"service '{sid}' not defined")
        return self._start_migration(guest.node, vmid, f"ha{op}", str(vmid), target)

    def _guest_migrate(self, args: dict[str, str], match: re.Match[str]) -> Any:
        guest = self._guest_on(match["node"], match["kind"], int(match["vmid"]))
        target = args.get("target")
        if not target:
            raise ApiError(400, "target: property is missing and it is not optional")
        if target == guest.node:
            raise ApiError(400, f"target is local node '{target}'")
        kind = "qmigrate" if guest.kind == "qemu" else "vzmigrate"
        return self._start_migration(guest.node, guest.vmid, kind, str(guest.vmid), target)

    def _start_migration(self, node: str, vmid: int, kind: str, ident: str, target: str) -> str:
        self._pid += 1
        now = self.cluster.now
        upid = str(Upid(node, self._pid, self._pid * 7, now, kind, ident, self._user))
        error = None
        try:
            self.cluster.migrate(vmid, target)
        except ValueError as refused:
            error = f"migration aborted: {refused}"
        self._tasks[upid] = _Task(upid, node, vmid, now, error)
        return upid

    def _task_status(self, args: dict[str, str], match: re.Match[str]) -> Any:
        task = self._tasks.get(match["upid"])
        if task is None or task.node != match["node"]:
            raise ApiError(500, f"no such task '{match['upid']}'")
        parts = task.upid.split(":")
        data: dict[str, Any] = {
            "upid": task.upid,
            "node": task.node,
            "pid": int(parts[2], 16),
            "pstart": int(parts[3], 16),
            "starttime": task.started,
            "type": parts[5],
            "id": parts[6],
            "user": self._user,
        }
        migration = self.cluster.migrations.get(task.vmid)
        if task.error is None and migration is not None and migration.started == task.started:
            data["status"] = "running"
        else:
            data["status"] = "stopped"
            data["exitstatus"] = task.error or "OK"
        return data


def _fetch(
    path: Path, cf: str, start: int, end: int, reso: int, out: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Append the rows of ``path`` in (start, end] to ``out`` as PVE shapes them."""
    try:
        (first, last, step), names, data = rrdtool.fetch(
            str(path), cf, "-s", str(start), "-e", str(end), "-r", str(reso)
        )
    except rrdtool.OperationalError as error:
        raise ApiError(500, f"RRD error: {error}") from None
    for index, row in enumerate(data):
        time = int(first) + (index + 1) * int(step)
        if time > int(last):
            break
        entry: dict[str, Any] = {"time": time}
        entry.update({name: v for name, v in zip(names, row, strict=True) if v is not None})
        out.append(entry)
    return out


__all__ = ["ApiError", "SimulatedApiServer"]
