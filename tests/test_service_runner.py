"""RoundRunner: the HA recommend-only flag is evaluated per round and published with it; the
heap is frozen out of the garbage collector's sight after the first successful round."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import replace

import pytest

from cli.service import RoundRunner
from exporters.state import RoundPublisher
from model import Snapshot
from tests.test_exporter_support import FINISHED_AT, make_snapshot


def test_ha_recommend_only_reaches_the_published_round() -> None:
    snapshots = iter([make_snapshot(), replace(make_snapshot(), crs=replace(
        make_snapshot().crs, auto_rebalance=False))])  # fmt: skip
    seen: list[Snapshot] = []

    def ha_only(snapshot: Snapshot) -> bool:
        seen.append(snapshot)
        return snapshot.crs.auto_rebalance

    publisher = RoundPublisher()
    runner = RoundRunner(
        collect=lambda: next(snapshots),
        publisher=publisher,
        clock=lambda: FINISHED_AT,
        ha_recommend_only=ha_only,
    )
    first = runner.run_once()
    assert first.ok
    assert first.ha_recommend_only is True
    assert publisher.latest() is first
    second = runner.run_once()
    assert second.ok
    assert second.ha_recommend_only is False
    assert [s.crs.auto_rebalance for s in seen] == [True, False]


def test_ha_recommend_only_defaults_to_false() -> None:
    runner = RoundRunner(
        collect=make_snapshot, publisher=RoundPublisher(), clock=lambda: FINISHED_AT
    )
    published = runner.run_once()
    assert published.ok
    assert published.ha_recommend_only is False


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Nothing frozen before the test, and nothing left frozen after it."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def counting_freezes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """gc.freeze as the runner calls it, each call noted (and made)."""
    calls: list[int] = []
    real = gc.freeze

    def counting() -> None:
        calls.append(1)
        real()

    monkeypatch.setattr(gc, "freeze", counting)
    return calls


def test_the_first_successful_round_freezes_the_heap_once(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    freezes = counting_freezes(monkeypatch)
    runner = RoundRunner(
        collect=make_snapshot,
        publisher=RoundPublisher(),
        clock=lambda: FINISHED_AT,
        freeze_gc_after_first_round=True,
    )
    assert gc.get_freeze_count() == 0

    assert runner.run_once().ok
    after_first = gc.get_freeze_count()
    assert after_first > 0
    assert freezes == [1]

    assert runner.run_once().ok
    # Not frozen again: the count may only shrink (frozen objects freed by refcount).
    assert gc.get_freeze_count() <= after_first
    assert freezes == [1]


def test_a_failed_first_round_does_not_freeze_the_next_successful_one_does(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    freezes = counting_freezes(monkeypatch)
    outcomes: Iterator[Snapshot | None] = iter([None, make_snapshot(), make_snapshot()])

    def collect() -> Snapshot:
        snapshot = next(outcomes)
        if snapshot is None:
            raise RuntimeError("collect failed")
        return snapshot

    runner = RoundRunner(
        collect=collect,
        publisher=RoundPublisher(),
        clock=lambda: FINISHED_AT,
        freeze_gc_after_first_round=True,
    )

    assert not runner.run_once().ok
    assert gc.get_freeze_count() == 0
    assert freezes == []

    assert runner.run_once().ok
    after_success = gc.get_freeze_count()
    assert after_success > 0
    assert freezes == [1]

    assert runner.run_once().ok
    assert gc.get_freeze_count() <= after_success
    assert freezes == [1]


def test_without_the_flag_nothing_is_frozen(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    freezes = counting_freezes(monkeypatch)
    runner = RoundRunner(
        collect=make_snapshot, publisher=RoundPublisher(), clock=lambda: FINISHED_AT
    )

    for _ in range(2):
        assert runner.run_once().ok

    assert gc.get_freeze_count() == 0
    assert freezes == []
