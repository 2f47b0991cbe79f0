"""The snapshot and round-result contracts: JSON round trips and the JSON Schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from model import Crs, Finding, Guest, HaConfig, Node, Rule, Snapshot, Storage
from model.plan import Move, NodeLoad, RoundResult
from model.snapshot import SCHEMA_PATH

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def sample_snapshot() -> Snapshot:
    return Snapshot(
        timestamp=1_760_000_000,
        cluster="lab",
        usage_view="ewma",
        nodes=[
            Node("pve1", True, False, 16, 64 * 2**30, 3.5, 20 * 2**30, "online"),
            Node("pve2", True, True, 8, 32 * 2**30, 0.5, 4 * 2**30, "maintenance"),
        ],
        guests=[
            Guest(
                100,
                "vm:100",
                "qemu",
                "db1",
                "pve1",
                "running",
                HaConfig("started", True, "started"),
                4,
                8 * 2**30,
                1.25,
                6 * 2**30,
                ["db", "prod"],
                pool="prod",
                maxdisk=32 * 2**30,
                local_disk=True,
            ),
            Guest(200, "ct:200", "lxc", "web", "pve2", "stopped", None, 2, 2**29, None, None),
        ],
        rules=[
            Rule("keep-db", "node-affinity", ["vm:100"], {"pve1": 2, "pve2": 1}, strict=True),
            Rule("apart", "resource-affinity", ["vm:100", "ct:200"], affinity="negative"),
        ],
        crs=Crs(ha="dynamic", auto_rebalance=True, threshold=40.0, margin=5.0),
        issues=[Finding("rrd-missing", "vm:101", "no RRD file", "warning")],
        storages=[Storage("pve1", "local", 100.0, 50.0)],
    )


def test_snapshot_round_trips_through_json_and_matches_the_schema() -> None:
    snap = sample_snapshot()
    data = json.loads(snap.dumps())
    jsonschema.validate(data, SCHEMA)
    assert Snapshot.loads(snap.dumps()) == snap


def test_crs_uses_pve_key_names_and_integer_flags() -> None:
    data = sample_snapshot().to_json()["crs"]
    assert data == {
        "ha": "dynamic",
        "ha-rebalance-on-start": 0,
        "ha-auto-rebalance": 1,
        "ha-auto-rebalance-threshold": 40.0,
        "ha-auto-rebalance-method": "bruteforce",
        "ha-auto-rebalance-hold-duration": 3,
        "ha-auto-rebalance-margin": 5.0,
    }
    assert Crs.from_json(data) == sample_snapshot().crs
    assert Crs.from_json({}) == Crs()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("nodes", 0, "cpu"), -1),
        (("guests", 0, "sid"), "qemu/100"),
        (("guests", 0, "type"), "vm"),
        (("crs", "ha"), "fancy"),
        (("issues", 0, "severity"), "fatal"),
    ],
)
def test_schema_rejects_malformed_snapshots(path: tuple[object, ...], value: object) -> None:
    data = json.loads(sample_snapshot().dumps())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def test_snapshot_refuses_nan() -> None:
    snap = sample_snapshot()
    snap.nodes[0].cpu = float("nan")
    with pytest.raises(ValueError, match="Out of range float"):
        snap.dumps()


def test_round_result_round_trips() -> None:
    result = RoundResult(
        imbalance=0.31,
        imbalance_cv=0.44,
        triggered=True,
        reason="imbalance 31.0% above 30.0% for 3 rounds",
        threshold=30.0,
        margin=10.0,
        moves=[Move(1, "vm:100", "pve1", "pve2", 0.12, 8.5, ["vm:100"], 8.0)],
        node_loads=[NodeLoad("pve1", 3.0, 2.0, 16, 64, 0.3)],
        timings={"candidates": 1.5},
    )
    assert RoundResult.from_json(json.loads(result.dumps())) == result
