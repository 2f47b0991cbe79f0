"""The API collector source against the simulator's API server: the same snapshot as from files."""

from __future__ import annotations

import math
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from collector.api_source import (
    ApiCollectError,
    GuestDiskCache,
    build_snapshot_from_api,
    rrddata_frame,
    timeframe_for,
)
from collector.snapshot_builder import CollectOptions, build_snapshot
from model import Crs, Snapshot
from pveapi import ApiToken, PveApiClient
from simulator.api_server import SimulatedApiServer
from simulator.cluster import SimulatedCluster, simulate_cluster
from tests.test_simulator_api import make_cert

SECRET = "5ec2e7-api-source-token"
TOKEN = f"root@pam!collector={SECRET}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


def start(sim: SimulatedCluster, tls: tuple[Path, Path], **kw) -> SimulatedApiServer:
    return SimulatedApiServer(sim, TOKEN, cert=tls[0], key=tls[1], **kw).start()


def client(server: SimulatedApiServer, tls: tuple[Path, Path], **kw) -> PveApiClient:
    return PveApiClient([server.address], ApiToken.parse(TOKEN), ca_bundle=tls[0], **kw)


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def assert_same(api: Snapshot, files: Snapshot, *, newest: bool = True) -> None:
    assert api.timestamp == files.timestamp
    assert api.cluster == files.cluster
    assert api.crs == files.crs
    assert api.rules == files.rules
    assert [n.name for n in api.nodes] == [n.name for n in files.nodes]
    for a, f in zip(api.nodes, files.nodes, strict=True):
        assert (a.online, a.maintenance, a.ha_state) == (f.online, f.maintenance, f.ha_state)
        assert (a.maxcpu, a.maxmem) == (f.maxcpu, f.maxmem)
        for field in ("cpu", "mem", "cpu_last", "mem_last")[: 4 if newest else 2]:
            assert close(getattr(a, field), getattr(f, field)), (a.name, field)
    assert [g.sid for g in api.guests] == [g.sid for g in files.guests]
    for ag, fg in zip(api.guests, files.guests, strict=True):
        assert ag.local_disk == fg.local_disk, ag.sid
        same = replace(ag, cpu=fg.cpu, mem=fg.mem)
        assert same == fg
        assert close(ag.cpu, fg.cpu), (ag.sid, "cpu")
        assert close(ag.mem, fg.mem), (ag.sid, "mem")
    assert api.storages == files.storages


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tls):
    sim = simulate_cluster(tmp_path_factory.mktemp("v") / "c", 4, 20, days=0.1, seed=7, workers=1)
    server = start(sim, tls)
    yield sim, server
    server.stop()


@pytest.mark.parametrize("usage", ["ewma", "last", "max", "p95"])
def test_api_snapshot_equals_the_file_snapshot(served, tls, usage: str) -> None:
    sim, server = served
    options = CollectOptions(now=sim.now, status_dump=sim.dump_path, usage=usage)  # type: ignore[arg-type]
    api = build_snapshot_from_api(client(server, tls), options)
    files = build_snapshot(sim.etc_root, sim.rrd_root, options)
    assert_same(api, files)
    assert any(g.cpu is not None for g in api.guests)
    assert api.rules, "the simulated cluster has HA rules"
    assert api.issues == []
    assert {g.local_disk for g in api.guests} == {True, False}, "both kinds are simulated"
    assert api.storages


def test_placement_and_ha_state_follow_a_migration(tmp_path: Path, tls) -> None:
    sim = simulate_cluster(tmp_path / "c", 3, 10, days=0.05, seed=8, workers=1)
    server = start(sim, tls)
    try:
        guest = next(g for g in sim.spec.guests if g.running and g.ha_state == "started")
        target = next(n for n in sim.node_names if n != guest.node)
        with server.lock:
            sim.migrate(guest.vmid, target)
        moving = CollectOptions(now=sim.now, status_dump=sim.dump_path)
        during = build_snapshot_from_api(client(server, tls), moving)
        assert_same(during, build_snapshot(sim.etc_root, sim.rrd_root, moving))
        assert during.guest(guest.sid).ha.service_state == "migrate"  # type: ignore[union-attr]
        with server.lock:
            sim.advance(300)
        after = replace(moving, now=sim.now)
        moved = build_snapshot_from_api(client(server, tls), after)
        assert_same(moved, build_snapshot(sim.etc_root, sim.rrd_root, after))
        assert moved.guest(guest.sid).node == target  # type: ignore[union-attr]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCluster:
    return simulate_cluster(tmp_path_factory.mktemp("s") / "c", 3, 10, days=0.05, seed=4, workers=1)


def test_a_failing_guest_rrddata_is_a_finding(sim: SimulatedCluster, tls) -> None:
    guest = next(g for g in sim.spec.guests if g.running)
    server = start(sim, tls)
    server.fail_rrddata.add(str(guest.vmid))
    try:
        api = client(server, tls, retries=1, backoff_s=0.0)
        snap = build_snapshot_from_api(api, CollectOptions(now=sim.now))
    finally:
        server.stop()
    failed = [f for f in snap.issues if f.kind == "rrddata-failed"]
    assert [f.where for f in failed] == [guest.sid]
    assert "HTTP 500" in failed[0].message
    assert SECRET not in failed[0].message
    broken = snap.guest(guest.sid)
    assert broken is not None
    assert (broken.cpu, broken.mem, broken.status) == (None, None, "running")
    assert len(snap.guests) == len(sim.spec.guests)
    assert sum(g.cpu is not None for g in snap.guests) >= 1


class CountingClient:
    """A client that counts the config fetches."""

    def __init__(self, inner: PveApiClient) -> None:
        self.inner = inner
        self.configs = 0

    def get(self, path: str, **params: Any) -> Any:
        if path.endswith("/config"):
            self.configs += 1
        return self.inner.get(path, **params)


def test_a_failing_guest_config_is_a_finding(sim: SimulatedCluster, tls) -> None:
    files = build_snapshot(sim.etc_root, sim.rrd_root, CollectOptions(now=sim.now))
    local = next(g for g in files.guests if g.local_disk)
    server = start(sim, tls)
    server.fail_paths.add(f"/nodes/{local.node}/{local.type}/{local.vmid}/config")
    try:
        api = CountingClient(client(server, tls, retries=0))
        cache = GuestDiskCache()
        snap = build_snapshot_from_api(api, CollectOptions(now=sim.now), cache=cache)
        assert api.configs == len(sim.spec.guests)
        assert len(cache) == len(sim.spec.guests) - 1
        again = build_snapshot_from_api(api, CollectOptions(now=sim.now), cache=cache)
        assert api.configs == len(sim.spec.guests) + 1  # only the failed one is fetched again
    finally:
        server.stop()
    for current in (snap, again):
        failed = [f for f in current.issues if f.kind == "guest-config-failed"]
        assert [f.where for f in failed] == [local.sid]
        assert "HTTP 500" in failed[0].message
        assert SECRET not in failed[0].message
        assert current.guest(local.sid).local_disk is False  # type: ignore[union-attr]
        others = [(g.sid, g.local_disk) for g in current.guests if g.sid != local.sid]
        assert others == [(g.sid, g.local_disk) for g in files.guests if g.sid != local.sid]


def test_the_disk_cache_refetches_a_moved_guest(tmp_path: Path, tls) -> None:
    sim = simulate_cluster(tmp_path / "c", 3, 10, days=0.05, seed=8, workers=1)
    server = start(sim, tls)
    try:
        api = CountingClient(client(server, tls))
        cache = GuestDiskCache()
        build_snapshot_from_api(api, CollectOptions(now=sim.now), cache=cache)
        guest = next(g for g in sim.spec.guests if g.running and g.ha_state is None)
        target = next(n for n in sim.node_names if n != guest.node)
        with server.lock:
            sim.migrate(guest.vmid, target)
            sim.advance(300)
        before = api.configs
        options = CollectOptions(now=sim.now, status_dump=sim.dump_path)
        moved = build_snapshot_from_api(api, options, cache=cache)
        assert api.configs - before == 1
        assert moved.guest(guest.sid).node == target  # type: ignore[union-attr]
        assert_same(moved, build_snapshot(sim.etc_root, sim.rrd_root, options))
    finally:
        server.stop()


@pytest.mark.parametrize("pve_major", [9, 8])
def test_legacy_groups_become_node_affinity_rules(tmp_path: Path, tls, pve_major: int) -> None:
    sim = simulate_cluster(tmp_path / "c", 4, 20, days=0.05, seed=7, legacy_groups=True, workers=1)
    assert sim.spec.groups
    server = start(sim, tls, pve_major=pve_major)
    try:
        rules = client(server, tls).get("/cluster/ha/rules") if pve_major == 9 else []
        snap = build_snapshot_from_api(client(server, tls), CollectOptions(now=sim.now))
    finally:
        server.stop()
    files = build_snapshot(sim.etc_root, sim.rrd_root, CollectOptions(now=sim.now))
    from_groups = [r for r in files.rules if r.origin == "groups.cfg"]
    assert from_groups
    kinds = [i.kind for i in snap.issues]
    assert "api-endpoint-failed" not in kinds
    if pve_major == 9:  # the rules endpoint lists the groups as ha-group-* rules too
        assert any(r["rule"].startswith("ha-group-") for r in rules)
        assert snap.rules == files.rules
        assert "api-no-ha-rules" not in kinds
    else:
        assert snap.rules == from_groups
        assert "api-no-ha-rules" in kinds


def test_forecast_view_reads_the_week_of_30_minute_rows(served, tls) -> None:
    sim, server = served
    options = CollectOptions(now=sim.now, status_dump=sim.dump_path, usage="forecast")
    api = build_snapshot_from_api(client(server, tls), options)
    files = build_snapshot(sim.etc_root, sim.rrd_root, options)
    # the newest values differ on purpose: the file source reads them from the 1-min window
    # every round, the API source from the forecast's 30-min rows (one rrddata call per guest)
    assert_same(api, files, newest=False)
    assert {i.kind for i in api.issues} == {i.kind for i in files.issues}
    assert "forecast-fallback" in {i.kind for i in api.issues}


def test_an_unreachable_api_is_a_clear_error(tls) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = PveApiClient([f"127.0.0.1:{port}"], ApiToken.parse(TOKEN), retries=0)
    with pytest.raises(ApiCollectError, match=rf"127\.0\.0\.1:{port}: /cluster/status") as caught:
        build_snapshot_from_api(api, CollectOptions(now=0))
    assert SECRET not in str(caught.value)


def test_timeframe_covers_the_window() -> None:
    assert timeframe_for(3600) == "hour"
    assert timeframe_for(6 * 3600) == "day"
    assert timeframe_for(7 * 86400) == "week"
    assert timeframe_for(10**9) == "year"


def test_rrddata_rows_become_a_metric_frame() -> None:
    rows: list[dict[str, Any]] = [
        {"time": 120, "cpu": 0.5, "maxcpu": 4, "mem": 100},
        {"time": 60, "maxcpu": 4},
        {"time": 120, "cpu": 0.25, "maxcpu": 4, "mem": 200},  # the seam row again: it wins
        {"cpu": 1.0},  # no time: skipped
    ]
    frame = rrddata_frame("guest", "100", rows, ["cpu", "mem"])
    assert frame.columns == ["id", "time", "cpu", "mem"]
    assert frame.rows() == [("100", 60, None, None), ("100", 120, 1.0, 200.0)]
    assert rrddata_frame("node", "pve1", [], ["cpu"]).is_empty()


def test_failing_endpoints_are_findings_or_a_clear_error(sim: SimulatedCluster, tls) -> None:
    server = start(sim, tls)
    try:
        api = client(server, tls, retries=0)
        server.fail_paths |= {"/cluster/options", "/cluster/ha/status/manager_status", "/storage"}
        snap = build_snapshot_from_api(api, CollectOptions(now=sim.now))
        failed = {f.where: f for f in snap.issues if f.kind == "api-endpoint-failed"}
        assert set(failed) == {"/cluster/options", "/cluster/ha/status/manager_status", "/storage"}
        files = build_snapshot(sim.etc_root, sim.rrd_root, CollectOptions(now=sim.now))
        # without /storage the resources' shared flags decide: still the file source's answer
        assert [g.local_disk for g in snap.guests] == [g.local_disk for g in files.guests]
        assert "HTTP 500" in failed["/cluster/options"].message
        assert snap.crs == Crs()  # the defaults, as without datacenter.cfg
        assert len(snap.guests) == len(sim.spec.guests)
        assert all(n.ha_state is None for n in snap.nodes)
        server.fail_paths |= {"/cluster/ha/rules", "/cluster/ha/groups"}
        snap = build_snapshot_from_api(api, CollectOptions(now=sim.now))
        assert snap.rules == []
        assert "/cluster/ha/rules" in {f.where for f in snap.issues if f.severity == "error"}
        server.fail_paths.add("/cluster/resources")
        with pytest.raises(ApiCollectError, match="/cluster/resources"):
            build_snapshot_from_api(api, CollectOptions(now=sim.now))
    finally:
        server.stop()
