"""The service's persistent state: one SQLite database in the state directory.

Why SQLite: the balancer state (hold counter, cooldowns, moves in flight), the decision
history and the actuator's migrations must survive a restart or a crash, and must never be
half written. Every write here is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) in WAL
mode with ``synchronous=FULL``: a process killed mid-write loses at most the transaction in
progress, never anything committed, and a reader never sees a round's state without its
history row or the other way round.

Tables: ``meta`` (the :class:`BalancerState` as JSON, schema version), ``history`` (one row
per recorded round: time, imbalance, triggered, reason, hold count, moves JSON),
``recommendations`` (the latest round's plan and top single moves) and ``migrations`` (what the
actuator started: sid, source, target, UPID, state, times, error).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from balancer.stability import BalancerState
from model.plain import to_plain
from model.plan import Move, RoundResult

log = logging.getLogger("pve_rebalancer.state")

STATE_FILE = "state.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    finished_at REAL NOT NULL,
    imbalance REAL NOT NULL,
    imbalance_after REAL,
    threshold REAL NOT NULL,
    triggered INTEGER NOT NULL,
    hold_count INTEGER NOT NULL,
    reason TEXT NOT NULL,
    moves TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_time ON history (finished_at);
CREATE TABLE IF NOT EXISTS recommendations (
    kind TEXT NOT NULL,
    rank INTEGER NOT NULL,
    sid TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    imbalance_after REAL NOT NULL,
    cost_seconds REAL NOT NULL,
    decided_at REAL NOT NULL,
    PRIMARY KEY (kind, rank)
);
CREATE TABLE IF NOT EXISTS migrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sid TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    upid TEXT,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    error TEXT
);
"""

MIGRATION_STATES = ("planned", "running", "succeeded", "failed", "dry-run")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    finished_at: float
    imbalance: float
    imbalance_after: float | None
    threshold: float
    triggered: bool
    hold_count: int
    reason: str
    moves: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = to_plain(self)
        return document


@dataclass(frozen=True, slots=True)
class MigrationRecord:
    id: int
    sid: str
    source: str
    target: str
    upid: str | None
    state: str
    started_at: float
    finished_at: float | None
    error: str | None


class StateStore:
    """The state database at ``path`` (created with its parent directory when missing).

    Safe to share between threads (one connection behind a lock); one writer process.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # executescript commits on its own: the schema is idempotent (IF NOT EXISTS).
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    @classmethod
    def in_dir(cls, state_dir: Path | str) -> StateStore:
        """The store in a state directory (``<dir>/state.sqlite3``)."""
        return cls(Path(state_dir) / STATE_FILE)

    # ----- plumbing --------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----- balancer state --------------------------------------------------------------

    def load_state(self) -> BalancerState:
        """The last saved balancer state; a fresh one when none (or an unreadable one) is stored."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'balancer_state'").fetchone()
        if row is None:
            return BalancerState()
        try:
            return BalancerState.from_json(json.loads(row[0]))
        except (ValueError, TypeError, KeyError) as error:
            log.warning("stored balancer state unreadable (%s); starting fresh", error)
            return BalancerState()

    @staticmethod
    def _put_state(db: sqlite3.Connection, state: BalancerState) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('balancer_state', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (json.dumps(state.to_json(), allow_nan=False),),
        )

    def save_state(self, state: BalancerState) -> None:
        with self._transaction() as db:
            self._put_state(db, state)

    def save_round(
        self,
        result: RoundResult,
        state: BalancerState,
        finished_at: float,
        *,
        history: bool = True,
    ) -> None:
        """The state after a round, its recommendations and (``history``) its history row.

        All in one transaction: either everything of this round is stored or nothing.
        """
        moves = [to_plain(m) for m in result.moves]
        with self._transaction() as db:
            self._put_state(db, state)
            db.execute("DELETE FROM recommendations")
            db.executemany(
                "INSERT INTO recommendations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (kind, m.rank, m.sid, m.source, m.target, m.imbalance_after,
                     m.cost_seconds, finished_at)
                    for kind, group in (("plan", result.moves), ("top", result.top_moves))
                    for m in group
                ],
            )  # fmt: skip
            if history:
                db.execute(
                    "INSERT INTO history (finished_at, imbalance, imbalance_after, threshold, "
                    "triggered, hold_count, reason, moves) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        finished_at,
                        result.imbalance,
                        result.imbalance_after,
                        result.threshold,
                        int(result.triggered),
                        result.hold_count,
                        result.reason,
                        json.dumps(moves, allow_nan=False),
                    ),
                )

    # ----- reading back ----------------------------------------------------------------

    def history(self, limit: int = 20) -> list[HistoryEntry]:
        """The newest ``limit`` history rows, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT finished_at, imbalance, imbalance_after, threshold, triggered, "
                "hold_count, reason, moves FROM history ORDER BY id DESC LIMIT ?",
                (max(0, limit),),
            ).fetchall()
        return [
            HistoryEntry(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], json.loads(r[7]))
            for r in rows
        ]

    def recommendations(self, kind: str = "plan") -> list[Move]:
        """The latest round's plan (``plan``) or its best single moves (``top``)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rank, sid, source, target, imbalance_after, cost_seconds "
                "FROM recommendations WHERE kind = ? ORDER BY rank",
                (kind,),
            ).fetchall()
        return [Move(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    # ----- migrations (the actuator) ---------------------------------------------------

    def record_migration(
        self,
        sid: str,
        source: str,
        target: str,
        started_at: float,
        *,
        upid: str | None = None,
        state: str = "running",
    ) -> int:
        """Store a migration the actuator starts; returns its id for :meth:`update_migration`."""
        if state not in MIGRATION_STATES:
            raise ValueError(f"migration state {state!r} not one of {MIGRATION_STATES}")
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO migrations (sid, source, target, upid, state, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (sid, source, target, upid, state, started_at),
            )
            return int(cursor.lastrowid or 0)

    def update_migration(
        self,
        migration_id: int,
        state: str,
        *,
        upid: str | None = None,
        finished_at: float | None = None,
        error: str | None = None,
    ) -> None:
        if state not in MIGRATION_STATES:
            raise ValueError(f"migration state {state!r} not one of {MIGRATION_STATES}")
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE migrations SET state = ?, upid = COALESCE(?, upid), "
                "finished_at = COALESCE(?, finished_at), error = COALESCE(?, error) "
                "WHERE id = ?",
                (state, upid, finished_at, error, migration_id),
            )
            if cursor.rowcount != 1:
                raise KeyError(f"no migration with id {migration_id}")

    def migrations(self, limit: int = 50, *, active_only: bool = False) -> list[MigrationRecord]:
        """The newest migrations first (``active_only``: planned or running)."""
        where = "WHERE state IN ('planned', 'running')" if active_only else ""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, sid, source, target, upid, state, started_at, finished_at, error "
                f"FROM migrations {where} ORDER BY id DESC LIMIT ?",
                (max(0, limit),),
            ).fetchall()
        return [MigrationRecord(*row) for row in rows]
