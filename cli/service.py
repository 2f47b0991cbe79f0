"""The service loop: one round (collect, decide, publish) and the schedule that repeats it.

This is the thin wiring the layers meet in: a collect function (any source: files, the
simulator, later the PVE API) produces a snapshot, the pure balancer decides, the exporter
publishes the result. A round that fails is published as failed (the last good plan stays
visible) and the next round runs as usual. After the first successful round a service may
freeze what exists by then out of the cyclic garbage collector's sight
(:attr:`RoundRunner.freeze_gc_after_first_round`). APScheduler runs the rounds on an interval
with ``max_instances=1`` and ``coalesce=True``, so rounds never overlap and a slow round does
not queue up a burst of late ones.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from balancer.engine import decide
from balancer.options import BalancerOptions
from balancer.stability import BalancerState
from exporters.state import PublishedRound, RoundPublisher
from model import Snapshot
from model.plan import RoundResult

log = logging.getLogger("pve_rebalancer.service")


def summary_line(result: RoundResult) -> str:
    """The one log line per round: imbalance, trigger state, chosen moves."""
    moves = ", ".join(f"{m.sid} {m.source}->{m.target}" for m in result.moves) or "none"
    after = "" if result.imbalance_after is None else f" -> {result.imbalance_after:.4f}"
    return (
        f"imbalance {result.imbalance:.4f}{after} (threshold {result.threshold / 100:.2f}), "
        f"triggered {'yes' if result.triggered else 'no'}: {result.reason}; moves: {moves}"
    )


@dataclass
class RoundRunner:
    """Runs rounds one at a time; keeps the balancer state between them."""

    collect: Callable[[], Snapshot]
    publisher: RoundPublisher
    options: BalancerOptions | None = None
    """None: follow the cluster's own CRS settings (datacenter.cfg) every round."""
    state: BalancerState = field(default_factory=BalancerState)
    automation_enabled: bool = False
    """Moves are carried out (by ``on_result``): they are then tracked in flight."""
    clock: Callable[[], float] = time.time
    on_result: Callable[[Snapshot, RoundResult], None] | None = None
    """Called after a successful round (e.g. the actuator, or the demo's live summary)."""
    ha_recommend_only: Callable[[Snapshot], bool] | None = None
    """Evaluated on each round's snapshot: True when HA resources are only recommended (the
    built-in CRS auto-rebalances them); published with the round. None: always False."""
    freeze_gc_after_first_round: bool = False
    """After the first successful round (and its ``on_result``), once per runner:
    ``gc.collect()`` then ``gc.freeze()``. What exists by then (the config cache, everything
    built at start-up and by that round) is long-lived: frozen, later full collections skip it
    instead of scanning it again every time. A failed round does not count: the next
    successful one freezes."""
    _gc_frozen: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run_once(self) -> PublishedRound:
        with self._lock:
            return self._round()

    def _round(self) -> PublishedRound:
        started = time.perf_counter()
        try:
            snapshot = self.collect()
            result, self.state = decide(
                snapshot,
                self.options,
                self.state,
                snapshot.timestamp,
                carry_out=self.automation_enabled,
            )
            ha_only = self.ha_recommend_only is not None and self.ha_recommend_only(snapshot)
        except Exception as error:  # one bad round must not stop the service
            duration = time.perf_counter() - started
            log.exception("round failed")
            published = PublishedRound.failed(
                finished_at=self.clock(), duration_s=duration, error=f"{type(error).__name__}"
                f": {error}"
            )  # fmt: skip
            self.publisher.publish(published)
            self.publisher.record_round(False, duration, published.finished_at)
            return published
        duration = time.perf_counter() - started
        published = PublishedRound.create(
            snapshot,
            result,
            finished_at=self.clock(),
            duration_s=duration,
            automation_enabled=self.automation_enabled,
            ha_recommend_only=ha_only,
        )
        self.publisher.publish(published)
        self.publisher.record_round(True, duration, published.finished_at)
        log.info("round %.0f ms: %s", duration * 1000, summary_line(result))
        if self.on_result is not None:
            self.on_result(snapshot, result)
        if self.freeze_gc_after_first_round and not self._gc_frozen:
            self._gc_frozen = True
            gc.collect()
            gc.freeze()
            log.info("garbage collector: %d objects frozen", gc.get_freeze_count())
        return published


def start_schedule(runner: RoundRunner, interval_s: float) -> BackgroundScheduler:
    """Run ``runner`` now and then every ``interval_s`` seconds in a background thread."""
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        runner.run_once,
        "interval",
        seconds=interval_s,
        id="round",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
        misfire_grace_time=None,
    )
    scheduler.start()
    return scheduler
