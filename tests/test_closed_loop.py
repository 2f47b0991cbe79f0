"""The closed loop (``pve-rebalancer simulate``): a short simulated span, audited.

5 nodes x 60 guests, 3 simulated hours at one round per 5 minutes: with actuation the
cluster is brought under the threshold and kept there without breaking a rule or the memory
headroom and without ping-pong; without actuation nothing moves; a restart in the middle
(state persisted as JSON) changes nothing. The auditor's checks are proven on hand-made
snapshots, so "no violation" in a run means something.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from balancer.options import BalancerOptions
from balancer.stability import BalancerState
from cli.closed_loop import Auditor, ClosedLoop, ScenarioEvent, plan_scenario
from cli.demo_service import cluster_crs
from cli.errors import CommandError
from cli.simulate_cmd import ProgressBar, register, report_table, simulate
from model import Guest, HaConfig, Node, Rule, Snapshot
from simulator.cluster import simulate_cluster

NODES, GUESTS, SEED, HOURS, STEP = 5, 60, 1, 3.0, 300
ROUNDS = int(HOURS * 3600 // STEP)
GIB = 2**30


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["simulate", *argv])


@pytest.fixture(scope="module")
def actuated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The command run end to end with --actuate --format json --plot."""
    plot = tmp_path_factory.mktemp("simulate") / "run.png"
    args = parse(
        [
            *("--hours", str(HOURS), "--seed", str(SEED), "--nodes", str(NODES)),
            *("--guests", str(GUESTS), "--step", str(STEP), "--actuate"),
            *("--format", "json", "--plot", str(plot)),
        ]
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.run(args) == 0
    return json.loads(out.getvalue()), plot


def moves_by_guest(report: dict[str, Any]) -> dict[str, list[int]]:
    times: dict[str, list[int]] = defaultdict(list)
    for move in report["moves"]:
        times[move["sid"]].append(move["time"])
    return times


def test_actuated_run_balances_without_breaking_rules_or_headroom(
    actuated: tuple[dict[str, Any], Path],
) -> None:
    report, _ = actuated
    assert report["rounds"] == ROUNDS
    assert report["failed_rounds"] == 0
    assert report["scenario"]["actuate"] is True
    assert report["migrations"] > 0
    assert report["gib_moved"] > 0
    assert 0 < report["observed_relocations"] <= report["migrations"]
    assert report["first_plan_time"] is not None
    assert report["rounds_under_threshold_after_first_plan"] >= 0.8
    first_rounds = report["timeline"][:3]
    assert all(r["imbalance"] * 100 > report["scenario"]["threshold_percent"] for r in first_rounds)
    assert report["rule_violations"] == []
    assert report["headroom_violations"] == []
    assert report["refused_moves"] == []


def test_no_guest_moves_twice_within_its_cooldown(actuated: tuple[dict[str, Any], Path]) -> None:
    report, _ = actuated
    cooldown = report["scenario"]["cooldown_s"]
    for sid, times in moves_by_guest(report).items():
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(gap >= cooldown for gap in gaps), (sid, times)
    assert not [p for p in report["ping_pong"] if p["kind"] == "within-cooldown"]


def test_scenario_events_happen(actuated: tuple[dict[str, Any], Path]) -> None:
    report, _ = actuated
    start = report["timeline"][0]["time"]
    maintenance = report["maintenance"]
    assert maintenance["node"] is not None
    assert maintenance["entered"] - start == pytest.approx(0.4 * HOURS * 3600, abs=2 * STEP)
    assert maintenance["left"] - start == pytest.approx(0.7 * HOURS * 3600, abs=2 * STEP)
    actions = {(e["action"], e["outcome"]) for e in report["events"]}
    assert {("stop", "done"), ("start", "done"), ("maintenance-on", "done")} <= actions


def test_maintenance_node_is_evacuated(actuated: tuple[dict[str, Any], Path]) -> None:
    maintenance = actuated[0]["maintenance"]
    assert maintenance["evacuated"] is True
    assert maintenance["entered"] <= maintenance["evacuated_at"] <= maintenance["left"]


def test_plot_is_a_png(actuated: tuple[dict[str, Any], Path]) -> None:
    data = actuated[1].read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_table_lists_summary_findings_and_every_round(
    actuated: tuple[dict[str, Any], Path],
) -> None:
    report, _ = actuated
    text = report_table(report)
    for label in ("rounds under threshold", "migrations", "ping-pong moves", "evacuated"):
        assert label in text
    assert f"{report['gib_moved']:.1f} GiB moved" in text
    assert "maintenance-on" in text
    assert sum(1 for line in text.splitlines() if line.startswith("+")) >= ROUNDS


def test_recommend_only_moves_nothing() -> None:
    report = simulate(
        nodes=NODES, guests=GUESTS, seed=SEED, hours=HOURS, step_s=STEP, actuate=False
    )
    assert any(r["moves"] for r in report["timeline"]), "the balancer should still recommend"
    assert report["migrations"] == 0
    assert report["gib_moved"] == 0
    assert report["observed_relocations"] == 0
    assert report["maintenance"]["evacuated"] is False


def test_restart_mid_run_loses_no_state(
    tmp_path: Path, actuated: tuple[dict[str, Any], Path]
) -> None:
    continuous, _ = actuated
    planned = [i for i, r in enumerate(continuous["timeline"]) if r["moves"]]
    split = next(i for i in planned if i >= ROUNDS // 3) + 1
    cluster = simulate_cluster(tmp_path / "cluster", NODES, GUESTS, days=1, seed=SEED)
    options = BalancerOptions.from_crs(cluster_crs(cluster), method="greedy", scope="all")
    events = plan_scenario(cluster, ROUNDS, SEED)

    first = ClosedLoop(cluster, options, step_s=STEP, actuate=True, events=events)
    first.run(0, split)
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(first.state.to_json()))
    saved = first.state
    assert saved.in_flight, "split right after a plan: its moves are in flight"
    assert saved.cooldowns

    restored = BalancerState.from_json(json.loads(state_file.read_text()))
    second = ClosedLoop(
        cluster,
        options,
        step_s=STEP,
        actuate=True,
        events=events,
        state=restored,
        auditor=first.auditor,
    )
    assert second.state.in_flight == saved.in_flight
    assert second.state.cooldowns == saved.cooldowns
    second.run(split, ROUNDS)

    report = second.auditor.report(options.threshold)
    assert report["rounds"] == ROUNDS
    assert report["moves"] == continuous["moves"]
    assert not [p for p in report["ping_pong"] if p["kind"] == "within-cooldown"]
    for sid, times in moves_by_guest(report).items():
        assert all(b - a >= options.cooldown_seconds for a, b in itertools.pairwise(times)), sid


def test_scenario_is_deterministic_from_the_seed(tmp_path: Path) -> None:
    cluster = simulate_cluster(tmp_path / "c", 3, 20, days=0.01, seed=7)
    events = plan_scenario(cluster, 100, 7)
    assert events == plan_scenario(cluster, 100, 7)
    node = next(e.subject for e in events if e.action == "maintenance-on")
    assert node in cluster.node_names
    assert ScenarioEvent(40, "maintenance-on", node) in events
    assert ScenarioEvent(70, "maintenance-off", node) in events
    stops = [e for e in events if e.action == "stop"]
    assert stops
    assert all(e.round < 60 for e in stops)
    assert events != plan_scenario(cluster, 100, 8)


def test_bad_step_is_refused() -> None:
    args = parse(["--step", "90"])
    with pytest.raises(CommandError, match="multiple of 60"):
        args.run(args)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    terminal, pipe = _Tty(), io.StringIO()
    for stream in (terminal, pipe):
        bar = ProgressBar(4, stream, width=8)
        bar.update(2)
        bar.close()
    assert "[####....] 2/4 rounds" in terminal.getvalue()
    assert pipe.getvalue() == ""


# ----- the auditor on hand-made snapshots -------------------------------------------------


def node(name: str, mem_gib: float = 10.0, maxmem_gib: float = 100.0) -> Node:
    return Node(name, True, False, 16.0, maxmem_gib * GIB, 2.0, mem_gib * GIB)


def guest(vmid: int, on: str, mem_gib: float = 1.0, moving: bool = False) -> Guest:
    ha = HaConfig("started", service_state="migrate" if moving else "started")
    return Guest(
        vmid, f"vm:{vmid}", "qemu", f"g{vmid}", on, "running", ha, 2.0, 4.0 * GIB, 0.5,
        mem_gib * GIB,
    )  # fmt: skip


def snapshot(time: int, guests: list[Guest], nodes: list[Node] | None = None) -> Snapshot:
    rules = [
        Rule("pin", "node-affinity", ["vm:1"], nodes={"a": 1}, strict=True),
        Rule("apart", "resource-affinity", ["vm:2", "vm:3"], affinity="negative"),
        Rule("together", "resource-affinity", ["vm:4", "vm:5"], affinity="positive"),
    ]
    return Snapshot(time, nodes or [node("a"), node("b")], guests, rules)


def test_auditor_finds_every_kind_of_rule_violation() -> None:
    auditor = Auditor(cooldown_s=3600, mem_headroom=0.9)
    fine = [guest(1, "a"), guest(2, "a"), guest(3, "b"), guest(4, "b"), guest(5, "b")]
    auditor.check(snapshot(0, fine), None)
    assert auditor.violations == []
    moving = [guest(1, "a"), guest(2, "a"), guest(3, "b"), guest(4, "a", moving=True)]
    auditor.check(snapshot(60, [*moving, guest(5, "b")]), None)
    assert auditor.violations == []
    broken = [guest(1, "b"), guest(2, "a"), guest(3, "a"), guest(4, "a"), guest(5, "b")]
    auditor.check(snapshot(120, broken), None)
    kinds = {(v.kind, v.subject) for v in auditor.violations}
    assert kinds == {
        ("strict-node-affinity", "pin"),
        ("resource-affinity-apart", "apart"),
        ("resource-affinity-together", "together"),
    }


def test_auditor_blames_the_headroom_only_on_moves() -> None:
    auditor = Auditor(cooldown_s=3600, mem_headroom=0.9)
    hot = [node("a", mem_gib=95.0), node("b")]
    auditor.check(snapshot(0, [guest(9, "a", mem_gib=8.0)], hot), None)
    assert auditor.headroom_violations == []  # above the headroom, but not because of us
    auditor.record_move(60, "vm:9", "b", "a", 8.0)
    auditor.check(snapshot(120, [guest(9, "a", mem_gib=8.0)], hot), None)
    assert [(v.kind, v.subject) for v in auditor.headroom_violations] == [("memory-headroom", "a")]


def test_auditor_flags_ping_pong() -> None:
    auditor = Auditor(cooldown_s=3600, mem_headroom=0.9)
    auditor.record_move(0, "vm:1", "a", "b", 1.0)
    auditor.record_move(600, "vm:1", "b", "c", 1.0)
    auditor.record_move(10_000, "vm:1", "c", "b", 1.0)
    auditor.record_move(20_000, "vm:1", "b", "a", 1.0)
    assert [p.kind for p in auditor.ping_pong] == ["within-cooldown", "moved-back"]


def test_auditor_notices_the_evacuation() -> None:
    auditor = Auditor(cooldown_s=3600, mem_headroom=0.9)
    auditor.record_event(0, ScenarioEvent(1, "maintenance-on", "a"), "done")
    auditor.check(snapshot(60, [guest(7, "a"), guest(8, "b")]), None)
    assert auditor.evacuated_at is None
    assert auditor.report(10.0)["maintenance"]["running_guests_left"] == 1
    auditor.check(snapshot(120, [guest(7, "b"), guest(8, "b")]), None)
    maintenance = auditor.report(10.0)["maintenance"]
    assert maintenance["evacuated"] is True
    assert maintenance["evacuated_at"] == 120
    assert maintenance["node"] == "a"
    assert maintenance["running_guests_left"] == 0
