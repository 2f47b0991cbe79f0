"""Hand-made rounds and small HTTP helpers shared by the exporter tests (no tests here)."""

from __future__ import annotations

import base64
import http.client
import ssl
from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from exporters.state import PublishedRound
from model import Crs, Finding, Guest, HaConfig, Node, Snapshot
from model.plan import Move, RoundResult

GIB = 1024**3
FINISHED_AT = 1_780_000_000.0


def make_snapshot(usage_view: str = "last") -> Snapshot:
    """Four nodes: two online, one in maintenance, one offline; two guests; three findings."""
    nodes = [
        Node("pve1", True, False, maxcpu=16, maxmem=64 * GIB, cpu=12, mem=48 * GIB),
        Node("pve2", True, False, maxcpu=8, maxmem=32 * GIB, cpu=2, mem=8 * GIB),
        Node("pve3", True, True, maxcpu=8, maxmem=32 * GIB, cpu=4, mem=0),
        Node("pve4", False, False, maxcpu=4, maxmem=16 * GIB, cpu=0, mem=0),
    ]
    guests = [
        Guest(
            vmid=100, sid="vm:100", type="qemu", name="web<1>", node="pve1", status="running",
            ha=HaConfig(state="started"), maxcpu=4, maxmem=8 * GIB, cpu=3, mem=6 * GIB,
        ),
        Guest(
            vmid=200, sid="ct:200", type="lxc", name="db & co", node="pve1", status="running",
            ha=HaConfig(state="started"), maxcpu=2, maxmem=4 * GIB, cpu=1, mem=2 * GIB,
        ),
    ]  # fmt: skip
    issues = [
        Finding("rrd-missing", "pve-vm-9.0/300", "no RRD file", "warning"),
        Finding("rrd-missing", "pve-vm-9.0/301", "no RRD file", "warning"),
        Finding("config-parse", "/etc/pve/ha/rules.cfg:7", "bad line", "error"),
    ]
    return Snapshot(
        timestamp=int(FINISHED_AT) - 30,
        nodes=nodes,
        guests=guests,
        crs=Crs(ha="dynamic", auto_rebalance=True, threshold=30, hold_duration=3, margin=10),
        issues=issues,
        usage_view=usage_view,
        cluster="lab",
    )


def make_smoothed(snapshot: Snapshot) -> Snapshot:
    """The same cluster with ewma usage: pve1 at 8 cores / 32 GiB, the rest unchanged."""
    nodes = [replace(n) for n in snapshot.nodes]
    nodes[0] = replace(nodes[0], cpu=8, mem=32 * GIB)
    return replace(snapshot, nodes=nodes, usage_view="ewma")


def make_result(n_moves: int = 2, imbalance: float = 0.4) -> RoundResult:
    moves = [
        Move(1, "vm:100", "pve1", "pve2", imbalance_after=0.2, cost_seconds=42.0,
             members=["vm:100"], reason="best <move>"),
        Move(2, "ct:200", "pve1", "pve2", imbalance_after=0.1, cost_seconds=7.5,
             members=["ct:200"]),
    ][:n_moves]  # fmt: skip
    top = [Move(1, "vm:100", "pve1", "pve2", imbalance_after=0.2, cost_seconds=42.0)]
    return RoundResult(
        imbalance=imbalance,
        imbalance_cv=0.8,
        triggered=True,
        reason="above threshold for 3 rounds",
        threshold=30.0,
        margin=10.0,
        hold_count=3,
        moves=moves,
        top_moves=top,
        imbalance_after=0.1 if n_moves else None,
    )


def make_round(**overrides: object) -> PublishedRound:
    snapshot = make_snapshot()
    options: dict[str, object] = {
        "finished_at": FINISHED_AT,
        "duration_s": 1.25,
        "smoothed_usage": make_smoothed(snapshot),
        "automation_enabled": True,
    }
    options.update(overrides)
    return PublishedRound.create(snapshot, make_result(), **options)  # type: ignore[arg-type]


def samples_by_name(exposition: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parsed exposition: sample name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def single(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    (entry,) = samples[name]
    return entry[1]


def request(
    port: int,
    method: str = "GET",
    path: str = "/",
    *,
    auth: tuple[str, str] | None = None,
    tls_context: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, headers, body)."""
    if tls_context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=10, context=tls_context
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=10)
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()
