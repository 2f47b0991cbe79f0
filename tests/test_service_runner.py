"""RoundRunner: the HA recommend-only flag is evaluated per round and published with it."""

from __future__ import annotations

from dataclasses import replace

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
