"""The collector end to end: a simulated cluster on disk read back into one snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from collector.pvecfg.tree import PveTreeNotFoundError
from collector.snapshot_builder import CollectOptions, build_snapshot
from model import Snapshot
from model.snapshot import SCHEMA_PATH
from simulator.cluster import SimulatedCluster, simulate_cluster

SCHEMA = json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCluster:
    return simulate_cluster(tmp_path_factory.mktemp("sim") / "c", 4, 30, days=0.25, seed=3)


def collect(sim: SimulatedCluster, **options: object) -> Snapshot:
    opts = CollectOptions(now=sim.now, status_dump=sim.dump_path, **options)  # type: ignore[arg-type]
    return build_snapshot(sim.etc_root, sim.rrd_root, opts)


def test_last_view_equals_the_generator_at_now(sim: SimulatedCluster) -> None:
    snap = collect(sim, usage="last")
    jsonschema.validate(snap.to_json(), SCHEMA)
    assert snap.issues == []
    now = np.array([sim.now])
    series = sim.guest_series(now)
    by_vmid = {g.vmid: g for g in snap.guests}
    assert sorted(by_vmid) == sorted(g.vmid for g in sim.spec.guests)
    for index, spec in enumerate(sim.spec.guests):
        guest = by_vmid[spec.vmid]
        assert guest.node == spec.node
        assert guest.status == ("running" if spec.running else "stopped")
        if spec.running:
            assert guest.cpu == pytest.approx(series.cores[index, 0], rel=1e-6, abs=1e-9)
            assert guest.mem == pytest.approx(series.mem_bytes[index, 0], rel=1e-9)
        else:
            assert guest.cpu is None
            assert guest.mem is None
    nodes = sim.node_series(now)
    for i, node in enumerate(snap.nodes):
        assert node.name == sim.node_names[i]
        assert node.maxcpu == nodes["maxcpu"][i, 0]
        assert node.maxmem == nodes["memtotal"][i, 0]
        assert node.mem == pytest.approx(nodes["memused"][i, 0], rel=1e-9)
        assert node.cpu == pytest.approx(nodes["cpu"][i, 0] * nodes["maxcpu"][i, 0], rel=1e-6)
        assert node.online
        assert not node.maintenance


def test_smoothed_views_lie_within_the_window(sim: SimulatedCluster) -> None:
    times = np.arange(sim.now - 3600 + 60, sim.now + 1, 60)
    series = sim.guest_series(times)
    for view in ("ewma", "p95", "max"):
        snap = collect(sim, usage=view)
        assert snap.usage_view == view
        for index, spec in enumerate(sim.spec.guests):
            if not spec.running:
                continue
            guest = snap.guest(spec.sid)
            assert guest is not None
            assert guest.mem is not None
            window = series.mem_bytes[index]
            assert window.min() * (1 - 1e-9) <= guest.mem <= window.max() * (1 + 1e-9)
        node = snap.nodes[0]
        assert node.cpu_last is not None
        assert node.mem_last is not None


def test_configuration_reaches_the_snapshot(sim: SimulatedCluster) -> None:
    snap = collect(sim)
    assert snap.cluster
    assert snap.rules
    assert snap.crs.ha in ("static", "dynamic")
    ha = [g for g in snap.guests if g.ha is not None]
    assert ha
    assert all(g.sid.startswith(("vm:", "ct:")) for g in ha)
    specs = {g.vmid: g for g in sim.spec.guests}
    for guest in snap.guests:
        assert guest.maxmem == specs[guest.vmid].memory_mib * 2**20
    assert snap.storages


def test_bad_input_becomes_findings_and_the_rest_is_collected(
    sim: SimulatedCluster, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(sim.out, copy)
    victim = sim.spec.guests[0]
    (copy / "rrd" / "pve-vm-9.0" / str(victim.vmid)).write_bytes(b"not an rrd file")
    (copy / "rrd" / "pve-vm-9.0" / "99999").write_bytes(b"RRD\x00")
    rules = copy / "etc" / "pve" / "ha" / "rules.cfg"
    rules.write_text(rules.read_text() + "\nfancy-rule: what\n\tresources vm:1\n")
    snap = build_snapshot(
        copy / "etc" / "pve", copy / "rrd", CollectOptions(now=sim.now, status_dump=None)
    )
    kinds = {(f.kind, f.where) for f in snap.issues}
    assert any(k == "rrd-unreadable" and str(victim.vmid) in w for k, w in kinds)
    assert any(k == "vmlist-without-rrd" and w == victim.sid for k, w in kinds)
    assert any(k == "config-unknown-section" and "rules.cfg:" in w for k, w in kinds)
    assert len(snap.guests) == len(sim.spec.guests)
    broken = snap.guest(victim.sid)
    assert broken is not None
    assert broken.mem is None
    others = [g for g in snap.guests if g.sid != victim.sid and g.status == "running"]
    assert others
    assert all(g.mem is not None for g in others)


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(PveTreeNotFoundError):
        build_snapshot(tmp_path / "nope", tmp_path)


def test_forecast_history_is_read_on_a_slower_interval(tmp_path: Path) -> None:
    from collector.snapshot_builder import HistoryCache

    cluster = simulate_cluster(tmp_path / "c", 3, 12, days=0.25, seed=9)
    history = HistoryCache(max_age_s=900)

    def collect() -> Snapshot:
        options = CollectOptions(now=cluster.now, usage="forecast")
        return build_snapshot(cluster.etc_root, cluster.rrd_root, options, history=history)

    first = collect()
    assert history.long_reads == 2  # nodes and guests
    fallback = [f for f in first.issues if f.kind == "forecast-fallback"]
    assert fallback  # a quarter of a day is less than two seasons of history
    cluster.advance(120)
    second = collect()
    assert history.long_reads == 2  # within max_age: the long history is not read again
    assert [f for f in second.issues if f.kind == "forecast-fallback"] == fallback
    assert [n.cpu for n in second.nodes] == [n.cpu for n in first.nodes]
    assert [n.cpu_last for n in second.nodes] != [n.cpu_last for n in first.nodes]
    cluster.advance(900)
    collect()
    assert history.long_reads == 4


def test_service_rounds_with_a_config_cache_equal_a_one_shot_collect(
    sim: SimulatedCluster,
) -> None:
    from collector.pvecfg.guestcache import GuestConfigCache

    options = CollectOptions(now=sim.now, status_dump=sim.dump_path)
    expected = build_snapshot(sim.etc_root, sim.rrd_root, options).to_json()
    cache = GuestConfigCache(racy_window_s=0)  # the files just written count as settled
    for _ in range(3):
        assert build_snapshot(sim.etc_root, sim.rrd_root, options, cache=cache).to_json() == (
            expected
        )
    assert cache.hits
