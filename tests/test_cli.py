"""The pve-rebalancer command line, run in-process on a simulated cluster."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from cli.main import main
from model import Snapshot
from model.snapshot import SCHEMA_PATH
from simulator.cluster import SimulatedCluster, simulate_cluster


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCluster:
    return simulate_cluster(tmp_path_factory.mktemp("cli") / "c", 5, 60, days=0.25, seed=1)


def source_args(sim: SimulatedCluster) -> list[str]:
    return [
        "--root",
        str(sim.etc_root),
        "--rrd-dir",
        str(sim.rrd_root),
        "--now",
        str(sim.now),
        "--status-dump",
        str(sim.dump_path),
    ]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_snapshot_json_is_valid(sim: SimulatedCluster, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["snapshot", *source_args(sim), "--format", "json"], capsys)
    assert status == 0
    document = json.loads(out)
    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))
    assert len(document["guests"]) == 60
    assert document["usage_view"] == "ewma"


def test_snapshot_table_names_every_node(
    sim: SimulatedCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["snapshot", *source_args(sim), "--usage", "p95"], capsys)
    assert status == 0
    for name in sim.node_names:
        assert f"\n{name} " in out
    assert "usage view p95" in out


def test_missing_root_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        ["snapshot", "--root", str(tmp_path / "none"), "--rrd-dir", str(tmp_path)], capsys
    )
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "does not exist" in err


def test_bad_window_is_a_one_line_error(
    sim: SimulatedCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(["snapshot", *source_args(sim), "--window", "soon"], capsys)
    assert status == 2
    assert "not a duration" in err


def write_snapshot(sim: SimulatedCluster, path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    status, out, _ = run(["snapshot", *source_args(sim), "--format", "json"], capsys)
    assert status == 0
    path.write_text(out)
    return path


@pytest.mark.parametrize("method", ["bruteforce", "topsis", "greedy", "optimal"])
def test_plan_json_has_the_documented_fields(
    sim: SimulatedCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    snap = write_snapshot(sim, tmp_path / "s.json", capsys)
    status, out, _ = run(
        [
            "plan",
            "--snapshot",
            str(snap),
            "--method",
            method,
            "--threshold",
            "5",
            "--margin",
            "1",
            "--max-moves",
            "3",
            "--scope",
            "all",
            "--format",
            "json",
        ],
        capsys,
    )
    assert status == 0
    result = json.loads(out)
    assert 0.0 <= result["imbalance"] <= 1.0
    assert result["imbalance_cv"] >= result["imbalance"]
    assert result["triggered"] is True
    assert result["reason"]
    assert result["threshold"] == 5.0
    # TOPSIS ranks by its four criteria; the CRS then drops a winner that misses the margin
    fewest = 0 if method == "topsis" else 1
    assert fewest <= len(result["moves"]) <= (1 if method in ("bruteforce", "topsis") else 3)
    for move in result["moves"]:
        assert {"sid", "source", "target", "imbalance_after", "cost_seconds"} <= set(move)
        assert move["source"] != move["target"]
        assert move["imbalance_after"] < result["imbalance"]
    assert {"candidates", "scoring", "selection"} <= set(result["timings"])


def test_plan_follows_the_snapshot_crs_without_flags(
    sim: SimulatedCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = write_snapshot(sim, tmp_path / "s.json", capsys)
    crs = Snapshot.load(snap).crs
    status, out, _ = run(["plan", "--snapshot", str(snap), "--format", "json"], capsys)
    assert status == 0
    result = json.loads(out)
    assert result["threshold"] == crs.threshold
    assert result["margin"] == crs.margin
    assert result["method"] == crs.method


def test_plan_runs_on_a_live_source(
    sim: SimulatedCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["plan", *source_args(sim), "--crs-compatible"], capsys)
    assert status == 0
    assert out.startswith("imbalance ")


def test_place_ranks_usable_nodes(
    sim: SimulatedCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = write_snapshot(sim, tmp_path / "s.json", capsys)
    guest = next(g for g in Snapshot.load(snap).guests if g.status == "stopped")
    status, out, _ = run(
        ["place", "--snapshot", str(snap), "--guest", guest.sid, "--format", "json"], capsys
    )
    assert status == 0
    ranking = json.loads(out)
    assert ranking["guest"] == guest.sid
    scores = [n["score"] for n in ranking["nodes"]]
    assert scores
    assert scores == sorted(scores, reverse=ranking["mode"] != "basic")
    assert {n["node"] for n in ranking["nodes"]} <= set(sim.node_names)


def test_place_unknown_guest_is_an_error(
    sim: SimulatedCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = write_snapshot(sim, tmp_path / "s.json", capsys)
    status, _, err = run(["place", "--snapshot", str(snap), "--guest", "vm:4242"], capsys)
    assert status == 2
    assert "vm:4242" in err


def test_simulate_cluster_writes_the_real_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "sim"
    status, out, _ = run(
        [
            "simulate-cluster",
            "--out",
            str(out_dir),
            "--nodes",
            "3",
            "--guests",
            "12",
            "--days",
            "0.1",
            "--seed",
            "5",
        ],
        capsys,
    )
    assert status == 0
    assert (out_dir / "etc" / "pve" / ".vmlist").is_file()
    assert len(list((out_dir / "rrd" / "pve-node-9.0").iterdir())) == 3
    assert len(list((out_dir / "rrd" / "pve-vm-9.0").iterdir())) == 12
    assert "pve-rebalancer snapshot" in out


def test_demo_once_prints_the_decisions_and_stops(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["demo", "--nodes", "4", "--guests", "40", "--once"], capsys)
    assert status == 0
    assert "== collected snapshot" in out
    assert "as the PVE CRS would decide" in out
    assert "imbalance " in out
    assert "the service on the evolving cluster" not in out


def test_demo_goes_on_as_the_service(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pve_rebalancer.service")
    argv = [
        "demo",
        "--nodes",
        "3",
        "--guests",
        "20",
        "--rounds",
        "2",
        "--interval",
        "0.5",
        "--port",
        "0",
    ]
    status, out, _ = run(argv, capsys)
    assert status == 0
    assert "the service on the evolving cluster" in out
    assert "metrics" in out
    rounds = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round ")]
    assert len(rounds) >= 2
    assert all("imbalance " in line for line in rounds)
