"""The actuator end to end: planned moves carried out through the PVE API client against the
simulator's API server (TLS verified with a CA made by the ``openssl`` CLI), checked again
before each move in snapshots collected from the simulated cluster's files."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from collector.snapshot_builder import CollectOptions, build_snapshot
from exporters.actuator import Actuator, ActuatorConfig
from exporters.actuator_pveapi import PveApiWriter
from exporters.state import RoundPublisher
from model.plan import Move
from model.snapshot import Guest, Node, Snapshot
from pveapi import ApiToken, PveApiClient
from simulator.api_server import SimulatedApiServer
from simulator.cluster import SimulatedCluster, simulate_cluster
from tests.test_actuator_fakes import make_result

TOKEN = "root@pam!rebalancer=5f0c2b8e-9d41-4c3a-8f7e-0123456789ab"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def collect(cluster: SimulatedCluster) -> Snapshot:
    options = CollectOptions(now=cluster.now, status_dump=cluster.dump_path)
    return build_snapshot(cluster.etc_root, cluster.rrd_root, options)


def pick(snapshot: Snapshot, *, type_: str, ha: bool, taken: set[str]) -> Guest:
    in_rules = {sid for rule in snapshot.rules for sid in rule.resources}
    for guest in snapshot.guests:
        if (
            guest.type == type_
            and (guest.ha is not None) == ha
            and guest.status == "running"
            and not guest.template
            and guest.sid not in in_rules
            and guest.node not in taken
        ):
            return guest
    raise AssertionError(f"no running {type_} guest (ha={ha}) in the simulated cluster")


def test_planned_moves_end_on_their_targets(tmp_path: Path, tls_files: tuple[Path, Path]):
    cluster = simulate_cluster(tmp_path / "cluster", 3, 24, days=0.05, seed=3, workers=1)
    cert, key = tls_files
    server = SimulatedApiServer(cluster, TOKEN, cert=cert, key=key).start()
    try:
        client = PveApiClient([server.address], ApiToken.parse(TOKEN), ca_bundle=cert)
        plan_snapshot = collect(cluster)
        nodes = [n.name for n in plan_snapshot.nodes]
        vm = pick(plan_snapshot, type_="qemu", ha=False, taken=set())
        ha_vm = pick(plan_snapshot, type_="qemu", ha=True, taken=set())
        ct = pick(plan_snapshot, type_="lxc", ha=False, taken=set())
        moves = [
            Move(i + 1, g.sid, g.node, next(n for n in nodes if n != g.node), 0.3 - i * 0.05,
                 reason="e2e")
            for i, g in enumerate([vm, ha_vm, ct])
        ]  # fmt: skip

        def fresh() -> Snapshot:
            with server.lock:
                return collect(cluster)

        def sleep(_: float) -> None:
            with server.lock:
                cluster.advance(60)

        publisher = RoundPublisher()
        events: list[tuple[Any, ...]] = []
        actuator = Actuator(
            PveApiWriter(client),
            fresh,
            ActuatorConfig(
                enabled=True,
                concurrency=2,
                allow_containers=True,
                allow_ha_when_crs_auto_rebalance=True,
                task_timeout_s=3600,
            ),
            recorder=publisher,
            on_migration=lambda *args: events.append(args),
            monotonic=lambda: float(cluster.now),
            sleep=sleep,
        )
        report = actuator.execute(plan_snapshot, make_result(moves))
    finally:
        server.stop()

    assert report.stopped is None, report.stopped
    assert [(o.move.sid, o.state) for o in report.outcomes] == [(m.sid, "succeeded") for m in moves]
    assert [c.path for c in report.calls] == [
        f"/nodes/{vm.node}/qemu/{vm.vmid}/migrate",
        f"/cluster/ha/resources/{ha_vm.sid}/migrate",
        f"/nodes/{ct.node}/lxc/{ct.vmid}/migrate",
    ]
    for move in moves:
        vmid = int(move.sid.split(":")[1])
        assert cluster.spec.guests[cluster.guest_index(vmid)].node == move.target
        assert collect(cluster).guest(move.sid).node == move.target  # type: ignore[union-attr]
    assert not cluster.migrations
    counts = publisher.migrations.view()
    assert counts[("started", "qemu")] == counts[("succeeded", "qemu")] == 2
    assert counts[("started", "lxc")] == counts[("succeeded", "lxc")] == 1
    assert [e[4] for e in events].count("succeeded") == 3
    assert all(str(e[3]).startswith("UPID:") for e in events)


def test_moves_refused_by_the_cluster_are_failed_and_stop_the_plan(
    tmp_path: Path, tls_files: tuple[Path, Path]
):
    cluster = simulate_cluster(tmp_path / "cluster", 3, 12, days=0.05, seed=4, workers=1)
    cert, key = tls_files
    with SimulatedApiServer(cluster, TOKEN, cert=cert, key=key) as server:
        client = PveApiClient([server.address], ApiToken.parse(TOKEN), ca_bundle=cert)
        plan_snapshot = collect(cluster)
        vm = pick(plan_snapshot, type_="qemu", ha=False, taken=set())
        # the cluster knows no node "ghost": the plan's snapshot pretends it does
        ghost = Node("ghost", True, False, 8, 8e9, 0, 0)
        planned = replace(plan_snapshot, nodes=[*plan_snapshot.nodes, ghost])

        def fresh() -> Snapshot:
            current = collect(cluster)
            current.nodes.append(ghost)
            return current

        actuator = Actuator(PveApiWriter(client), fresh, ActuatorConfig(enabled=True),
                            sleep=lambda _: None)  # fmt: skip
        other = pick(plan_snapshot, type_="qemu", ha=False, taken={vm.node})
        moves = [Move(1, vm.sid, vm.node, "ghost", 0.2), Move(2, other.sid, other.node,
                                                                 vm.node, 0.1)]  # fmt: skip
        report = actuator.execute(planned, make_result(moves))
    assert [o.state for o in report.outcomes] == ["failed"]
    assert "unknown target node 'ghost'" in (report.outcomes[0].error or "")
    assert [m.sid for m in report.not_started] == [other.sid]
    assert TOKEN.split("=")[1] not in repr(report)
    assert cluster.spec.guests[cluster.guest_index(vm.vmid)].node == vm.node
