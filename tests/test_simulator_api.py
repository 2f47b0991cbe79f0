"""The simulator's PVE API server: auth, JSON shapes, rrddata, migrations and task status."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from pveapi.tasks import parse_upid
from simulator.api_server import SimulatedApiServer
from simulator.cluster import SimulatedCluster, simulate_cluster

TOKEN = "root@pam!rebalancer=0b5e55ed-simulator-secret"
AUTH = {"Authorization": f"PVEAPIToken={TOKEN}"}


def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def sim(tmp_path: Path) -> SimulatedCluster:
    return simulate_cluster(tmp_path / "c", 3, 12, days=0.05, seed=5, workers=1)


@pytest.fixture
def server(sim: SimulatedCluster):
    with SimulatedApiServer(sim, TOKEN) as running:
        yield running


def url(server: SimulatedApiServer, path: str) -> str:
    return f"http://{server.address}/api2/json{path}"


def get(server: SimulatedApiServer, path: str, **params: str) -> requests.Response:
    return requests.get(url(server, path), headers=AUTH, params=params, timeout=10)


def post(server: SimulatedApiServer, path: str, **data: str) -> requests.Response:
    return requests.post(url(server, path), headers=AUTH, data=data, timeout=10)


def test_requests_without_or_with_a_wrong_token_get_401(server: SimulatedApiServer) -> None:
    assert requests.get(url(server, "/cluster/status"), timeout=10).status_code == 401
    wrong = {"Authorization": "PVEAPIToken=root@pam!rebalancer=guess"}
    reply = requests.get(url(server, "/cluster/status"), headers=wrong, timeout=10)
    assert reply.status_code == 401
    assert reply.json() == {"data": None, "message": "invalid token value"}
    assert get(server, "/cluster/status").status_code == 200


def test_read_endpoints_answer_pve_shapes(server: SimulatedApiServer, sim: SimulatedCluster):
    status = get(server, "/cluster/status").json()["data"]
    assert status[0] == {
        "type": "cluster", "id": "cluster", "name": sim.spec.name, "nodes": 3,
        "quorate": 1, "version": 1,
    }  # fmt: skip
    assert [s["name"] for s in status[1:]] == sim.node_names
    resources = get(server, "/cluster/resources").json()["data"]
    kinds = {r["type"] for r in resources}
    assert kinds == {"node", "qemu", "lxc", "storage"}
    vms = get(server, "/cluster/resources", type="vm").json()["data"]
    assert sorted(v["vmid"] for v in vms) == sorted(g.vmid for g in sim.spec.guests)
    for vm in vms:
        assert 0 <= vm["cpu"] <= 1
        assert vm["status"] in ("running", "stopped")
    options = get(server, "/cluster/options").json()["data"]
    assert options["crs"]["ha"] == "dynamic"
    manager = get(server, "/cluster/ha/status/manager_status").json()["data"]
    assert set(manager["manager_status"]["node_status"]) == set(sim.node_names)
    rules = get(server, "/cluster/ha/rules").json()["data"]
    assert [r["rule"] for r in rules] == [r.id for r in sim.spec.rules]
    ha = get(server, "/cluster/ha/resources").json()["data"]
    assert {h["sid"] for h in ha} == {g.sid for g in sim.spec.guests if g.ha_state}


def test_rrddata_rows_end_at_now(server: SimulatedApiServer, sim: SimulatedCluster):
    node = sim.node_names[0]
    rows = get(server, f"/nodes/{node}/rrddata", timeframe="hour", cf="AVERAGE").json()["data"]
    assert [r["time"] for r in rows] == list(range(sim.now - 3540, sim.now + 1, 60))
    assert {"cpu", "maxcpu", "memused", "memtotal"} <= set(rows[-1])
    week = get(server, f"/nodes/{node}/rrddata", timeframe="week", cf="MAX").json()["data"]
    assert [r["time"] for r in week] == list(range(sim.now - 335 * 1800, sim.now + 1, 1800))
    assert "cpu" not in week[0]  # before the simulated history: unknown values are left out
    guest = sim.spec.guests[0]
    path = f"/nodes/{guest.node}/{guest.kind}/{guest.vmid}/rrddata"
    assert get(server, path, timeframe="hour").status_code == 200
    assert get(server, path, timeframe="fortnight").status_code == 400
    server.fail_rrddata.add(str(guest.vmid))
    failed = get(server, path, timeframe="hour")
    assert failed.status_code == 500
    assert "RRD error" in failed.json()["message"]
    other = sim.node_names[1] if guest.node == sim.node_names[0] else sim.node_names[0]
    wrong_node = f"/nodes/{other}/{guest.kind}/{guest.vmid}/rrddata"
    assert get(server, wrong_node, timeframe="hour").status_code == 500


def running_guest(sim: SimulatedCluster, kind: str, ha: bool | None = None):
    return next(
        g
        for g in sim.spec.guests
        if g.kind == kind and g.running and (ha is None or (g.ha_state is not None) == ha)
    )


def other_node(sim: SimulatedCluster, node: str) -> str:
    return next(n for n in sim.node_names if n != node)


def task(server: SimulatedApiServer, upid: str) -> dict[str, Any]:
    node = parse_upid(upid).node
    data: dict[str, Any] = get(server, f"/nodes/{node}/tasks/{upid}/status").json()["data"]
    return data


@pytest.mark.parametrize("kind", ["qemu", "lxc"])
def test_guest_migration_runs_until_simulated_time_passes(
    server: SimulatedApiServer, sim: SimulatedCluster, kind: str
) -> None:
    guest = running_guest(sim, kind)
    source, target = guest.node, other_node(sim, guest.node)
    extra = {"online": "1"} if kind == "qemu" else {"restart": "1"}
    reply = post(server, f"/nodes/{source}/{kind}/{guest.vmid}/migrate", target=target, **extra)
    assert reply.status_code == 200
    upid = reply.json()["data"]
    parsed = parse_upid(upid)
    assert (parsed.node, parsed.type, parsed.id) == (
        source, "qmigrate" if kind == "qemu" else "vzmigrate", str(guest.vmid),
    )  # fmt: skip
    assert task(server, upid)["status"] == "running"
    with server.lock:
        sim.advance(600)
    status = task(server, upid)
    assert status["status"] == "stopped"
    assert status["exitstatus"] == "OK"
    vms = get(server, "/cluster/resources", type="vm").json()["data"]
    assert next(v for v in vms if v["vmid"] == guest.vmid)["node"] == target


def test_ha_migrate_and_a_refused_move(server: SimulatedApiServer, sim: SimulatedCluster):
    guest = running_guest(sim, "qemu", ha=True)
    target = other_node(sim, guest.node)
    upid = post(server, f"/cluster/ha/resources/{guest.sid}/migrate", node=target).json()["data"]
    assert parse_upid(upid).type == "hamigrate"
    assert task(server, upid)["status"] == "running"
    manager = get(server, "/cluster/ha/status/manager_status").json()["data"]
    assert manager["manager_status"]["service_status"][guest.sid]["state"] == "migrate"
    again = post(server, f"/cluster/ha/resources/{guest.sid}/relocate", node=target)
    refused = task(server, again.json()["data"])
    assert refused["status"] == "stopped"
    assert "already moving" in refused["exitstatus"]
    assert post(server, "/cluster/ha/resources/vm:99999/migrate", node=target).status_code == 500
    missing = post(server, f"/cluster/ha/resources/{guest.sid}/migrate")
    assert missing.status_code == 400


def test_old_files_come_first_while_they_cover_the_start(tmp_path: Path) -> None:
    legacy = simulate_cluster(tmp_path / "l", 2, 3, days=0.5, seed=1, legacy_files=True, workers=1)
    with SimulatedApiServer(legacy, TOKEN) as server:
        guest = legacy.spec.guests[0]
        path = f"/nodes/{guest.node}/{guest.kind}/{guest.vmid}/rrddata"
        rows = get(server, path, timeframe="week").json()["data"]
        hour = get(server, path, timeframe="hour").json()["data"]
    times = [r["time"] for r in rows]
    assert times == sorted(times)
    assert len(times) - len(set(times)) <= 1  # PVE repeats the seam row (old end, new start)
    steps = {b - a for a, b in itertools.pairwise(times)}
    assert {1800, 10800} <= steps  # old 3-hour rows, then the 9.0 file's 30-minute rows
    assert [r["time"] for r in hour] == list(range(legacy.now - 3540, legacy.now + 1, 60))


def test_unknown_paths_and_pve8_rules(sim: SimulatedCluster) -> None:
    with SimulatedApiServer(sim, TOKEN, pve_major=8) as server:
        assert get(server, "/cluster/ha/rules").status_code == 501
        assert get(server, "/cluster/nothing").status_code == 501
        assert get(server, "/cluster/ha/groups").json() == {"data": []}


def test_tls_server_and_port_zero(sim: SimulatedCluster, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    with SimulatedApiServer(sim, TOKEN, cert=cert, key=key) as server:
        assert server.port > 0
        reply = requests.get(
            f"https://{server.address}/api2/json/cluster/status",
            headers=AUTH, verify=str(cert), timeout=10,
        )  # fmt: skip
        assert reply.status_code == 200
    with pytest.raises(RuntimeError):
        _ = server.port
