"""Simulator: determinism, exact RRD layouts, values read back through librrd, evolution."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rrdtool

from model.rrd_schema import (
    GUEST_9,
    GUEST_OLD,
    HEARTBEAT,
    NODE_9,
    NODE_OLD,
    STORAGE_9,
    STORAGE_OLD,
    RrdLayout,
)
from simulator.cluster import SimulatedCluster, simulate_cluster
from simulator.model import SIM_NOW
from simulator.rrd_writer import format_updates

HOURS = 6
POINTS = HOURS * 60 + 1


def fetch(path: Path, first: int, last: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows of the 1-minute AVERAGE archive for update times first..last (NaN = unknown)."""
    (start, _end, step), names, rows = rrdtool.fetch(
        str(path), "AVERAGE", "-r", "60", "-s", str(first - 60), "-e", str(last)
    )
    times = start + step * (1 + np.arange(len(rows)))
    keep = (times >= first) & (times <= last)
    table = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    return times[keep], {name: table[keep, i] for i, name in enumerate(names)}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCluster:
    out = tmp_path_factory.mktemp("sim")
    return simulate_cluster(out, 3, 20, HOURS / 24, seed=7, workers=1)


def history_times() -> np.ndarray:
    return SIM_NOW - 60 * np.arange(POINTS - 1, -1, -1, dtype=np.int64)


def tree_bytes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part in skip for part in p.parts)
    }


# ----- determinism -------------------------------------------------------------------------


def test_same_seed_gives_same_bytes_and_values(tmp_path: Path, sim: SimulatedCluster) -> None:
    again = simulate_cluster(tmp_path / "again", 3, 20, HOURS / 24, seed=7, workers=1)
    assert sim.now == again.now == SIM_NOW
    ours, theirs = tree_bytes(sim.out, skip=("rrd",)), tree_bytes(again.out, skip=("rrd",))
    assert ours.keys() == theirs.keys()
    assert len(ours) > 25
    assert [name for name in ours if ours[name] != theirs[name]] == []
    # librrd starts every archive at a random row, so RRD files are compared by content
    files = sorted(p.relative_to(sim.rrd_root) for p in sim.rrd_root.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(again.rrd_root) for p in again.rrd_root.rglob("*") if p.is_file()
    )
    assert len(files) == 3 + 20 + 9
    for name in files:
        for cf in ("AVERAGE", "MAX"):
            for resolution in ("60", "1800"):
                args = (cf, "-r", resolution, "-s", str(SIM_NOW - 6 * 3600), "-e", str(SIM_NOW))
                assert rrdtool.fetch(str(sim.rrd_root / name), *args) == rrdtool.fetch(
                    str(again.rrd_root / name), *args
                )


def test_other_seed_changes_layout(tmp_path: Path, sim: SimulatedCluster) -> None:
    other = simulate_cluster(tmp_path / "other", 3, 20, 0.05, seed=8, workers=1)
    ours = (sim.etc_root / ".vmlist").read_text()
    assert (other.etc_root / ".vmlist").read_text() != ours
    assert other.now == SIM_NOW


# ----- RRD layout ----------------------------------------------------------------------------


def check_layout(path: Path, layout: RrdLayout) -> None:
    info = rrdtool.info(str(path))
    assert info["step"] == 60
    names = sorted(
        {m.group(1) for k in info if (m := re.match(r"ds\[(\w+)\]\.type", k))},
        key=lambda n: info[f"ds[{n}].index"],
    )
    assert tuple(names) == layout.ds
    for name in names:
        expected = "DERIVE" if name in {"netin", "netout", "diskread", "diskwrite"} else "GAUGE"
        assert info[f"ds[{name}].type"] == expected
        assert info[f"ds[{name}].minimal_heartbeat"] == HEARTBEAT
        assert info[f"ds[{name}].min"] == 0.0
        assert info[f"ds[{name}].max"] is None
    rras = []
    index = 0
    while f"rra[{index}].cf" in info:
        rras.append(
            (
                info[f"rra[{index}].cf"],
                info[f"rra[{index}].pdp_per_row"],
                info[f"rra[{index}].rows"],
                info[f"rra[{index}].xff"],
            )
        )
        index += 1
    expected_rras = [(cf, s, r, 0.5) for cf in ("AVERAGE", "MAX") for s, r in layout.rras]
    assert rras == expected_rras


def test_rrd_files_have_the_pve9_schema(sim: SimulatedCluster) -> None:
    check_layout(sim.rrd_root / "pve-vm-9.0" / "100", GUEST_9)
    check_layout(sim.rrd_root / "pve-node-9.0" / "pve1", NODE_9)
    check_layout(sim.rrd_root / "pve-storage-9.0" / "pve2" / "ceph-vm", STORAGE_9)
    guest_files = sorted(p.name for p in (sim.rrd_root / "pve-vm-9.0").iterdir())
    assert guest_files == sorted(str(v) for v in range(100, 120))
    assert rrdtool.last(str(sim.rrd_root / "pve-vm-9.0" / "100")) == SIM_NOW


# ----- values read back ----------------------------------------------------------------------


def test_guest_values_match_the_generator(sim: SimulatedCluster) -> None:
    times = history_times()
    expected = sim.guest_series(times)
    for index, guest in enumerate(sim.spec.guests):
        got_times, got = fetch(sim.rrd_root / "pve-vm-9.0" / str(guest.vmid), times[0], SIM_NOW)
        assert np.array_equal(got_times, times)
        for name in ("maxcpu", "cpu", "maxmem", "mem", "memhost", "pressurecpusome"):
            np.testing.assert_allclose(
                got[name], expected.columns[name][index], rtol=1e-9, atol=1e-10, err_msg=name
            )
        if guest.running:
            assert np.all(got["cpu"] >= 0)
            assert np.all(got["cpu"] <= 1)
            assert np.all(got["mem"] <= guest.maxmem)
            counter = expected.columns["netin"][index]
            rate = np.diff(counter) / 60.0
            np.testing.assert_allclose(got["netin"][1:], rate, rtol=1e-9)
            assert np.all(rate >= 0)
        else:
            assert np.all(np.isnan(got["cpu"]))
            assert np.all(np.isnan(got["mem"]))
            assert got["maxmem"][-1] == guest.maxmem


def test_usage_has_diurnal_variation_and_stopped_guests_exist(sim: SimulatedCluster) -> None:
    day = SIM_NOW - 60 * np.arange(1440, dtype=np.int64)[::-1]
    series = sim.guest_series(day)
    running = np.array([g.running for g in sim.spec.guests])
    cpu = series.columns["cpu"][running]
    assert np.all((cpu >= 0) & (cpu <= 1))
    spread = np.nanmax(cpu, axis=1) - np.nanmin(cpu, axis=1)
    assert np.median(spread) > 0.01
    assert (~running).any()
    assert running.sum() >= 15


def test_node_series_is_guest_sum_plus_overhead(sim: SimulatedCluster) -> None:
    times = history_times()[-60:]
    guest_cores = np.zeros((len(sim.node_names), len(times)))
    guest_mem = np.zeros_like(guest_cores)
    for guest in sim.spec.guests:
        _, got = fetch(sim.rrd_root / "pve-vm-9.0" / str(guest.vmid), times[0], times[-1])
        if guest.running:
            row = sim.node_names.index(guest.node)
            guest_cores[row] += got["cpu"] * got["maxcpu"]
            guest_mem[row] += got["mem"]
    for row, node in enumerate(sim.spec.nodes):
        _, got = fetch(sim.rrd_root / "pve-node-9.0" / node.name, times[0], times[-1])
        assert np.all(got["maxcpu"] == node.cores)
        assert np.all(got["memtotal"] == node.memtotal)
        assert np.all(got["memused"] <= got["memtotal"])
        unclipped = got["memused"] < got["memtotal"]
        np.testing.assert_allclose(
            (got["memused"] - guest_mem[row])[unclipped], node.host_mem, rtol=1e-9
        )
        unsaturated = got["cpu"] < 1.0
        overhead = (got["cpu"] * node.cores - guest_cores[row])[unsaturated]
        assert np.all(overhead >= node.host_cpu - 1e-6)
        assert np.all(overhead <= node.host_cpu * 2.5)
        np.testing.assert_allclose(got["memavailable"], got["memtotal"] - got["memused"])


def test_placement_is_unbalanced(tmp_path: Path) -> None:
    from simulator.model import build_cluster

    spec = build_cluster(8, 400, seed=3)
    per_node = {n.name: 0.0 for n in spec.nodes}
    capacity = {n.name: float(n.memtotal) for n in spec.nodes}
    for guest in spec.guests:
        per_node[guest.node] += guest.maxmem
    ratios = np.array([per_node[n] / capacity[n] for n in per_node])
    assert ratios.max() / ratios.min() > 1.3
    kinds = [g.kind for g in spec.guests]
    assert 0.1 < kinds.count("lxc") / len(kinds) < 0.3
    ha = sum(g.ha_state is not None for g in spec.guests) / len(spec.guests)
    assert 0.45 < ha < 0.75
    stopped = sum(not g.running for g in spec.guests) / len(spec.guests)
    assert 0.04 < stopped < 0.2


# ----- rules honoured by placement -----------------------------------------------------------


def test_rules_hold_in_initial_placement(sim: SimulatedCluster) -> None:
    by_sid = {g.sid: g for g in sim.spec.guests}
    assert {r.type for r in sim.spec.rules} == {"node-affinity", "resource-affinity"}
    for rule in sim.spec.rules:
        nodes = [by_sid[s].node for s in rule.resources]
        assert all(by_sid[s].ha_state == "started" for s in rule.resources)
        if rule.type == "node-affinity" and rule.strict:
            assert set(nodes) <= {n for n, _ in rule.nodes}
        if rule.affinity == "positive":
            assert len(set(nodes)) == 1
        if rule.affinity == "negative":
            assert len(set(nodes)) == len(nodes)


# ----- /etc/pve ------------------------------------------------------------------------------

SECTION_HEADER = re.compile(r"^[a-z-]+: \S+$")
SECTION_ENTRY = re.compile(r"^\t[a-z_-]+ \S.*$")


def parse_sections(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """Strict mini-parser: header, TAB-indented entries, exactly one blank line between."""
    out = []
    for block in text.rstrip("\n").split("\n\n"):
        lines = block.split("\n")
        assert SECTION_HEADER.match(lines[0]), lines[0]
        kind, ident = lines[0].split(": ")
        entries = {}
        for line in lines[1:]:
            assert SECTION_ENTRY.match(line), repr(line)
            key, value = line[1:].split(" ", 1)
            entries[key] = value
        out.append((kind, ident, entries))
    return out


def test_section_config_files(sim: SimulatedCluster) -> None:
    ha = sim.etc_root / "ha"
    resources = parse_sections((ha / "resources.cfg").read_text())
    managed = {g.sid: g for g in sim.spec.guests if g.ha_state}
    assert [f"{k}:{i}" for k, i, _ in resources] == list(managed)
    for kind, ident, entries in resources:
        assert kind in ("vm", "ct")
        assert entries["state"] == managed[f"{kind}:{ident}"].ha_state
        assert entries.get("auto-rebalance", "1") in ("0", "1")
    rules = parse_sections((ha / "rules.cfg").read_text())
    for kind, _ident, entries in rules:
        for sid in entries["resources"].split(","):
            assert sid in managed
        if kind == "node-affinity":
            assert re.fullmatch(r"(pve\d+:\d+)(,pve\d+:\d+)*", entries["nodes"])
            assert entries["strict"] in ("0", "1")
        else:
            assert entries["affinity"] in ("positive", "negative")
    storage = parse_sections((sim.etc_root / "storage.cfg").read_text())
    assert [(k, i) for k, i, _ in storage] == [
        ("dir", "local"),
        ("lvmthin", "local-lvm"),
        ("rbd", "ceph-vm"),
    ]
    assert not (ha / "groups.cfg").exists()
    crs = (sim.etc_root / "datacenter.cfg").read_text().splitlines()
    assert (
        "crs: ha=dynamic,ha-rebalance-on-start=1,ha-auto-rebalance=1,ha-auto-rebalance-threshold=10"
    ) in crs


def test_guest_configs_vmlist_and_members(sim: SimulatedCluster) -> None:
    vmlist = json.loads((sim.etc_root / ".vmlist").read_text())
    assert len(vmlist["ids"]) == 20
    snapshots = 0
    for guest in sim.spec.guests:
        entry = vmlist["ids"][str(guest.vmid)]
        assert entry == {"node": guest.node, "type": guest.kind, "version": vmlist["version"]}
        sub = "qemu-server" if guest.kind == "qemu" else "lxc"
        path = sim.etc_root / "nodes" / guest.node / sub / f"{guest.vmid}.conf"
        text = path.read_text()
        current = text.split("\n[", 1)[0]
        keys = {}
        for line in current.rstrip("\n").split("\n"):
            assert re.fullmatch(r"[a-z0-9_]+: \S.*", line), line
            key, value = line.split(": ", 1)
            keys[key] = value
        assert int(keys["memory"]) * 1024**2 == guest.maxmem
        assert keys["name" if guest.kind == "qemu" else "hostname"] == guest.name
        if guest.tags:
            assert keys["tags"] == ";".join(guest.tags)
        if "\n[" in text:
            snapshots += 1
            assert re.search(r"^\[[\w-]+\]$", text, re.MULTILINE)
            assert keys["parent"] == "before-upgrade"
        vcpus = int(keys.get("vcpus", 0)) or int(keys.get("sockets", 1)) * int(keys.get("cores", 0))
        if guest.kind == "qemu":
            limit = float(keys.get("cpulimit", 0)) or float("inf")
            assert guest.maxcpu(0) == min(vcpus, limit)
    assert snapshots >= 1
    members = json.loads((sim.etc_root / ".members").read_text())
    assert members["cluster"]["nodes"] == 3
    assert members["cluster"]["quorate"] == 1
    assert set(members["nodelist"]) == {"pve1", "pve2", "pve3"}
    pools = [
        ln for ln in (sim.etc_root / "user.cfg").read_text().splitlines() if ln.startswith("pool:")
    ]
    assert pools
    assert all(re.fullmatch(r"pool:\w+:[^:]*:[\d,]*::", ln) for ln in pools)


def test_manager_status(sim: SimulatedCluster) -> None:
    status = json.loads((sim.etc_root / "ha" / "manager_status").read_text())
    assert status["node_status"] == {"pve1": "online", "pve2": "online", "pve3": "online"}
    for guest in sim.spec.guests:
        if guest.ha_state is None:
            assert guest.sid not in status["service_status"]
        else:
            entry = status["service_status"][guest.sid]
            assert entry["node"] == guest.node
            assert entry["state"] == ("started" if guest.running else "stopped")


# ----- status dump ---------------------------------------------------------------------------


def test_dump_matches_last_rrd_point(sim: SimulatedCluster) -> None:
    lines = sim.dump_path.read_text().splitlines()
    assert len(lines) == 3 + 20 + 9
    entries = {ln.split(":", 1)[0]: ln.split(":")[1:] for ln in lines}
    for guest in sim.spec.guests:
        fields = entries[f"pve-vm-9.0/{guest.vmid}"]
        assert len(fields) == 22
        assert fields[1] == guest.name
        assert fields[2] == ("running" if guest.running else "stopped")
        assert int(fields[4]) == SIM_NOW
        _, got = fetch(sim.rrd_root / "pve-vm-9.0" / str(guest.vmid), SIM_NOW, SIM_NOW)
        if guest.running:
            assert float(fields[6]) == pytest.approx(got["cpu"][0], abs=1e-6)
            assert float(fields[8]) == got["mem"][0]
        else:
            assert fields[6] == "U"
            assert fields[8] == "U"
            assert fields[0] == "0"
    node = entries["pve-node-9.0/pve2"]
    assert len(node) == 22
    _, got = fetch(sim.rrd_root / "pve-node-9.0" / "pve2", SIM_NOW, SIM_NOW)
    assert float(node[4]) == got["maxcpu"][0]
    assert float(node[5]) == pytest.approx(got["cpu"][0], abs=1e-6)
    assert float(node[8]) == got["memused"][0]
    assert entries["pve-storage-9.0/pve1/local-lvm"][0] == str(SIM_NOW)


# ----- evolution -----------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> SimulatedCluster:
    return simulate_cluster(tmp_path / "live", 3, 20, 1 / 24, seed=11, workers=1)


def test_advance_appends_points(live: SimulatedCluster) -> None:
    written = live.advance(600)
    assert list(written) == [SIM_NOW + 60 * k for k in range(1, 11)]
    assert live.now == SIM_NOW + 600
    path = live.rrd_root / "pve-vm-9.0" / "101"
    assert rrdtool.last(str(path)) == SIM_NOW + 600
    _, got = fetch(path, SIM_NOW + 60, SIM_NOW + 600)
    expected = live.guest_series(written, np.array([1]))
    np.testing.assert_allclose(got["mem"], expected.columns["mem"][0], rtol=1e-12)
    assert rrdtool.last(str(live.rrd_root / "pve-node-9.0" / "pve3")) == SIM_NOW + 600
    assert f":{SIM_NOW + 600}:" in live.dump_path.read_text()


def test_migration_moves_usage_after_its_duration(live: SimulatedCluster) -> None:
    guest = max(
        (g for g in live.spec.guests if g.running and g.kind == "qemu"), key=lambda g: g.maxmem
    )
    source = guest.node
    target = next(n for n in live.node_names if n != source)
    migration = live.migrate(guest.vmid, target)
    assert migration.done - migration.started >= 2
    status = json.loads((live.etc_root / "ha" / "manager_status").read_text())
    if guest.ha_state is not None:
        assert status["service_status"][guest.sid]["state"] == "migrate"
        assert status["service_status"][guest.sid]["target"] == target
    assert (live.etc_root / "nodes" / source / "qemu-server" / f"{guest.vmid}.conf").exists()

    steps = -(-(migration.done - live.now) // 60) + 2
    written = live.advance(60 * steps)
    conf = live.etc_root / "nodes" / target / "qemu-server" / f"{guest.vmid}.conf"
    assert conf.exists()
    assert not (live.etc_root / "nodes" / source / "qemu-server" / f"{guest.vmid}.conf").exists()
    vmlist = json.loads((live.etc_root / ".vmlist").read_text())
    assert vmlist["ids"][str(guest.vmid)]["node"] == target
    assert vmlist["version"] == 2
    status = json.loads((live.etc_root / "ha" / "manager_status").read_text())
    if guest.ha_state is not None:
        assert status["service_status"][guest.sid] == {
            "node": target,
            "state": "started",
            "uid": status["service_status"][guest.sid]["uid"],
        }
    index = live.guest_index(guest.vmid)
    _, got = fetch(live.rrd_root / "pve-vm-9.0" / str(guest.vmid), written[0], written[-1])
    before = written < migration.done
    nodes = {}
    for name in (source, target):
        nodes[name] = fetch(live.rrd_root / "pve-node-9.0" / name, written[0], written[-1])[1]
    # the guest's memory counts on the source before, on the target after the move
    others = [g for g in live.spec.guests if g.running and g.vmid != guest.vmid]
    for name in (source, target):
        rest = np.zeros(len(written))
        for other in others:
            if other.node == name:
                rest += fetch(
                    live.rrd_root / "pve-vm-9.0" / str(other.vmid), written[0], written[-1]
                )[1]["mem"]
        host = live.spec.nodes[live.node_names.index(name)].host_mem
        own = nodes[name]["memused"] - rest - host
        on_node = before if name == source else ~before
        unclipped = nodes[name]["memused"] < nodes[name]["memtotal"]
        np.testing.assert_allclose(
            own[on_node & unclipped], got["mem"][on_node & unclipped], rtol=1e-9
        )
        np.testing.assert_allclose(own[~on_node & unclipped], 0.0, atol=1.0)
    assert before.any()
    assert (~before).any()
    assert live.guest_series(written[-1:], np.array([index])).mem_bytes[0, 0] == got["mem"][-1]


def test_migration_rejects_bad_requests(live: SimulatedCluster) -> None:
    guest = live.spec.guests[0]
    with pytest.raises(ValueError, match="unknown target"):
        live.migrate(guest.vmid, "nope")
    with pytest.raises(ValueError, match="already runs"):
        live.migrate(guest.vmid, guest.node)
    with pytest.raises(KeyError, match="no guest 99"):
        live.migrate(99, "pve1")


def test_stop_start_and_maintenance(live: SimulatedCluster) -> None:
    guest = next(g for g in live.spec.guests if g.running)
    live.stop_guest(guest.vmid)
    line = next(
        ln
        for ln in live.dump_path.read_text().splitlines()
        if ln.startswith(f"pve-vm-9.0/{guest.vmid}:")
    )
    assert line.split(":")[3] == "stopped"
    assert line.split(":")[7] == "U"
    written = live.advance(120)
    _, got = fetch(live.rrd_root / "pve-vm-9.0" / str(guest.vmid), written[0], written[-1])
    assert np.all(np.isnan(got["cpu"]))
    assert np.all(np.isnan(got["mem"]))
    live.start_guest(guest.vmid)
    written = live.advance(120)
    _, got = fetch(live.rrd_root / "pve-vm-9.0" / str(guest.vmid), written[0], written[-1])
    assert np.all(got["mem"] > 0)
    live.set_maintenance("pve2", True)
    status = json.loads((live.etc_root / "ha" / "manager_status").read_text())
    assert status["node_status"]["pve2"] == "maintenance"
    live.set_maintenance("pve2", False)
    status = json.loads((live.etc_root / "ha" / "manager_status").read_text())
    assert status["node_status"]["pve2"] == "online"


def test_existing_output_is_refused(sim: SimulatedCluster) -> None:
    with pytest.raises(FileExistsError, match="not empty"):
        simulate_cluster(sim.out, 3, 20, 0.01, seed=7, workers=1)


# ----- legacy files and groups ---------------------------------------------------------------


def test_legacy_files_and_groups(tmp_path: Path) -> None:
    old = simulate_cluster(
        tmp_path / "old", 3, 12, 0.05, seed=5, legacy_files=True, legacy_groups=True, workers=1
    )
    check_layout(old.rrd_root / "pve2-vm" / "100", GUEST_OLD)
    check_layout(old.rrd_root / "pve2-node" / "pve1", NODE_OLD)
    check_layout(old.rrd_root / "pve2-storage" / "pve1" / "local", STORAGE_OLD)
    newest_old = rrdtool.last(str(old.rrd_root / "pve2-vm" / "100"))
    first_new = SIM_NOW - 72 * 60
    assert newest_old == first_new - 60
    groups = parse_sections((old.etc_root / "ha" / "groups.cfg").read_text())
    assert groups
    assert all(kind == "group" for kind, _, _ in groups)
    assert all(e["restricted"] in ("0", "1") for _, _, e in groups)
    referenced = {
        e["group"]
        for _, _, e in parse_sections((old.etc_root / "ha" / "resources.cfg").read_text())
        if "group" in e
    }
    assert referenced == {ident for _, ident, _ in groups}
    rules_text = (old.etc_root / "ha" / "rules.cfg").read_text()
    assert "node-affinity" not in rules_text
    dump = old.dump_path.read_text()
    old_vm = next(ln for ln in dump.splitlines() if ln.startswith("pve2.3-vm/100:"))
    assert len(old_vm.split(":")) == 1 + 15


# ----- formatting ----------------------------------------------------------------------------


def test_format_updates_round_trips() -> None:
    times = np.array([1_767_225_600, 1_767_225_660], dtype=np.int64)
    floats = np.array([[0.125, np.nan], [123.4567890123, 0.0]])
    ints = np.array([[9_007_199_254_740_000.0, 5.0], [0.0, np.nan]])
    lines = format_updates(times, [floats, ints], [False, True])
    assert len(lines) == 4
    parsed = [line.split(":") for line in lines]
    assert [int(p[0]) for p in parsed] == [times[0], times[1], times[0], times[1]]
    assert float(parsed[0][1]) == 0.125
    assert parsed[1][1] == "U"
    assert float(parsed[2][1]) == pytest.approx(123.4567890123, abs=1e-11)
    assert int(parsed[0][2]) == 9_007_199_254_740_000
    assert parsed[3][2] == "U"
    assert all(re.fullmatch(r"\d+", p[2]) for p in parsed if p[2] != "U")
    with pytest.raises(ValueError, match="negative"):
        format_updates(times, [-floats], [False])


def test_process_pool_writes_the_same_values(
    tmp_path: Path, sim: SimulatedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simulator.cluster

    monkeypatch.setattr(simulator.cluster, "POINTS_PER_CHUNK", 2_000)
    pooled = simulate_cluster(tmp_path / "pooled", 3, 20, HOURS / 24, seed=7, workers=2)
    assert len(pooled._guest_chunks(POINTS)) == 4
    first = int(history_times()[0])
    for name in ["pve-node-9.0/pve1", "pve-node-9.0/pve3", "pve-vm-9.0/100", "pve-vm-9.0/119"]:
        _, ours = fetch(sim.rrd_root / name, first, SIM_NOW)
        _, theirs = fetch(pooled.rrd_root / name, first, SIM_NOW)
        for ds, values in ours.items():
            np.testing.assert_allclose(theirs[ds], values, rtol=1e-12, err_msg=f"{name} {ds}")
