"""The PVE API client: token auth, TLS verification, failover, retries, secret hygiene."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from pveapi import (
    ApiToken,
    PveApiClient,
    PveApiError,
    PveAuthError,
    PveConnectionError,
    Upid,
    parse_upid,
)
from simulator.api_server import SimulatedApiServer
from simulator.cluster import SimulatedCluster, simulate_cluster
from tests.test_simulator_api import make_cert

SECRET = "d6f1c0de-7a11-4e55-9bad-5ec12e7secret"
TOKEN = f"root@pam!rebalancer={SECRET}"
WRONG_SECRET = "wrong-b1ab-4e55-9bad-notthesecret"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCluster:
    return simulate_cluster(
        tmp_path_factory.mktemp("sim") / "c", 3, 8, days=0.05, seed=2, workers=1
    )


@pytest.fixture(scope="module")
def server(sim: SimulatedCluster, tls: tuple[Path, Path]):
    cert, key = tls
    with SimulatedApiServer(sim, TOKEN, cert=cert, key=key) as running:
        yield running


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client(hosts: list[str], cert: Path | None, token: str = TOKEN, **kw) -> PveApiClient:
    return PveApiClient(hosts, ApiToken.parse(token), ca_bundle=cert, **kw)


def test_token_parsing_and_repr_hide_the_secret() -> None:
    token = ApiToken.parse(TOKEN)
    assert (token.user, token.token_id, token.secret) == ("root@pam", "rebalancer", SECRET)
    assert SECRET not in repr(token)
    assert SECRET not in str(token)
    assert token.ident == "root@pam!rebalancer"
    for bad in ("root@pam=x", "root!t=x", "root@pam!t=", "nonsense"):
        with pytest.raises(ValueError, match="USER@REALM!TOKENID=SECRET") as caught:
            ApiToken.parse(bad)
        assert "x" not in str(caught.value).replace("TOKENID", "")


def test_upid_round_trip() -> None:
    upid = Upid("pve1", 0x1A2B, 0x99, 1_767_225_600, "qmigrate", "100", "root@pam!t")
    text = str(upid)
    assert text == "UPID:pve1:00001A2B:00000099:6955B900:qmigrate:100:root@pam!t:"
    assert parse_upid(text) == upid
    with pytest.raises(ValueError, match="not a UPID"):
        parse_upid("UPID:broken")


def test_get_with_token_and_custom_port(server: SimulatedApiServer, tls) -> None:
    api = client([server.address], tls[0])
    status = api.get("/cluster/status")
    assert status[0]["type"] == "cluster"
    assert api.get("cluster/resources", type="node")[0]["type"] == "node"
    assert SECRET not in repr(api)


def test_failover_to_the_next_host(server: SimulatedApiServer, tls, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    dead = f"127.0.0.1:{closed_port()}"
    sleeps: list[float] = []
    api = client([dead, server.address], tls[0], sleep=sleeps.append)
    assert api.get("/cluster/status")[0]["id"] == "cluster"
    assert sleeps == []
    assert api.get("/cluster/status")  # the good host is now preferred
    only_dead = client([dead], tls[0], retries=2, backoff_s=0.25, sleep=sleeps.append)
    with pytest.raises(PveConnectionError) as caught:
        only_dead.get("/cluster/status")
    assert sleeps == [0.25, 0.5]
    assert dead in str(caught.value)
    assert "/cluster/status" in str(caught.value)
    assert any(dead in r.getMessage() for r in caplog.records)  # the failover is logged
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_5xx_is_retried_for_get_but_not_for_post(server: SimulatedApiServer, sim, tls) -> None:
    node = sim.node_names[0]
    server.fail_rrddata.add(node)
    sleeps: list[float] = []
    api = client([server.address], tls[0], retries=2, backoff_s=0.1, sleep=sleeps.append)
    try:
        with pytest.raises(PveApiError) as caught:
            api.get(f"/nodes/{node}/rrddata", timeframe="hour")
    finally:
        server.fail_rrddata.discard(node)
    assert caught.value.status == 500
    assert caught.value.host == server.address
    assert sleeps == [0.1, 0.2]
    sleeps.clear()
    with pytest.raises(PveApiError) as refused:
        api.post("/cluster/ha/resources/vm:99999/migrate", node=node)
    assert refused.value.status == 500
    assert sleeps == []


def test_401_is_an_auth_error_without_the_secret(server: SimulatedApiServer, tls, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    api = client([server.address], tls[0], token=f"root@pam!rebalancer={WRONG_SECRET}")
    with pytest.raises(PveAuthError) as caught:
        api.get("/cluster/status")
    error = caught.value
    assert error.status == 401
    assert server.address in str(error)
    assert "/cluster/status" in str(error)
    for text in (str(error), repr(error), repr(api), *(r.getMessage() for r in caplog.records)):
        assert WRONG_SECRET not in text
        assert SECRET not in text


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_by_default(server: SimulatedApiServer, tls, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    without_ca = client([server.address], None, retries=0)
    with pytest.raises(PveConnectionError, match="TLS verification failed") as caught:
        without_ca.get("/cluster/status")
    assert SECRET not in str(caught.value)
    insecure = PveApiClient([server.address], ApiToken.parse(TOKEN), verify_tls=False)
    assert insecure.get("/cluster/status")
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_a_different_ca_fails_too(server: SimulatedApiServer, tmp_path: Path) -> None:
    other_cert, _ = make_cert(tmp_path)
    with pytest.raises(PveConnectionError, match="certificate verify failed"):
        client([server.address], other_cert, retries=0).get("/cluster/status")


def test_task_polling(server: SimulatedApiServer, sim: SimulatedCluster, tls) -> None:
    guest = next(g for g in sim.spec.guests if g.running and g.kind == "qemu")
    target = next(n for n in sim.node_names if n != guest.node)
    api = client([server.address], tls[0])
    upid = api.post(f"/nodes/{guest.node}/qemu/{guest.vmid}/migrate", target=target, online=True)
    first = api.task_status(upid)
    assert first.running
    assert not first.ok

    def advance(_seconds: float) -> None:
        with server.lock:
            sim.advance(60)

    waiting = PveApiClient([server.address], ApiToken.parse(TOKEN), ca_bundle=tls[0], sleep=advance)
    done = waiting.wait_task(upid, timeout_s=60, poll_s=0)
    assert done.ok
    assert done.exitstatus == "OK"


def test_errors_carry_no_chained_library_exception(server: SimulatedApiServer, tls) -> None:
    api = client([server.address], tls[0], token=f"root@pam!rebalancer={WRONG_SECRET}")
    with pytest.raises(PveAuthError) as caught:
        api.get("/cluster/status")
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    dead = client([f"127.0.0.1:{closed_port()}"], tls[0], retries=0)
    with pytest.raises(PveConnectionError) as refused:
        dead.get("/cluster/status")
    assert refused.value.__context__ is None


def test_post_fails_over_when_the_first_host_is_down(server, sim, tls) -> None:
    guest = next(g for g in sim.spec.guests if g.running and g.kind == "lxc")
    target = next(n for n in sim.node_names if n != guest.node)
    api = client([f"127.0.0.1:{closed_port()}", server.address], tls[0])
    upid = api.migrate_guest(guest.node, "lxc", guest.vmid, target)
    assert parse_upid(upid).type == "vzmigrate"
    assert sim.migrations[guest.vmid].target == target
    ha_guest = next(
        g
        for g in sim.spec.guests
        if g.ha_state == "started" and g.running and g.vmid not in sim.migrations
    )
    ha_target = next(n for n in sim.node_names if n != ha_guest.node)
    ha_upid = api.ha_migrate(ha_guest.sid, ha_target, relocate=ha_guest.kind == "lxc")
    assert ha_upid is not None
    assert parse_upid(ha_upid).id == str(ha_guest.vmid)
    with server.lock:
        sim.advance(600)
    assert api.task_status(upid).ok
    assert api.task_status(ha_upid).ok


def test_a_silent_server_times_out_and_post_is_not_resent(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        sleeps: list[float] = []
        api = client([host], None, timeout_s=0.3, retries=1, backoff_s=0.0, sleep=sleeps.append)
        with pytest.raises(PveConnectionError, match=r"Timeout|timed out"):
            api.get("/cluster/status")
        assert sleeps == [0.0]
        sleeps.clear()
        with pytest.raises(PveConnectionError):
            api.post("/nodes/pve1/qemu/100/migrate", target="pve2")
        assert sleeps == []
    assert all(SECRET not in r.getMessage() for r in caplog.records)
