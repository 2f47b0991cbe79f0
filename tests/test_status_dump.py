"""collector.status_dump: both key generations, unknowns, cores, malformed lines."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.series import frame_schema
from collector.statusdump import parse_status_dump
from model.rrd_schema import GUEST_DS_9, NODE_DS_9

CTIME = 1_767_225_600
GIB = 1024**3


def node_line(prefix: str, name: str, values: Mapping[str, object], ctime: int = CTIME) -> str:
    ds = NODE_DS_9 if prefix == "pve-node-9.0" else NODE_DS_9[:12]
    fields = ["7200", "c", str(ctime), *(str(values.get(d, "U")) for d in ds)]
    return f"{prefix}/{name}:" + ":".join(fields)


def guest_line(
    prefix: str,
    vmid: str,
    values: Mapping[str, object],
    *,
    name: str = "web",
    status: str = "running",
    template: str = "0",
    uptime: str = "500",
    ctime: int | str = CTIME,
) -> str:
    ds = GUEST_DS_9 if prefix == "pve-vm-9.0" else GUEST_DS_9[:10]
    fields = [uptime, name, status, template, str(ctime), *(str(values.get(d, "U")) for d in ds)]
    return f"{prefix}/{vmid}:" + ":".join(fields)


def row(frame: pl.DataFrame, ident: str) -> dict[str, object]:
    rows = frame.filter(pl.col("id") == ident).to_dicts()
    assert len(rows) == 1
    return rows[0]


def test_nodes_of_both_generations() -> None:
    full = {d: float(i + 1) for i, d in enumerate(NODE_DS_9)} | {"maxcpu": 16, "cpu": 0.25}
    text = "\n".join(
        [
            node_line("pve-node-9.0", "pve1", full),
            node_line("pve2-node", "pve2", {"maxcpu": 8, "cpu": 0.5, "memused": 3 * GIB}),
        ]
    )

    read = parse_status_dump(text)

    assert read.findings == []
    assert read.nodes["id"].to_list() == ["pve1", "pve2"]
    new, old = row(read.nodes, "pve1"), row(read.nodes, "pve2")
    assert new["time"] == CTIME
    assert new["uptime"] == 7200
    assert new["cpu"] == pytest.approx(4.0)
    for name in NODE_DS_9:
        if name != "cpu":
            assert new[name] == pytest.approx(full[name])
    assert old["cpu"] == pytest.approx(4.0)
    assert old["memused"] == pytest.approx(3.0 * GIB)
    # Old keys stop after netout: the PVE 9 columns are null, as are U fields.
    assert old["memavailable"] is None
    assert old["pressurememoryfull"] is None
    assert old["loadavg"] is None


def test_guests_unknowns_names_and_flags() -> None:
    running = {"maxcpu": 4, "cpu": 0.5, "maxmem": 8 * GIB, "mem": 2 * GIB, "memhost": 3 * GIB}
    stopped = {"maxcpu": 2, "maxmem": 4 * GIB, "netin": 0}
    text = "\n".join(
        [
            guest_line("pve-vm-9.0", "100", running),
            guest_line("pve2.3-vm", "101", stopped, name="db", status="stopped", uptime="U"),
            guest_line("pve-vm-9.0", "9000", {"maxcpu": 1}, template="1", status="stopped"),
        ]
    )

    read = parse_status_dump(text)

    assert read.findings == []
    assert read.guests["id"].to_list() == ["100", "101", "9000"]
    first, second, third = (row(read.guests, i) for i in ("100", "101", "9000"))
    assert first["cpu"] == pytest.approx(2.0)
    assert first["mem"] == pytest.approx(2.0 * GIB)
    assert first["memhost"] == pytest.approx(3.0 * GIB)
    assert (first["name"], first["status"], first["template"]) == ("web", "running", False)
    assert first["uptime"] == 500
    assert second["cpu"] is None
    assert second["mem"] is None
    assert second["uptime"] is None
    assert second["maxmem"] == pytest.approx(4.0 * GIB)
    assert second["memhost"] is None
    assert (second["name"], second["status"]) == ("db", "stopped")
    assert third["template"] is True
    assert read.guests["time"].to_list() == [CTIME] * 3


def test_frames_have_the_rrd_reader_shape() -> None:
    text = "\n".join(
        [
            node_line("pve-node-9.0", "pve1", {"maxcpu": 4, "cpu": 0.5}),
            guest_line("pve-vm-9.0", "100", {"maxcpu": 2, "cpu": 0.5}),
            f"pve-storage-9.0/pve1/local:{CTIME}:{100 * GIB}:{40 * GIB}",
            f"pve2-storage/pve2/nfs:{CTIME}:{200 * GIB}:U",
        ]
    )

    read = parse_status_dump(text)

    assert read.nodes.drop("uptime").schema == pl.Schema(frame_schema("node"))
    guest_core = read.guests.drop("uptime", "name", "status", "template")
    assert guest_core.schema == pl.Schema(frame_schema("guest"))
    assert read.guests.schema["template"] == pl.Boolean
    assert read.storages.schema == pl.Schema(frame_schema("storage"))
    assert read.storages.rows() == [
        ("pve1/local", CTIME, 100.0 * GIB, 40.0 * GIB),
        ("pve2/nfs", CTIME, 200.0 * GIB, None),
    ]


def test_malformed_lines_are_findings_and_the_rest_is_parsed() -> None:
    good = guest_line("pve-vm-9.0", "100", {"maxcpu": 2, "cpu": 0.5})
    lines = [
        good,
        "",
        "garbage without a key",
        "pve-vm-9.0/abc:1:x:running:0:" + ":".join(["1"] * 18),
        "pve-vm-9.0/102:1:x:running:0:1767225600:2",
        guest_line("pve-vm-9.0", "103", {"maxcpu": "two", "cpu": 0.5}),
        guest_line("pve-vm-9.0", "104", {"maxcpu": 2}, ctime="U"),
        "pve-storage-9.0/nodeonly:1767225600:1:1",
        node_line("pve-node-9.0", "pve1", {"maxcpu": 4, "cpu": 0.5}),
    ]

    read = parse_status_dump("\r\n".join(lines) + "\r\n", source="dump.txt")

    assert [(f.kind, f.where) for f in read.findings] == [
        ("dump-malformed", "dump.txt:3"),
        ("dump-malformed", "dump.txt:4"),
        ("dump-malformed", "dump.txt:5"),
        ("dump-bad-value", "dump.txt:6"),
        ("dump-malformed", "dump.txt:7"),
        ("dump-malformed", "dump.txt:8"),
    ]
    messages = [f.message for f in read.findings]
    assert messages[0].startswith("unknown or missing key prefix")
    assert messages[1].startswith("bad id")
    assert messages[2].startswith("too few fields")
    assert messages[3] == "not a number, taken as unknown: maxcpu"
    assert messages[4].startswith("no valid ctime")
    assert messages[5].startswith("bad id")
    assert read.guests["id"].to_list() == ["100", "103"]
    assert row(read.guests, "100")["cpu"] == pytest.approx(1.0)
    assert row(read.guests, "103")["maxcpu"] is None
    assert row(read.guests, "103")["cpu"] is None
    assert row(read.nodes, "pve1")["cpu"] == pytest.approx(2.0)


def test_guest_name_with_colons_is_rejoined() -> None:
    text = guest_line("pve-vm-9.0", "100", {"maxcpu": 4, "cpu": 0.25}, name="a:b::c")
    old = guest_line("pve2.3-vm", "101", {"maxcpu": 2, "cpu": 0.5}, name="x:y")

    read = parse_status_dump(f"{text}\n{old}\n")

    assert read.findings == []
    assert row(read.guests, "100")["name"] == "a:b::c"
    assert row(read.guests, "100")["cpu"] == pytest.approx(1.0)
    assert row(read.guests, "100")["time"] == CTIME
    assert row(read.guests, "101")["name"] == "x:y"
    assert row(read.guests, "101")["cpu"] == pytest.approx(1.0)


def test_one_id_under_both_generations_keeps_the_newest() -> None:
    text = "\n".join(
        [
            guest_line("pve2.3-vm", "100", {"maxcpu": 2, "cpu": 0.5}, ctime=CTIME + 10),
            guest_line("pve-vm-9.0", "100", {"maxcpu": 2, "cpu": 0.25}, ctime=CTIME),
            guest_line("pve2.3-vm", "101", {"maxcpu": 2, "cpu": 0.5}, ctime=CTIME),
            guest_line("pve-vm-9.0", "101", {"maxcpu": 2, "cpu": 0.25}, ctime=CTIME),
        ]
    )

    guests = parse_status_dump(text).guests

    assert guests["id"].to_list() == ["100", "101"]
    assert row(guests, "100")["cpu"] == pytest.approx(1.0)
    assert row(guests, "101")["cpu"] == pytest.approx(0.5)


def test_empty_dump_gives_empty_frames() -> None:
    read = parse_status_dump("\n\n")

    assert read.findings == []
    assert read.nodes.height == read.guests.height == read.storages.height == 0
    assert read.storages.schema == pl.Schema(frame_schema("storage"))
    assert "template" in read.guests.columns


finite = st.floats(min_value=0, max_value=1e15, allow_nan=False, allow_infinity=False)
maybe = st.one_of(st.none(), finite)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(100, 999_999),
            st.booleans(),
            st.lists(maybe, min_size=len(GUEST_DS_9), max_size=len(GUEST_DS_9)),
        ),
        min_size=1,
        max_size=20,
        unique_by=lambda guest: guest[0],
    )
)
def test_random_guest_lines_round_trip(guests) -> None:
    lines = []
    for vmid, current, values in guests:
        prefix = "pve-vm-9.0" if current else "pve2.3-vm"
        given_values = {
            d: ("U" if v is None else repr(v)) for d, v in zip(GUEST_DS_9, values, strict=True)
        }
        lines.append(guest_line(prefix, str(vmid), given_values))

    frame = parse_status_dump("\n".join(lines)).guests

    assert frame["id"].to_list() == sorted(str(vmid) for vmid, _, _ in guests)
    for vmid, current, values in guests:
        parsed = row(frame, str(vmid))
        known = len(GUEST_DS_9) if current else 10
        for index, name in enumerate(GUEST_DS_9):
            value = values[index] if index < known else None
            if name == "cpu" and value is not None:
                maxcpu = values[0]
                value = None if maxcpu is None else value * maxcpu
            assert parsed[name] == (None if value is None else pytest.approx(value))
