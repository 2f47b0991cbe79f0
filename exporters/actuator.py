"""The actuator: carries a round's planned moves out through the PVE API, carefully.

Off by default (recommend only). When enabled it walks the plan in order, in waves of at most
``concurrency`` moves: before each move it takes a fresh snapshot and re-checks the cluster
(:mod:`exporters.actuator_checks`: guest still where planned and running, source and target
online and not in maintenance, HA rules unchanged, containers and HA resources allowed), and
the time windows (:mod:`exporters.actuator_window`). The first move that may not start stops
the rest of the plan (later moves assumed the earlier ones), with the reason logged and
returned. Started moves are polled until their task ends or ``task_timeout_s`` passes; a
move that does not finish in time is reported failed with its UPID (not forgotten), and a
failure also stops the rest of the plan.

``dry_run`` makes the same checks and returns the exact API calls (method, path, body) it
would make, without making any. Every real move is logged with its reason and the expected
imbalance before/after, counted per guest through ``record_migration(type, outcome)``
(``started`` once the request was made, refused or not, then ``succeeded`` or ``failed``,
so started = succeeded + failed + in flight) and reported to the optional ``on_migration``
callback (the ``started`` event carries the task's UPID).

Errors from the API client are reduced to their type and message with anything that looks
like a credential redacted; tracebacks are never logged (they could carry request headers).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from exporters.actuator_calls import ApiCall, ApiWriter, is_ha_managed, move_call, task_node
from exporters.actuator_checks import MOVING_SERVICE_STATES, Policy, ha_moves_blocked, move_problem
from exporters.actuator_metrics import MigrationOutcome
from exporters.actuator_window import TimeWindow, parse_windows, within_windows
from model.plan import Move, RoundResult
from model.snapshot import Guest, Snapshot

log = logging.getLogger("pve_rebalancer.actuator")

MoveState = Literal["planned", "succeeded", "failed"]
MigrationCallback = Callable[[str, str, str, str | None, MigrationOutcome, str | None], None]
"""``on_migration(sid, source, target, upid, state, error)``."""

_SECRETS = (
    re.compile(r"PVEAPIToken=\S+", re.IGNORECASE),
    re.compile(r"PVEAuthCookie=\S+", re.IGNORECASE),
    re.compile(
        r"(?i)\b(password|passwd|secret|token|ticket|csrfpreventiontoken|authorization)"
        r"(['\"]?\s*[=:]\s*['\"]?)[^\s,'\"}&]+"
    ),
)
_MAX_ERROR = 500


def safe_error(error: BaseException | str) -> str:
    """An error as ``Type: message`` with credential-looking parts redacted, bounded."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = _SECRETS[0].sub("PVEAPIToken=<redacted>", text)
    text = _SECRETS[1].sub("PVEAuthCookie=<redacted>", text)
    text = _SECRETS[2].sub(r"\1\2<redacted>", text)
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


class MigrationRecorder(Protocol):
    """Where migration events are counted (``RoundPublisher`` is one)."""

    def record_migration(self, guest_type: str, outcome: MigrationOutcome) -> None: ...


@dataclass(frozen=True, slots=True)
class ActuatorConfig:
    """The operator's choices; the defaults only recommend."""

    enabled: bool = False
    """Carry moves out. Off: recommend only (nothing is called)."""
    dry_run: bool = False
    """Check and list the calls that would be made, make none (works even when disabled)."""
    concurrency: int = 1
    """Moves in flight at once (a wave); the next wave starts when this one has ended."""
    windows: tuple[str, ...] = ()
    """Local-time windows ``HH:MM-HH:MM`` when moves may start; empty: any time."""
    allow_containers: bool = False
    allow_ha_when_crs_auto_rebalance: bool = False
    task_timeout_s: float = 900.0
    """A move whose task has not ended after this long is reported failed."""
    poll_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not self.task_timeout_s > 0 or not self.poll_interval_s > 0:
            raise ValueError("task_timeout_s and poll_interval_s must be positive")
        parse_windows(self.windows)

    @property
    def policy(self) -> Policy:
        return Policy(self.allow_containers, self.allow_ha_when_crs_auto_rebalance)


@dataclass(slots=True)
class MoveOutcome:
    """What became of one planned move."""

    move: Move
    calls: tuple[ApiCall, ...]
    state: MoveState
    """``planned`` (dry run), ``succeeded`` or ``failed``."""
    upids: tuple[str | None, ...] = ()
    """One per call made (None: the request was queued without a task, e.g. HA)."""
    error: str | None = None


@dataclass(slots=True)
class ActuationReport:
    """The result of carrying out (or dry-running) one plan."""

    dry_run: bool
    outcomes: list[MoveOutcome] = field(default_factory=list)
    not_started: list[Move] = field(default_factory=list)
    """Planned moves left out (after a stop, or all of them when recommending only)."""
    stopped: str | None = None
    """Why the plan was not carried out to its end; None when it was."""

    @property
    def calls(self) -> list[ApiCall]:
        """Every call made, or in a dry run every call that would have been made."""
        return [call for outcome in self.outcomes for call in outcome.calls]


@dataclass(slots=True)
class _InFlight:
    move: Move
    guests: list[Guest]
    calls: tuple[ApiCall, ...]
    moved: tuple[list[Guest], ...]
    """Per call, the guests it moves."""
    upids: list[str | None]
    deadline: float
    pending: set[int]
    """Indexes of calls whose task has not ended yet."""
    error: str | None = None
    last_poll_error: str | None = None


def local_now() -> datetime:
    """The current local time (the default clock for time windows)."""
    return datetime.now().astimezone()


class Actuator:
    """Carries plans out; see the module docstring. Not reentrant: one plan at a time."""

    def __init__(
        self,
        writer: ApiWriter,
        fresh_snapshot: Callable[[], Snapshot],
        config: ActuatorConfig | None = None,
        *,
        recorder: MigrationRecorder | None = None,
        on_migration: MigrationCallback | None = None,
        clock: Callable[[], datetime] = local_now,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._writer = writer
        self._fresh = fresh_snapshot
        self.config = config or ActuatorConfig()
        self._windows: tuple[TimeWindow, ...] = parse_windows(self.config.windows)
        self._recorder = recorder
        self._on_migration = on_migration
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"Actuator(config={self.config!r})"

    def __call__(self, snapshot: Snapshot, result: RoundResult) -> None:
        """``RoundRunner.on_result`` hook: carry out ``result``'s plan."""
        self.execute(snapshot, result)

    def ha_blocked(self, snapshot: Snapshot) -> bool:
        """True when HA resources are only recommended in ``snapshot``'s cluster."""
        return ha_moves_blocked(snapshot, self.config.policy)

    def execute(self, plan_snapshot: Snapshot, result: RoundResult) -> ActuationReport:
        """Carry out (or dry-run) ``result.moves``, planned on ``plan_snapshot``."""
        moves = list(result.moves)
        dry_run = self.config.dry_run
        report = ActuationReport(dry_run=dry_run)
        if not moves:
            return report
        if not self.config.enabled and not dry_run:
            report.not_started = moves
            report.stopped = "automation disabled: recommend only"
            log.info("recommend only: %d planned move(s) not carried out", len(moves))
            return report
        before = [result.imbalance, *(m.imbalance_after for m in moves[:-1])]
        index = 0
        while index < len(moves) and report.stopped is None:
            wave: list[_InFlight] = []
            while index < len(moves) and len(wave) < self.config.concurrency:
                move = moves[index]
                checked = self._check(plan_snapshot, move)
                if isinstance(checked, str):
                    report.stopped = f"move {move.rank} ({move.sid}): {checked}"
                    break
                index += 1
                planned = self._calls(move, checked)
                calls = tuple(call for call, _ in planned)
                self._log_move(move, before[index - 1], calls, dry_run)
                if dry_run:
                    report.outcomes.append(MoveOutcome(move, calls, "planned"))
                    continue
                flight = self._start(move, checked, planned)
                if flight.error is not None:
                    report.outcomes.append(self._finish(flight))
                    report.stopped = f"move {move.rank} ({move.sid}) failed: {flight.error}"
                    break
                wave.append(flight)
            for outcome in self._await(wave):
                report.outcomes.append(outcome)
                if outcome.state == "failed" and report.stopped is None:
                    report.stopped = (
                        f"move {outcome.move.rank} ({outcome.move.sid}) failed: {outcome.error}"
                    )
        position = {id(move): i for i, move in enumerate(moves)}
        report.outcomes.sort(key=lambda o: position[id(o.move)])
        report.not_started = moves[index:]
        if report.stopped is not None:
            log.warning(
                "plan stopped, %d move(s) not started: %s", len(report.not_started), report.stopped
            )
        return report

    # -- checks ---------------------------------------------------------------------------

    def _check(self, plan_snapshot: Snapshot, move: Move) -> list[Guest] | str:
        """The fresh guests of ``move`` when it may start now, else the reason it may not."""
        if not within_windows(self._windows, self._clock()):
            windows = ", ".join(w.text for w in self._windows)
            return f"outside the allowed time windows ({windows})"
        try:
            fresh = self._fresh()
        except Exception as error:  # no fresh view: nothing may start blind
            return f"no fresh snapshot: {safe_error(error)}"
        problem = move_problem(plan_snapshot, fresh, move, self.config.policy)
        if problem is not None:
            return problem
        return [g for sid in move.members or [move.sid] if (g := fresh.guest(sid)) is not None]

    @staticmethod
    def _calls(move: Move, guests: Sequence[Guest]) -> tuple[tuple[ApiCall, list[Guest]], ...]:
        """The requests for ``move``, each with the guests it moves."""
        ha = [g for g in guests if is_ha_managed(g)]
        direct = [g for g in guests if not is_ha_managed(g)]
        lead = next((g for g in ha if g.sid == move.sid), ha[0] if ha else None)
        calls = [] if lead is None else [(move_call(lead, move.source, move.target), ha)]
        calls += [(move_call(g, move.source, move.target), [g]) for g in direct]
        return tuple(calls)

    @staticmethod
    def _log_move(move: Move, before: float, calls: Sequence[ApiCall], dry_run: bool) -> None:
        what = "dry run, would call" if dry_run else "calling"
        log.info(
            "move %d: %s %s -> %s (%s; imbalance %.4f -> %.4f): %s %s",
            move.rank,
            ",".join(move.members or [move.sid]),
            move.source,
            move.target,
            move.reason or "planned",
            before,
            move.imbalance_after,
            what,
            "; ".join(c.describe() for c in calls),
        )

    # -- starting and following moves -------------------------------------------------------

    def _record(
        self, flight: _InFlight, outcome: MigrationOutcome, error: str | None = None
    ) -> None:
        for guest in flight.guests:
            if self._recorder is not None:
                self._recorder.record_migration(guest.type, outcome)
            if self._on_migration is not None:
                upid = self._upid_for(flight, guest)
                try:
                    self._on_migration(
                        guest.sid, flight.move.source, flight.move.target, upid, outcome, error
                    )
                except Exception as callback_error:  # persisting must not break a move
                    log.error("on_migration callback failed: %s", safe_error(callback_error))

    @staticmethod
    def _upid_for(flight: _InFlight, guest: Guest) -> str | None:
        for index, moved in enumerate(flight.moved):
            if guest in moved and index < len(flight.upids):
                return flight.upids[index]
        return None

    def _start(
        self, move: Move, guests: list[Guest], planned: tuple[tuple[ApiCall, list[Guest]], ...]
    ) -> _InFlight:
        calls = tuple(call for call, _ in planned)
        moved = tuple(moved for _, moved in planned)
        flight = _InFlight(move, guests, calls, moved, [], 0.0, set())
        for call in calls:
            try:
                upid = self._writer.post(call.path, dict(call.body))
            except Exception as error:
                flight.error = f"{call.method} {call.path} refused: {safe_error(error)}"
                break
            flight.pending.add(len(flight.upids))
            flight.upids.append(upid if isinstance(upid, str) and upid else None)
        self._record(flight, "started")
        if flight.error is not None:
            return flight
        flight.deadline = self._monotonic() + self.config.task_timeout_s
        log.info("move %d (%s) started: %s", move.rank, move.sid, flight.upids)
        return flight

    def _finish(self, flight: _InFlight) -> MoveOutcome:
        move = flight.move
        if flight.error is None:
            self._record(flight, "succeeded")
            log.info("move %d (%s) -> %s succeeded", move.rank, move.sid, move.target)
            return MoveOutcome(move, flight.calls, "succeeded", tuple(flight.upids))
        self._record(flight, "failed", flight.error)
        log.warning("move %d (%s) -> %s failed: %s", move.rank, move.sid, move.target,
                    flight.error)  # fmt: skip
        return MoveOutcome(move, flight.calls, "failed", tuple(flight.upids), flight.error)

    def _await(self, wave: list[_InFlight]) -> list[MoveOutcome]:
        """Poll the wave's tasks until each has ended or timed out; outcomes in wave order."""
        waiting = list(wave)
        while waiting:
            fresh = self._fresh_for_polling(waiting)
            for flight in list(waiting):
                self._poll(flight, fresh)
                if not flight.pending or flight.error is not None:
                    waiting.remove(flight)
                elif self._monotonic() >= flight.deadline:
                    flight.error = self._timeout_error(flight)
                    waiting.remove(flight)
            if waiting:
                self._sleep(self.config.poll_interval_s)
        return [self._finish(flight) for flight in wave]

    def _timeout_error(self, flight: _InFlight) -> str:
        tasks = ", ".join(
            f"task {upid}"
            if (upid := flight.upids[i])
            else f"queued request {flight.calls[i].path}"
            for i in sorted(flight.pending)
        )
        error = f"not finished after {self.config.task_timeout_s:g} s ({tasks})"
        if flight.last_poll_error:
            error += f"; last status error: {flight.last_poll_error}"
        return error

    def _fresh_for_polling(self, waiting: list[_InFlight]) -> Snapshot | None:
        """A fresh snapshot when a move without a task (queued HA request) is waiting."""
        if not any(f.upids[i] is None for f in waiting for i in f.pending):
            return None
        try:
            return self._fresh()
        except Exception as error:
            for flight in waiting:
                flight.last_poll_error = safe_error(error)
            return None

    def _poll(self, flight: _InFlight, fresh: Snapshot | None) -> None:
        for i in sorted(flight.pending):
            upid = flight.upids[i]
            if upid is None:
                self._poll_ha(flight, i, fresh)
                continue
            try:
                status = self._writer.task_status(task_node(upid, flight.move.source), upid)
            except Exception as error:  # transient: keep polling until the deadline
                flight.last_poll_error = safe_error(error)
                continue
            if status.get("status") != "stopped":
                continue
            flight.pending.discard(i)
            exitstatus = str(status.get("exitstatus", ""))
            if exitstatus != "OK" and not exitstatus.startswith("WARNINGS"):
                flight.error = f"task {upid} ended: {safe_error(exitstatus or 'no exit status')}"
                return

    @staticmethod
    def _poll_ha(flight: _InFlight, index: int, fresh: Snapshot | None) -> None:
        """A queued HA request is done when its guests run on the target, not moving."""
        if fresh is None:
            return
        call = flight.calls[index]
        done = True
        for planned in flight.moved[index]:
            guest = fresh.guest(planned.sid)
            state = guest.ha.service_state if guest is not None and guest.ha else None
            if state == "error":
                flight.error = f"{call.path}: HA resource {planned.sid} is in state error"
                return
            if guest is None or guest.node != flight.move.target or state in MOVING_SERVICE_STATES:
                done = False
        if done:
            flight.pending.discard(index)
