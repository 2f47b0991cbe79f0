"""The SQLite state store: round trips, one transaction per round, and no loss on SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from balancer.stability import BalancerState, InFlight
from cli.state_store import StateStore
from model.plan import Move, RoundResult

ROOT = Path(__file__).resolve().parent.parent


def result(hold: int = 1, moves: list[Move] | None = None, reason: str = "holding") -> RoundResult:
    return RoundResult(
        imbalance=0.2,
        imbalance_cv=0.3,
        triggered=bool(moves),
        reason=reason,
        threshold=10.0,
        margin=5.0,
        hold_count=hold,
        moves=moves or [],
        top_moves=[Move(1, "vm:101", "pve1", "pve3", 0.12)],
        imbalance_after=0.1 if moves else None,
    )


def test_fresh_store_has_a_fresh_state(tmp_path: Path) -> None:
    with StateStore.in_dir(tmp_path / "state") as store:
        assert store.load_state() == BalancerState()
        assert store.history() == []
    assert (tmp_path / "state" / "state.sqlite3").is_file()


def test_state_round_trips_with_in_flight_moves(tmp_path: Path) -> None:
    state = BalancerState(
        hold_count=4,
        overload_counts={"pve2": 1},
        cooldowns={"vm:100": 1_800_000_000.0},
        in_flight={"vm:100": InFlight("pve1", "pve2", 1_700_000_000.0)},
        active=True,
    )
    path = tmp_path / "s.sqlite3"
    with StateStore(path) as store:
        store.save_round(result(4), state, 1_700_000_000.0)
    with StateStore(path) as store:
        assert store.load_state() == state


def test_history_newest_first_with_limit(tmp_path: Path) -> None:
    move = Move(1, "vm:100", "pve1", "pve2", 0.1, cost_seconds=12.0)
    with StateStore(tmp_path / "s.sqlite3") as store:
        for i in range(5):
            store.save_round(result(i, [move] if i == 4 else []), BalancerState(i), 100.0 + i)
        store.save_round(result(9), BalancerState(9), 200.0, history=False)
        entries = store.history(3)
        assert [e.hold_count for e in entries] == [4, 3, 2]
        assert entries[0].triggered is True
        assert entries[0].moves[0]["sid"] == "vm:100"
        assert entries[0].moves[0]["target"] == "pve2"
        assert entries[0].to_json()["finished_at"] == 104.0
        # history=False: the state and recommendations are saved, no history row
        assert store.load_state().hold_count == 9
        assert len(store.history(100)) == 5
        assert [m.sid for m in store.recommendations("top")] == ["vm:101"]
        assert store.recommendations("plan") == []


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.sqlite3") as store:
        store.save_round(result(1), BalancerState(1), 1.0)
        broken = result(2)
        broken.reason = None  # type: ignore[assignment]  # violates NOT NULL in history
        with pytest.raises(sqlite3.IntegrityError):
            store.save_round(broken, BalancerState(2), 2.0)
        assert store.load_state().hold_count == 1
        assert [e.hold_count for e in store.history()] == [1]


def test_migrations_are_recorded_and_updated(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.sqlite3") as store:
        first = store.record_migration("vm:100", "pve1", "pve2", 10.0, upid="UPID:pve1:1")
        second = store.record_migration("ct:200", "pve2", "pve3", 11.0)
        store.update_migration(first, "succeeded", finished_at=50.0)
        store.update_migration(second, "failed", finished_at=20.0, error="target full")
        rows = {m.sid: m for m in store.migrations()}
        assert rows["vm:100"].state == "succeeded"
        assert rows["vm:100"].upid == "UPID:pve1:1"
        assert rows["vm:100"].finished_at == 50.0
        assert rows["ct:200"].error == "target full"
        assert store.migrations(active_only=True) == []
        with pytest.raises(KeyError):
            store.update_migration(999, "failed")
        with pytest.raises(ValueError, match="not one of"):
            store.record_migration("vm:1", "a", "b", 1.0, state="bogus")


def test_unreadable_state_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    StateStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO meta VALUES ('balancer_state', '{\"nonsense\": 1}')")
    with StateStore(path) as store:
        assert store.load_state() == BalancerState()


WRITER = textwrap.dedent(
    """
    import sys
    from balancer.stability import BalancerState
    from cli.state_store import StateStore
    from model.plan import RoundResult

    store = StateStore(sys.argv[1])
    i = 0
    while True:
        i += 1
        result = RoundResult(0.2, 0.3, False, "x" * 2000, 10.0, 5.0, hold_count=i)
        store.save_round(result, BalancerState(hold_count=i, cooldowns={"vm:1": float(i)}), i)
        if i == 1:
            print("started", flush=True)
    """
)


def test_state_survives_sigkill_mid_loop(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        with StateStore(path) as reader:
            while len(reader.history(200)) < 100 and time.monotonic() < deadline:
                time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL

    with StateStore(path) as store:
        assert store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        state = store.load_state()
        entries = store.history(1_000_000)
    assert len(entries) >= 100
    # every committed round is there, in order, and the state belongs to the newest one
    assert [e.hold_count for e in reversed(entries)] == list(range(1, len(entries) + 1))
    assert state.hold_count == entries[0].hold_count
    assert state.cooldowns == {"vm:1": float(entries[0].hold_count)}
