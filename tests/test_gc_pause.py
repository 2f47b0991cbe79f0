"""collector.gc_pause: the cyclic collector is held off while a snapshot is built."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector import snapshot_builder
from collector.gc_pause import gc_paused
from collector.pvecfg.tree import PveTreeNotFoundError
from collector.snapshot_builder import CollectOptions, build_snapshot
from simulator.cluster import SimulatedCluster, simulate_cluster


@pytest.fixture(autouse=True)
def gc_enabled_around() -> Iterator[None]:
    """Every test starts with the collector enabled, and it is enabled again after it."""
    gc.enable()
    yield
    gc.enable()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCluster:
    return simulate_cluster(tmp_path_factory.mktemp("sim") / "c", 2, 8, days=0.05, seed=5)


def test_disabled_inside_and_enabled_after() -> None:
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_caller_that_disabled_it_keeps_it_disabled() -> None:
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_enabled_again_after_an_exception_in_the_body() -> None:
    seen: list[bool] = []

    def body() -> None:
        with gc_paused():
            seen.append(gc.isenabled())
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        body()
    assert seen == [False]
    assert gc.isenabled()


def test_nested_pauses_enable_only_at_the_outermost_exit() -> None:
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def record_gc_state_in_read_tree(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """``read_tree`` as build_snapshot calls it, noting whether the collector is enabled."""
    seen: list[bool] = []
    real = snapshot_builder.read_tree

    def recording(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(snapshot_builder, "read_tree", recording)
    return seen


def test_build_snapshot_runs_with_the_collector_paused(
    sim: SimulatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = record_gc_state_in_read_tree(monkeypatch)

    snap = build_snapshot(sim.etc_root, sim.rrd_root, CollectOptions(now=sim.now))

    assert seen == [False]
    assert gc.isenabled()
    assert len(snap.guests) == len(sim.spec.guests)  # a real build, not a short cut


def test_build_snapshot_enables_it_again_when_it_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def failing_read_tree(*_: object, **__: object) -> None:
        seen.append(gc.isenabled())
        raise OSError("pmxcfs went away")

    monkeypatch.setattr(snapshot_builder, "read_tree", failing_read_tree)
    (tmp_path / "pve").mkdir()
    with pytest.raises(OSError, match="pmxcfs went away"):
        build_snapshot(tmp_path / "pve", tmp_path)

    assert seen == [False]
    assert gc.isenabled()


def test_a_missing_root_fails_before_the_configs_with_the_collector_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = record_gc_state_in_read_tree(monkeypatch)

    with pytest.raises(PveTreeNotFoundError):
        build_snapshot(tmp_path / "nope", tmp_path)

    assert seen == []  # refused before reading anything
    assert gc.isenabled()


def test_build_snapshot_leaves_a_disabled_collector_disabled(
    sim: SimulatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = record_gc_state_in_read_tree(monkeypatch)
    gc.disable()

    build_snapshot(sim.etc_root, sim.rrd_root, CollectOptions(now=sim.now))

    assert seen == [False]
    assert not gc.isenabled()
