"""The actuator against a scripted API writer: calls, policy, re-checks, waves, timeouts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from exporters.actuator import Actuator, ActuatorConfig, safe_error
from exporters.actuator_calls import ApiCall, task_node
from exporters.state import RoundPublisher
from model.plan import Move
from model.snapshot import Rule, Snapshot
from tests.test_actuator_fakes import (
    FakeTime,
    FakeWriter,
    Recorder,
    make_guest,
    make_move,
    make_node,
    make_result,
    make_snapshot,
    with_service_state,
)

ON = ActuatorConfig(enabled=True, poll_interval_s=1.0, task_timeout_s=30.0)


class Harness:
    def __init__(
        self,
        snapshot: Snapshot,
        config: ActuatorConfig = ON,
        writer: FakeWriter | None = None,
        **kwargs: Any,
    ) -> None:
        self.snapshot = snapshot
        self.fresh = snapshot
        self.fresh_calls = 0
        self.writer = writer or FakeWriter()
        self.time = FakeTime()
        self.recorder = Recorder()
        self.migrations: list[tuple[Any, ...]] = []
        self.actuator = Actuator(
            self.writer,
            self._fresh,
            config,
            recorder=self.recorder,
            on_migration=lambda *args: self.migrations.append(args),
            monotonic=self.time.monotonic,
            sleep=self.time.sleep,
            **kwargs,
        )

    def _fresh(self) -> Snapshot:
        self.fresh_calls += 1
        return self.fresh

    def run(self, moves: list[Move]) -> Any:
        return self.actuator.execute(self.snapshot, make_result(moves))


def two_vm_snapshot(**kwargs: Any) -> Snapshot:
    return make_snapshot([make_guest(100, "pve1"), make_guest(101, "pve1")], **kwargs)


def two_moves() -> list[Move]:
    return [make_move(1, "vm:100", "pve1", "pve2"), make_move(2, "vm:101", "pve1", "pve3")]


# -- off by default, dry run --------------------------------------------------------------


def test_default_config_only_recommends():
    harness = Harness(two_vm_snapshot(), ActuatorConfig())
    report = harness.run(two_moves())
    assert harness.writer.posts == []
    assert harness.fresh_calls == 0
    assert report.outcomes == []
    assert [m.sid for m in report.not_started] == ["vm:100", "vm:101"]
    assert report.stopped == "automation disabled: recommend only"
    assert harness.recorder.events == []


def test_empty_plan_does_nothing():
    harness = Harness(two_vm_snapshot())
    report = harness.run([])
    assert (report.outcomes, report.stopped, harness.writer.posts) == ([], None, [])


@pytest.mark.parametrize("enabled", [True, False])
def test_dry_run_lists_exact_calls_and_makes_none(enabled, caplog):
    caplog.set_level(logging.INFO, logger="pve_rebalancer.actuator")
    harness = Harness(two_vm_snapshot(), ActuatorConfig(enabled=enabled, dry_run=True))
    report = harness.run(two_moves())
    assert report.dry_run
    assert report.calls == [
        ApiCall("POST", "/nodes/pve1/qemu/100/migrate", {"target": "pve2", "online": 1}),
        ApiCall("POST", "/nodes/pve1/qemu/101/migrate", {"target": "pve3", "online": 1}),
    ]
    assert [o.state for o in report.outcomes] == ["planned", "planned"]
    assert harness.writer.posts == []
    assert harness.writer.events == []
    assert harness.recorder.events == []
    assert harness.migrations == []
    assert report.stopped is None
    assert "would call POST /nodes/pve1/qemu/100/migrate target=pve2 online=1" in caplog.text


def test_dry_run_still_applies_the_checks():
    snapshot = two_vm_snapshot()
    harness = Harness(snapshot, ActuatorConfig(dry_run=True))
    harness.fresh = replace(snapshot, nodes=[make_node("pve1"), make_node("pve2"),
                                             make_node("pve3", online=False)])  # fmt: skip
    report = harness.run(two_moves())
    assert [o.move.sid for o in report.outcomes] == ["vm:100"]
    assert report.stopped == "move 2 (vm:101): target node pve3 is offline"


# -- which call for which guest ------------------------------------------------------------


@pytest.mark.parametrize(
    ("guest", "call"),
    [
        (
            make_guest(100, "pve1"),
            ApiCall("POST", "/nodes/pve1/qemu/100/migrate", {"target": "pve2", "online": 1}),
        ),
        (
            make_guest(200, "pve1", type_="lxc"),
            ApiCall("POST", "/nodes/pve1/lxc/200/migrate", {"target": "pve2", "restart": 1}),
        ),
        (
            make_guest(100, "pve1", ha="started"),
            ApiCall("POST", "/cluster/ha/resources/vm:100/migrate", {"node": "pve2"}),
        ),
        (
            make_guest(200, "pve1", type_="lxc", ha="started"),
            ApiCall("POST", "/cluster/ha/resources/ct:200/relocate", {"node": "pve2"}),
        ),
        (
            make_guest(100, "pve1", ha="ignored"),
            ApiCall("POST", "/nodes/pve1/qemu/100/migrate", {"target": "pve2", "online": 1}),
        ),
    ],
    ids=["vm", "ct", "ha-vm", "ha-ct", "ha-ignored-vm"],
)
def test_each_guest_kind_gets_its_call(guest, call):
    harness = Harness(make_snapshot([guest]), replace(ON, allow_containers=True))
    report = harness.run([make_move(1, guest.sid, "pve1", "pve2")])
    assert report.calls == [call]
    assert harness.writer.posts == [(call.path, dict(call.body))]
    assert [o.state for o in report.outcomes] == ["succeeded"]
    assert report.outcomes[0].upids[0].startswith("UPID:")
    assert report.stopped is None


@pytest.mark.parametrize("ha", [None, "started"])
def test_containers_need_permission(ha):
    snapshot = make_snapshot([make_guest(200, "pve1", type_="lxc", ha=ha), make_guest(100, "pve1")])
    harness = Harness(snapshot)
    moves = [make_move(1, "ct:200", "pve1", "pve2"), make_move(2, "vm:100", "pve1", "pve3")]
    report = harness.run(moves)
    assert harness.writer.posts == []
    assert report.stopped == (
        "move 1 (ct:200): ct:200 is a container and moving containers is not allowed"
    )
    assert [m.sid for m in report.not_started] == ["ct:200", "vm:100"]


def test_ha_resources_left_to_crs_auto_rebalance():
    snapshot = make_snapshot(
        [make_guest(100, "pve1", ha="started"), make_guest(101, "pve1")], auto_rebalance=True
    )
    harness = Harness(snapshot)
    assert harness.actuator.ha_blocked(snapshot)
    report = harness.run([make_move(1, "vm:100", "pve1", "pve2")])
    assert harness.writer.posts == []
    assert "ha-auto-rebalance=1" in (report.stopped or "")
    # a non-HA guest is still moved
    report = harness.run([make_move(1, "vm:101", "pve1", "pve2")])
    assert [p for p, _ in harness.writer.posts] == ["/nodes/pve1/qemu/101/migrate"]
    assert report.stopped is None


def test_ha_resources_acted_on_when_explicitly_allowed():
    snapshot = make_snapshot([make_guest(100, "pve1", ha="started")], auto_rebalance=True)
    harness = Harness(snapshot, replace(ON, allow_ha_when_crs_auto_rebalance=True))
    assert not harness.actuator.ha_blocked(snapshot)
    report = harness.run([make_move(1, "vm:100", "pve1", "pve2")])
    assert harness.writer.posts == [("/cluster/ha/resources/vm:100/migrate", {"node": "pve2"})]
    assert report.outcomes[0].state == "succeeded"


def test_crs_turned_on_after_planning_blocks_ha_moves():
    snapshot = make_snapshot([make_guest(100, "pve1", ha="started")])
    harness = Harness(snapshot)
    harness.fresh = replace(snapshot, crs=replace(snapshot.crs, auto_rebalance=True))
    report = harness.run([make_move(1, "vm:100", "pve1", "pve2")])
    assert harness.writer.posts == []
    assert "ha-auto-rebalance=1" in (report.stopped or "")


def test_ha_bundle_is_one_request_and_counts_every_guest():
    snapshot = make_snapshot([make_guest(100, "pve1", ha="started"),
                              make_guest(101, "pve1", ha="started")])  # fmt: skip
    harness = Harness(snapshot)
    move = make_move(1, "vm:100", "pve1", "pve2", members=["vm:100", "vm:101"])
    report = harness.run([move])
    assert harness.writer.posts == [("/cluster/ha/resources/vm:100/migrate", {"node": "pve2"})]
    assert report.outcomes[0].state == "succeeded"
    assert harness.recorder.events == [("qemu", "started")] * 2 + [("qemu", "succeeded")] * 2
    upid = report.outcomes[0].upids[0]
    assert [m[0] for m in harness.migrations] == ["vm:100", "vm:101"] * 2
    assert all(m[3] == upid for m in harness.migrations)


# -- re-checks against a fresh snapshot ----------------------------------------------------


def _moved(snapshot: Snapshot, node: str) -> Snapshot:
    guests = [replace(g, node=node) if g.sid == "vm:101" else g for g in snapshot.guests]
    return replace(snapshot, guests=guests)


def _node_state(snapshot: Snapshot, name: str, **changes: Any) -> Snapshot:
    nodes = [replace(n, **changes) if n.name == name else n for n in snapshot.nodes]
    return replace(snapshot, nodes=nodes)


def _guest_state(snapshot: Snapshot, **changes: Any) -> Snapshot:
    guests = [replace(g, **changes) if g.sid == "vm:101" else g for g in snapshot.guests]
    return replace(snapshot, guests=guests)


RULE = Rule("keep", "node-affinity", ["vm:100"], nodes={"pve1": 1, "pve2": 2})

CHANGES: dict[str, tuple[Callable[[Snapshot], Snapshot], str]] = {
    "already-on-target": (lambda s: _moved(s, "pve3"), "guest vm:101 moved already: it is on pve3"),
    "moved-elsewhere": (
        lambda s: _moved(s, "pve2"),
        "guest vm:101 moved already: it is on pve2, not pve1",
    ),
    "guest-gone": (
        lambda s: replace(s, guests=s.guests[:1]),
        "guest vm:101 is no longer in the cluster",
    ),
    "guest-stopped": (
        lambda s: _guest_state(s, status="stopped"),
        "guest vm:101 is not running (status stopped)",
    ),
    "target-offline": (
        lambda s: _node_state(s, "pve3", online=False),
        "target node pve3 is offline",
    ),
    "target-maintenance": (
        lambda s: _node_state(s, "pve3", maintenance=True),
        "target node pve3 is in maintenance",
    ),
    "target-ha-maintenance": (
        lambda s: _node_state(s, "pve3", ha_state="maintenance"),
        "target node pve3 is in maintenance",
    ),
    "target-fenced": (
        lambda s: _node_state(s, "pve3", ha_state="fence"),
        "target node pve3 is in HA state fence",
    ),
    "target-gone": (
        lambda s: replace(s, nodes=s.nodes[:2]),
        "target node pve3 is no longer in the cluster",
    ),
    "source-offline": (
        lambda s: _node_state(s, "pve1", online=False),
        "source node pve1 is offline",
    ),
    "source-maintenance": (
        lambda s: _node_state(s, "pve1", maintenance=True),
        "source node pve1 is in maintenance",
    ),
    "rules-changed": (
        lambda s: replace(s, rules=[replace(RULE, strict=True)]),
        "the HA rules changed since the plan was made",
    ),
    "rule-added": (
        lambda s: replace(s, rules=[RULE, replace(RULE, id="other")]),
        "the HA rules changed since the plan was made",
    ),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_stops_the_rest_of_the_plan_when_the_cluster_changed(change, caplog):
    make_fresh, reason = CHANGES[change]
    snapshot = two_vm_snapshot(rules=[RULE])
    harness = Harness(snapshot)
    moves = [*two_moves(), make_move(3, "vm:100", "pve2", "pve3")]

    def after_first_post(path: str, data: Any) -> None:
        harness.fresh = make_fresh(snapshot)

    harness.writer.on_post = after_first_post
    report = harness.run(moves)
    assert [p for p, _ in harness.writer.posts] == ["/nodes/pve1/qemu/100/migrate"]
    assert [(o.move.sid, o.state) for o in report.outcomes] == [("vm:100", "succeeded")]
    assert [m.rank for m in report.not_started] == [2, 3]
    assert report.stopped == f"move 2 (vm:101): {reason}"
    assert reason in caplog.text


def test_guest_already_moving_under_ha_is_not_requested_again():
    snapshot = make_snapshot([make_guest(100, "pve1", ha="started")])
    guest = snapshot.guests[0]
    moving = with_service_state(guest, "migrate")
    harness = Harness(snapshot)
    harness.fresh = replace(snapshot, guests=[moving])
    report = harness.run([make_move(1, "vm:100", "pve1", "pve2")])
    assert harness.writer.posts == []
    assert report.stopped == "move 1 (vm:100): guest vm:100 is already moving (HA state migrate)"


def test_rule_order_alone_is_no_change():
    other = Rule("apart", "resource-affinity", ["vm:101", "vm:100"], affinity="negative")
    snapshot = two_vm_snapshot(rules=[RULE, other])
    harness = Harness(snapshot)
    harness.fresh = replace(snapshot, rules=[replace(other, resources=["vm:100", "vm:101"]), RULE])
    report = harness.run(two_moves())
    assert report.stopped is None
    assert len(harness.writer.posts) == 2


def test_never_starts_a_move_to_an_offline_target_even_first():
    snapshot = two_vm_snapshot()
    harness = Harness(snapshot)
    harness.fresh = _node_state(snapshot, "pve2", online=False)
    report = harness.run(two_moves())
    assert harness.writer.posts == []
    assert report.stopped == "move 1 (vm:100): target node pve2 is offline"


def test_unavailable_fresh_snapshot_starts_nothing():
    def broken() -> Snapshot:
        raise OSError("cluster unreachable")

    harness = Harness(two_vm_snapshot())
    harness.actuator = Actuator(harness.writer, broken, ON)
    report = harness.run(two_moves())
    assert harness.writer.posts == []
    assert report.stopped == "move 1 (vm:100): no fresh snapshot: OSError: cluster unreachable"


# -- tasks: success, failure, timeouts, waves ------------------------------------------------


def test_task_polled_until_it_stops():
    writer = FakeWriter(polls_to_finish=3)
    harness = Harness(two_vm_snapshot(), writer=writer)
    report = harness.run(two_moves()[:1])
    assert (
        writer.events
        == [("post", "/nodes/pve1/qemu/100/migrate")]
        + [("poll", "/nodes/pve1/qemu/100/migrate")] * 3
    )
    assert harness.time.sleeps == [1.0, 1.0]
    assert report.outcomes[0].state == "succeeded"


def test_task_status_asked_on_the_node_in_the_upid():
    assert task_node("UPID:pve7:0000ABCD:00001234:65000000:qmigrate:100:root@pam:", "x") == "pve7"
    assert task_node("not-a-upid", "pve1") == "pve1"


def test_failed_task_is_reported_and_stops_the_plan():
    writer = FakeWriter(exitstatus={"/nodes/pve1/qemu/100/migrate": "migration aborted"})
    harness = Harness(two_vm_snapshot(), writer=writer)
    report = harness.run(two_moves())
    outcome = report.outcomes[0]
    assert outcome.state == "failed"
    assert outcome.error == f"task {outcome.upids[0]} ended: migration aborted"
    assert report.stopped == f"move 1 (vm:100) failed: {outcome.error}"
    assert [m.sid for m in report.not_started] == ["vm:101"]
    assert len(writer.posts) == 1
    assert harness.recorder.events == [("qemu", "started"), ("qemu", "failed")]


def test_task_ending_with_warnings_succeeded():
    writer = FakeWriter(exitstatus={"/nodes/pve1/qemu/100/migrate": "WARNINGS: 1"})
    report = Harness(two_vm_snapshot(), writer=writer).run(two_moves()[:1])
    assert report.outcomes[0].state == "succeeded"


def test_task_not_finished_in_time_is_reported_failed_with_its_upid():
    writer = FakeWriter(exitstatus={"/nodes/pve1/qemu/100/migrate": None})
    harness = Harness(two_vm_snapshot(), replace(ON, task_timeout_s=10.0), writer=writer)
    report = harness.run(two_moves())
    outcome = report.outcomes[0]
    assert outcome.state == "failed"
    assert outcome.upids[0] is not None
    assert outcome.error == f"not finished after 10 s (task {outcome.upids[0]})"
    assert report.stopped == f"move 1 (vm:100) failed: {outcome.error}"
    assert len(writer.posts) == 1
    assert harness.time.now >= 10.0
    assert harness.recorder.events == [("qemu", "started"), ("qemu", "failed")]
    assert harness.migrations[-1] == (
        "vm:100", "pve1", "pve2", outcome.upids[0], "failed", outcome.error,
    )  # fmt: skip


def test_status_errors_are_retried_until_the_deadline():
    writer = FakeWriter()
    calls = {"n": 0}
    real = writer.task_status

    def flaky(node: str, upid: str) -> Any:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("reset")
        return real(node, upid)

    writer.task_status = flaky  # type: ignore[method-assign]
    report = Harness(two_vm_snapshot(), writer=writer).run(two_moves()[:1])
    assert report.outcomes[0].state == "succeeded"
    assert calls["n"] == 3


def test_concurrency_runs_moves_in_waves_in_plan_order():
    guests = [make_guest(100 + i, "pve1") for i in range(5)]
    writer = FakeWriter(polls_to_finish=2)
    harness = Harness(make_snapshot(guests), replace(ON, concurrency=2), writer=writer)
    moves = [make_move(i + 1, f"vm:{100 + i}", "pve1", "pve2") for i in range(5)]
    report = harness.run(moves)
    kinds = [(kind, path.split("/")[4]) for kind, path in writer.events]
    assert kinds == [
        ("post", "100"), ("post", "101"),
        ("poll", "100"), ("poll", "101"), ("poll", "100"), ("poll", "101"),
        ("post", "102"), ("post", "103"),
        ("poll", "102"), ("poll", "103"), ("poll", "102"), ("poll", "103"),
        ("post", "104"), ("poll", "104"), ("poll", "104"),
    ]  # fmt: skip
    assert [o.move.rank for o in report.outcomes] == [1, 2, 3, 4, 5]
    assert all(o.state == "succeeded" for o in report.outcomes)


def test_a_failure_in_a_wave_lets_the_wave_finish_but_starts_no_more():
    guests = [make_guest(100 + i, "pve1") for i in range(3)]
    writer = FakeWriter(exitstatus={"/nodes/pve1/qemu/100/migrate": "boom"})
    harness = Harness(make_snapshot(guests), replace(ON, concurrency=2), writer=writer)
    moves = [make_move(i + 1, f"vm:{100 + i}", "pve1", "pve2") for i in range(3)]
    report = harness.run(moves)
    assert [(o.move.rank, o.state) for o in report.outcomes] == [(1, "failed"), (2, "succeeded")]
    assert [m.rank for m in report.not_started] == [3]
    assert "move 1 (vm:100) failed" in (report.stopped or "")


def test_queued_ha_request_without_task_followed_in_fresh_snapshots():
    snapshot = make_snapshot([make_guest(100, "pve1", ha="started")])
    writer = FakeWriter(return_upid=False)
    harness = Harness(snapshot, writer=writer)
    polls = {"n": 0}
    guest = snapshot.guests[0]

    def fresh() -> Snapshot:
        if not writer.posts:
            return snapshot
        polls["n"] += 1
        if polls["n"] == 1:
            moving = with_service_state(guest, "migrate")
            return replace(snapshot, guests=[moving])
        return replace(snapshot, guests=[replace(guest, node="pve2")])

    harness.actuator._fresh = fresh
    report = harness.run([make_move(1, "vm:100", "pve1", "pve2")])
    assert report.outcomes[0].state == "succeeded"
    assert report.outcomes[0].upids == (None,)
    assert polls["n"] == 2


def test_queued_ha_request_in_error_state_fails():
    snapshot = make_snapshot([make_guest(100, "pve1", ha="started")])
    writer = FakeWriter(return_upid=False)
    harness = Harness(snapshot, writer=writer)
    guest = snapshot.guests[0]

    def fresh() -> Snapshot:
        if not writer.posts:
            return snapshot
        return replace(snapshot, guests=[with_service_state(guest, "error")])

    harness.actuator._fresh = fresh
    report = harness.run([make_move(1, "vm:100", "pve1", "pve2")])
    assert report.outcomes[0].state == "failed"
    assert "vm:100 is in state error" in (report.outcomes[0].error or "")


# -- counting, callbacks, logs, secrets ------------------------------------------------------


def test_counters_through_the_round_publisher():
    snapshot = make_snapshot([make_guest(100, "pve1"), make_guest(200, "pve1", type_="lxc"),
                              make_guest(101, "pve1")])  # fmt: skip
    writer = FakeWriter(exitstatus={"/nodes/pve1/qemu/101/migrate": "failed"})
    publisher = RoundPublisher()
    actuator = Actuator(
        writer,
        lambda: snapshot,
        replace(ON, allow_containers=True),
        recorder=publisher,
        sleep=lambda _: None,
    )
    moves = [
        make_move(1, "vm:100", "pve1", "pve2"),
        make_move(2, "ct:200", "pve1", "pve2"),
        make_move(3, "vm:101", "pve1", "pve3"),
    ]
    actuator.execute(snapshot, make_result(moves))
    counts = publisher.migrations.view()
    assert counts[("started", "qemu")] == 2
    assert counts[("succeeded", "qemu")] == 1
    assert counts[("failed", "qemu")] == 1
    assert counts[("started", "lxc")] == 1
    assert counts[("succeeded", "lxc")] == 1
    assert counts[("failed", "lxc")] == 0


def test_on_migration_reports_every_event():
    harness = Harness(two_vm_snapshot())
    report = harness.run(two_moves())
    first, second = (o.upids[0] for o in report.outcomes)
    assert harness.migrations == [
        ("vm:100", "pve1", "pve2", first, "started", None),
        ("vm:100", "pve1", "pve2", first, "succeeded", None),
        ("vm:101", "pve1", "pve3", second, "started", None),
        ("vm:101", "pve1", "pve3", second, "succeeded", None),
    ]


def test_on_migration_refused_request_reports_started_then_failed():
    error = RuntimeError("500 internal error")
    writer = FakeWriter(post_errors={"/nodes/pve1/qemu/100/migrate": error})
    harness = Harness(two_vm_snapshot(), writer=writer)
    report = harness.run(two_moves())
    assert harness.migrations == [
        ("vm:100", "pve1", "pve2", None, "started", None),
        ("vm:100", "pve1", "pve2", None, "failed", report.outcomes[0].error),
    ]


def test_failing_callback_does_not_break_the_move(caplog):
    def broken(*args: Any) -> None:
        raise RuntimeError("database locked")

    harness = Harness(two_vm_snapshot())
    harness.actuator._on_migration = broken
    report = harness.run(two_moves())
    assert [o.state for o in report.outcomes] == ["succeeded", "succeeded"]
    assert "on_migration callback failed: RuntimeError: database locked" in caplog.text


def test_every_action_is_logged_with_reason_and_imbalance(caplog):
    caplog.set_level(logging.INFO, logger="pve_rebalancer.actuator")
    moves = [
        make_move(1, "vm:100", "pve1", "pve2", imbalance_after=0.3, reason="pve1 overloaded"),
        make_move(2, "vm:101", "pve1", "pve3", imbalance_after=0.2, reason="spread memory"),
    ]
    Harness(two_vm_snapshot()).run(moves)
    text = caplog.text
    assert "move 1: vm:100 pve1 -> pve2 (pve1 overloaded; imbalance 0.4000 -> 0.3000)" in text
    assert "move 2: vm:101 pve1 -> pve3 (spread memory; imbalance 0.3000 -> 0.2000)" in text
    assert "calling POST /nodes/pve1/qemu/100/migrate target=pve2 online=1" in text
    assert "move 1 (vm:100) -> pve2 succeeded" in text


SECRET = "0b7e5a1c-2f7d-4d6e-9a3f-1234567890ab"


def test_refused_request_never_exposes_secrets(caplog):
    caplog.set_level(logging.DEBUG)
    error = PermissionError(
        f"403 from pve1: Authorization: PVEAPIToken=root@pam!rebal={SECRET} password={SECRET}"
    )
    writer = FakeWriter(post_errors={"/nodes/pve1/qemu/100/migrate": error})
    harness = Harness(two_vm_snapshot(), writer=writer)
    report = harness.run(two_moves())
    outcome = report.outcomes[0]
    assert outcome.state == "failed"
    assert outcome.error is not None
    assert outcome.error.startswith("POST /nodes/pve1/qemu/100/migrate refused: PermissionError")
    assert [m.sid for m in report.not_started] == ["vm:101"]
    assert harness.recorder.events == [("qemu", "started"), ("qemu", "failed")]
    everything = " ".join([caplog.text, repr(report), repr(harness.migrations),
                           repr(harness.actuator)])  # fmt: skip
    assert SECRET not in everything
    assert "<redacted>" in (report.stopped or "")


def test_safe_error_redacts_and_bounds():
    assert safe_error(ValueError(f"token={SECRET}")) == "ValueError: token=<redacted>"
    assert SECRET not in safe_error(f"{{'password': '{SECRET}'}}")
    assert len(safe_error("x" * 2000)) == 500


# -- wiring and configuration ------------------------------------------------------------


def test_on_result_hook_carries_the_plan_out():
    harness = Harness(two_vm_snapshot())
    harness.actuator(harness.snapshot, make_result(two_moves()))
    assert len(harness.writer.posts) == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"concurrency": 0}, {"task_timeout_s": 0}, {"poll_interval_s": -1}, {"windows": ("9-5",)}],
)
def test_invalid_configuration_is_refused(kwargs):
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        ActuatorConfig(**kwargs)


def test_windows_gate_the_start_of_moves():
    config = replace(ON, windows=("22:00-06:00",))
    inside = Harness(two_vm_snapshot(), config, clock=lambda: datetime(2026, 11, 25, 5, 59))
    assert inside.run(two_moves()).stopped is None
    assert len(inside.writer.posts) == 2
    outside = Harness(two_vm_snapshot(), config, clock=lambda: datetime(2026, 11, 25, 6, 0))
    report = outside.run(two_moves())
    assert outside.writer.posts == []
    assert outside.fresh_calls == 0
    assert report.stopped == "move 1 (vm:100): outside the allowed time windows (22:00-06:00)"


def test_window_closing_mid_plan_stops_the_rest():
    moments = iter([datetime(2026, 11, 25, 5, 59, 30), datetime(2026, 11, 25, 6, 0, 30)])
    config = replace(ON, windows=("22:00-06:00",))
    harness = Harness(two_vm_snapshot(), config, clock=lambda: next(moments))
    report = harness.run(two_moves())
    assert [o.move.sid for o in report.outcomes] == ["vm:100"]
    assert "outside the allowed time windows" in (report.stopped or "")


def test_queued_ha_request_not_seen_done_in_time_fails():
    snapshot = make_snapshot([make_guest(100, "pve1", ha="started")])
    writer = FakeWriter(return_upid=False)
    harness = Harness(snapshot, replace(ON, task_timeout_s=5.0), writer=writer)
    report = harness.run([make_move(1, "vm:100", "pve1", "pve2")])
    assert report.outcomes[0].error == (
        "not finished after 5 s (queued request /cluster/ha/resources/vm:100/migrate)"
    )
    assert harness.recorder.events == [("qemu", "started"), ("qemu", "failed")]


def test_a_blocked_move_in_a_wave_lets_the_started_ones_finish():
    snapshot = two_vm_snapshot()
    writer = FakeWriter(polls_to_finish=2)
    harness = Harness(snapshot, replace(ON, concurrency=2), writer=writer)

    def after_first_post(path: str, data: Any) -> None:
        harness.fresh = _guest_state(snapshot, status="stopped")

    writer.on_post = after_first_post
    report = harness.run(two_moves())
    assert [(o.move.sid, o.state) for o in report.outcomes] == [("vm:100", "succeeded")]
    assert writer.events[-1] == ("poll", "/nodes/pve1/qemu/100/migrate")
    assert report.stopped == "move 2 (vm:101): guest vm:101 is not running (status stopped)"
    assert [m.sid for m in report.not_started] == ["vm:101"]
