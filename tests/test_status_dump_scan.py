"""The C scanner of status-dump lines (collector/statusdump/_scan.c) against the polars parser.

The invariants under test: parse_status_dump gives exactly what the polars parser alone
(``_parse_with_polars``) gives, frames and findings; the scanner declines every line the polars
parser has a finding for (and every line outside the strict form, naming its 1-based number);
the lines it accepts it reads to the same values.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bench.bench_status_dump import generate_dump
from collector.statusdump import parse as dump_parse
from collector.statusdump import scanner, textparser
from collector.statusdump.parse import DumpRead, _parse_with_polars, parse_status_dump, settled
from collector.statusdump.scanner import scan_module, scan_rows
from model.rrd_schema import DUMP_KEY_PREFIXES, LAYOUTS, Kind

CTIME = 1_767_225_600
NODE_9, NODE_OLD = LAYOUTS["node"]
GUEST_9, GUEST_OLD = LAYOUTS["guest"]
KINDS: dict[Kind, str] = {"node": "nodes", "guest": "guests", "storage": "storages"}


# --- building lines ---------------------------------------------------------------------


def _ds_fields(ds: Sequence[str], values: Mapping[str, str]) -> list[str]:
    defaults = {"maxcpu": "8", "cpu": "0.25"}
    return [
        values.get(name, defaults.get(name, str(10 * (index + 1)))) for index, name in enumerate(ds)
    ]


def node(
    ident: str = "pve1",
    *,
    old: bool = False,
    uptime: str = "86400",
    level: str = "c",
    ctime: int | str = CTIME,
    values: Mapping[str, str] | None = None,
) -> str:
    prefix, layout = ("pve2-node", NODE_OLD) if old else ("pve-node-9.0", NODE_9)
    fields = [uptime, level, str(ctime), *_ds_fields(layout.ds, values or {})]
    return f"{prefix}/{ident}:" + ":".join(fields)


def guest(
    vmid: str = "100",
    *,
    old: bool = False,
    uptime: str = "500",
    name: str = "web",
    status: str = "running",
    template: str = "0",
    ctime: int | str = CTIME,
    values: Mapping[str, str] | None = None,
) -> str:
    prefix, layout = ("pve2.3-vm", GUEST_OLD) if old else ("pve-vm-9.0", GUEST_9)
    fields = [uptime, name, status, template, str(ctime), *_ds_fields(layout.ds, values or {})]
    return f"{prefix}/{vmid}:" + ":".join(fields)


def storage(
    ident: str = "pve1/local",
    *,
    old: bool = False,
    ctime: int | str = CTIME,
    total: str = "1099511627776",
    used: str = "549755813888",
) -> str:
    prefix = "pve2-storage" if old else "pve-storage-9.0"
    return f"{prefix}/{ident}:{ctime}:{total}:{used}"


def with_field(line: str, index: int, value: str) -> str:
    """``line`` with field ``index`` after the key (0-based) replaced (no ``:`` in the name)."""
    parts = line.split(":")
    parts[index + 1] = value
    return ":".join(parts)


def dump(*lines: str) -> str:
    return "\n".join(lines) + "\n"


# --- comparing --------------------------------------------------------------------------


def assert_frames_identical(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Equal frames, exact values, and the same sign of every zero (-0.0 is not 0.0)."""
    assert_frame_equal(got, want, check_exact=True)
    for name, dtype in want.schema.items():
        if dtype == pl.Float64:
            got_sign = np.signbit(got[name].fill_null(1.0).to_numpy())
            want_sign = np.signbit(want[name].fill_null(1.0).to_numpy())
            assert np.array_equal(got_sign, want_sign), f"sign of zero differs in {name}"


def assert_reads_equal(got: DumpRead, want: DumpRead) -> None:
    for attribute in KINDS.values():
        assert_frames_identical(getattr(got, attribute), getattr(want, attribute))
    assert got.findings == want.findings


def declined_lines(text: str) -> list[int]:
    scanned = scan_rows(text.encode())
    assert scanned is not None
    return scanned[1]


def finding_lines(read: DumpRead) -> set[int]:
    return {int(finding.where.rsplit(":", 1)[1]) for finding in read.findings}


def assert_scanned_matches(text: str) -> DumpRead:
    """The scanner accepts every line of ``text``, and its frames are the polars parser's
    (which has no findings)."""
    reference = _parse_with_polars(text)
    scanned = scan_rows(text.encode())
    assert scanned is not None
    rows, declined = scanned
    assert declined == [], f"scanner declined lines {declined}"
    assert reference.findings == []
    assert sorted(rows) == sorted(KINDS)
    for kind, attribute in KINDS.items():
        assert_frames_identical(settled(rows[kind], kind), getattr(reference, attribute))
    assert_reads_equal(parse_status_dump(text), reference)
    return reference


def assert_public_matches_polars(text: str, source: str = "<dump>") -> None:
    """parse_status_dump equals the polars parser, and the scanner declined every line the
    polars parser has a finding for."""
    reference = _parse_with_polars(text, source)
    assert_reads_equal(parse_status_dump(text, source), reference)
    assert finding_lines(reference) <= set(declined_lines(text))


# --- 1. the set-up built it -------------------------------------------------------------


def test_extension_is_built() -> None:
    module = scan_module()
    assert module is not None
    assert callable(module.scan)


# --- 2. clean dumps are scanned and equal the polars parser -----------------------------


@pytest.mark.parametrize(("guests", "nodes", "seed"), [(200, 8, 1), (50, 3, 7), (1, 1, 3)])
def test_generated_dumps_are_scanned(guests: int, nodes: int, seed: int) -> None:
    read = assert_scanned_matches(generate_dump(guests, nodes, seed))
    assert read.guests.height == guests
    assert read.nodes.height == nodes


def test_bench_sized_dump_is_scanned() -> None:
    read = assert_scanned_matches(generate_dump(10_000, 40, 2))
    assert read.guests.height == 10_000


_ALL_U_NODE = dict.fromkeys(NODE_9.ds, "U")
_ALL_U_GUEST = dict.fromkeys(GUEST_9.ds, "U")
_EXPONENTS = ["1e5", "2.5E-3", "1E+05", "-3e-2", "0e0", "7E0", "1e0000000000000000000005"]
_DECIMALS = [
    "0.12345678901234567",
    "1.2345678901234567e-300",
    "9007199254740993",
    "2.2250738585072011e-308",
    "2.4703282292062327e-324",
    "2.4703282292062328e-324",
    "4.9e-324",
    "1.7976931348623157e308",
    "1.7976931348623158e308",
    "123456789012345678901234567890",
    "1e-99999999999999999999",
]
_BIG = [str(2**64), str(2**64 - 1), str(2**63), str(2**53 + 1), "9" * 20, "0"]


def _guest_values(numbers: Sequence[str]) -> dict[str, str]:
    return {name: numbers[index % len(numbers)] for index, name in enumerate(GUEST_9.ds)}


def _node_values(numbers: Sequence[str]) -> dict[str, str]:
    return {name: numbers[index % len(numbers)] for index, name in enumerate(NODE_9.ds)}


CLEAN_DUMPS: dict[str, str] = {
    "unknown in every numeric field": dump(
        node("pve1", uptime="U", values=_ALL_U_NODE),
        node("pve2", old=True, uptime="U", values=_ALL_U_NODE),
        guest("100", uptime="U", values=_ALL_U_GUEST),
        guest("101", old=True, uptime="U", values=_ALL_U_GUEST),
        storage("pve1/local", total="U", used="U"),
        storage("pve2/nfs", old=True, total="U", used="U"),
    ),
    "cpu unknown, maxcpu known and the reverse": dump(
        guest("100", values={"cpu": "U"}),
        guest("101", values={"maxcpu": "U", "cpu": "0.5"}),
        node("pve1", values={"cpu": "U"}),
        node("pve2", values={"maxcpu": "U"}),
    ),
    "negatives": dump(
        node("pve1", uptime="-5", values=_node_values(["-1", "-0.5", "-0", "-1e3", "-0.0"])),
        guest("100", uptime="-7", values=_guest_values(["-1", "-0.5", "-0", "-2.5E-3"])),
        guest("101", values={"maxcpu": "-0", "cpu": "0.5"}),
        guest("102", values={"maxcpu": "4", "cpu": "-0"}),
        storage("pve1/local", total="-0", used="-1"),
    ),
    "exponents": dump(
        node("pve1", values=_node_values(_EXPONENTS)),
        guest("100", uptime="1e3", values=_guest_values(_EXPONENTS)),
        guest("101", old=True, values=_guest_values(_EXPONENTS[::-1])),
        storage("pve1/local", total="1e12", used="2.5E11"),
    ),
    "leading zeros": dump(
        node(
            "pve1",
            uptime="0086400",
            ctime="0001767225600",
            values=_node_values(["007", "000.5000", "-00", "00e01"]),
        ),
        guest("0100", ctime="0" + str(CTIME), values=_guest_values(["0008", "0.0250", "00"])),
        guest("100", values={"maxcpu": "08"}),
        storage("pve1/local", ctime="00" + str(CTIME), total="00", used="000"),
    ),
    "big integers": dump(
        node("pve1", uptime=str(2**64), values=_node_values(_BIG)),
        guest("100", uptime="9223372036854775807", values=_guest_values(_BIG[::-1])),
        guest("101", uptime="-9223372036854775808"),
        guest("102", uptime="1e19"),
        guest("103", uptime="2.9"),
        guest("104", uptime="-2.9"),
        guest("105", uptime="1e-5"),
        guest("1" * 30),
        storage("pve1/local", total=str(2**64), used=str(2**64 - 1)),
    ),
    "17-digit decimals and float edges": dump(
        node("pve1", values=_node_values(_DECIMALS)),
        guest("100", values=_guest_values(_DECIMALS)),
        guest("101", old=True, values=_guest_values(_DECIMALS[::-1])),
        storage("pve1/local", total="0.30000000000000004", used="1.0000000000000002"),
    ),
    "ctime edges": dump(
        guest("100", ctime="999999999999999"),
        guest("101", ctime="0"),
        guest("102", ctime="1"),
        node("pve1", ctime="123456789012345"),
        storage("pve1/local", ctime="000000000000000"),
    ),
    "guest names": dump(
        guest("100", name="ünïcödé-名前"),
        guest("101", name=""),
        guest("102", name="🚀 rocket"),
        guest("103", name=" spaced out "),
        guest("104", name="U"),
        guest("105", name="quo\"te's"),
        guest("106", name="#hash,comma;semi"),
        guest("107", name="back\\slash/and/slash"),
        guest("108", name="\u00a0nbsp\u2028sep"),
        guest("109", old=True, name="אבג"),
        guest("111", name="a\u0085b\u2029c"),
        guest("112", name='"'),
        guest("113", name='"unclosed'),
        guest("114", name="\\N"),
        guest("115", name="null"),
        guest("116", name="NA"),
        guest("110", old=True, name=""),
    ),
    "guest statuses and templates": dump(
        guest("100", status="stopped", template="1"),
        guest("101", status="U"),
        guest("102", status="paused", template="1"),
        guest("103", old=True, status="prelaunch", template="1"),
        guest("104", status="x"),
        guest("105", status='"'),
    ),
    "node subscription levels": dump(
        node("pve1", level=""),
        node("pve2", level="U"),
        node("pve3", old=True, level=""),
        node("pve4", level=" community edition ü "),
        node("pve5", level="pve2c/x,y"),
    ),
    "both key generations mixed": dump(
        node("a", old=True),
        guest("100"),
        storage("a/local", old=True),
        guest("101", old=True),
        node("b"),
        storage("b/local"),
        guest("102", old=True, values={"maxcpu": "2", "cpu": "0.5"}),
    ),
    "node ids": dump(
        node("pve-1.example.com"),
        node("N"),
        node("x_y~z!"),
        node('"q"'),
        node("#c"),
        node("'a,b;c\\"),
        storage('"n"/"s"'),
        storage("#/#"),
        storage("pve-1.example.com/local-lvm"),
    ),
    "same id under both generations": dump(
        guest("100", old=True, ctime=CTIME + 10, values={"cpu": "0.5"}),
        guest("100", ctime=CTIME, values={"cpu": "0.75"}),
        guest("101", old=True, ctime=CTIME, values={"cpu": "0.5"}),
        guest("101", ctime=CTIME, values={"cpu": "0.75"}),
        guest("102", ctime=CTIME, values={"cpu": "0.75"}),
        guest("102", old=True, ctime=CTIME, values={"cpu": "0.5"}),
        guest("103", ctime=CTIME - 1, values={"cpu": "0.75"}),
        guest("103", old=True, ctime=CTIME, values={"cpu": "0.5"}),
        node("pve1", old=True, ctime=CTIME + 1, values={"cpu": "0.1"}),
        node("pve1", ctime=CTIME, values={"cpu": "0.2"}),
        node("pve2", ctime=CTIME, values={"cpu": "0.2"}),
        node("pve2", old=True, ctime=CTIME, values={"cpu": "0.1"}),
        storage("pve1/local", old=True, ctime=CTIME, used="1"),
        storage("pve1/local", ctime=CTIME, used="2"),
        storage("pve2/local", ctime=CTIME, used="2"),
        storage("pve2/local", old=True, ctime=CTIME + 5, used="1"),
    ),
    "same id twice in one generation": dump(
        guest("100", ctime=CTIME, values={"cpu": "0.1"}),
        guest("100", ctime=CTIME + 1, values={"cpu": "0.2"}),
        guest("101", ctime=CTIME + 1, values={"cpu": "0.2"}),
        guest("101", ctime=CTIME, values={"cpu": "0.1"}),
        guest("102", ctime=CTIME, name="first", values={"cpu": "0.1"}),
        guest("102", ctime=CTIME, name="second", values={"cpu": "0.2"}),
        guest("102", ctime=CTIME, name="third", values={"cpu": "0.3"}),
        guest("103", old=True, ctime=CTIME, name="first"),
        guest("103", old=True, ctime=CTIME, name="last"),
        node("pve1", ctime=CTIME, values={"cpu": "0.1"}),
        node("pve1", ctime=CTIME, values={"cpu": "0.2"}),
        storage("pve1/local", ctime=CTIME, used="1"),
        storage("pve1/local", ctime=CTIME, used="2"),
    ),
    "storages only": dump(storage("a/local"), storage("b/nfs", old=True), storage("a/zfs")),
    "nodes only": dump(node("a"), node("b", old=True)),
    "guests only": dump(guest("100"), guest("101", old=True)),
    "blank lines between": "\n\n"
    + node("pve1")
    + "\n\n\n"
    + guest("100")
    + "\n\n"
    + storage()
    + "\n\n",
    "no trailing newline": node("pve1") + "\n" + guest("100"),
    "one line, no newline": guest("100"),
    "empty text": "",
    "one newline": "\n",
    "only newlines": "\n\n\n\n",
}


@pytest.mark.parametrize("text", CLEAN_DUMPS.values(), ids=CLEAN_DUMPS.keys())
def test_clean_dumps_are_scanned_and_equal_polars(text: str) -> None:
    assert_scanned_matches(text)


def test_duplicates_keep_newest_then_current_then_last() -> None:
    guests = assert_scanned_matches(CLEAN_DUMPS["same id twice in one generation"]).guests
    kept = dict(zip(guests["id"].to_list(), guests["name"].to_list(), strict=True))
    cpu = dict(zip(guests["id"].to_list(), guests["cpu"].to_list(), strict=True))
    assert cpu["100"] == pytest.approx(0.2 * 8)
    assert cpu["101"] == pytest.approx(0.2 * 8)
    assert kept["102"] == "third"
    assert kept["103"] == "last"
    both = assert_scanned_matches(CLEAN_DUMPS["same id under both generations"])
    cpu = dict(zip(both.guests["id"].to_list(), both.guests["cpu"].to_list(), strict=True))
    assert cpu == pytest.approx({"100": 4.0, "101": 6.0, "102": 6.0, "103": 4.0})
    used = dict(zip(both.storages["id"].to_list(), both.storages["used"].to_list(), strict=True))
    assert used == {"pve1/local": 2.0, "pve2/local": 1.0}


def test_empty_dumps_give_the_empty_frames() -> None:
    for text in ("", "\n", "\n\n\n"):
        read = assert_scanned_matches(text)
        assert read.nodes.height == read.guests.height == read.storages.height == 0
        assert "template" in read.guests.columns


# Shapes the brief leaves open: whichever way the scanner goes, the results must agree.
OPEN_DUMPS: dict[str, str] = {
    "node id holding a slash": dump(node("a/b")),
    "huge exponent, overflowing": dump(guest("100", values={"maxmem": "1e99999999999999999999"})),
    "just above the largest double": dump(
        guest("100", values={"maxmem": "1.7976931348623159e308"})
    ),
    "a 300-digit decimal, exactly 1": dump(
        guest("100", values={"maxmem": "0." + "0" * 300 + "1e301"})
    ),
    "a 70-digit integer": dump(guest("100", values={"maxmem": "1" * 70})),
    "400-digit integer": dump(guest("100", values={"maxmem": "1" + "0" * 400})),
    "status with non-ASCII": dump(guest("100", status="läuft")),
    "status of spaces": dump(guest("100", status="  ")),
    "name of spaces": dump(guest("100", name="   ")),
    "guest id with a leading zero only": dump(guest("0")),
    "uptime huge decimal": dump(guest("100", uptime="12345678901234567890.5")),
    "ctime 15 nines everywhere": dump(
        node("pve1", ctime="999999999999999"), storage(ctime="999999999999999")
    ),
    "lone key prefix, id and fields of storage": dump(
        storage("a/b", total="1e-320", used="5e-324")
    ),
}


@pytest.mark.parametrize("text", OPEN_DUMPS.values(), ids=OPEN_DUMPS.keys())
def test_open_shapes_agree_with_polars(text: str) -> None:
    assert_public_matches_polars(text)


def _random_number(rng: random.Random) -> str:
    """A number in the strict form, finite as a double, from all corners of the parser: short
    and long mantissas, leading zeros, 2**53 neighbours, exponents near 22, 308 and -324."""
    shape = rng.randrange(4)
    if shape == 0:  # around the largest exactly representable mantissa
        mantissa = str(2**53 + rng.randint(-3, 3))
        cut = rng.randint(1, len(mantissa))
        text = mantissa[:cut] + "." + mantissa[cut:] if cut < len(mantissa) else mantissa
        if text.endswith("."):
            text = text[:-1]
        text += rng.choice(["", f"e{rng.randint(-24, 24)}", f"E+{rng.randint(0, 24)}"])
    else:
        whole = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
        if rng.random() < 0.2:
            whole = "0" * rng.randint(1, 5) + whole
        text = whole
        if rng.random() < 0.6:
            text += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
        if rng.random() < 0.6:
            exponent = rng.choice(
                [rng.randint(-25, 25), rng.randint(-330, -280), rng.randint(280, 300)]
            )
            marker = rng.choice("eE")
            sign = "+" if exponent >= 0 and rng.random() < 0.3 else ""
            text += f"{marker}{sign}{exponent:0{rng.randint(1, 4)}d}"
    if rng.random() < 0.3:
        text = "-" + text
    text = text[:64].rstrip(".eE+-")
    if text in ("", "-") or not math.isfinite(float(text)) or text[-1] == ".":
        return "U"
    return text


def test_random_numbers_match_polars() -> None:
    """Thousands of numbers through both number parsers: the same doubles, bit for bit."""
    rng = random.Random(7)
    lines = []
    for index in range(150):
        values = {name: _random_number(rng) for name in GUEST_9.ds}
        ctime = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 15)))
        lines.append(
            guest(str(100 + index), uptime=_random_number(rng), ctime=ctime, values=values)
        )
        if index % 5 == 0:
            values = {name: _random_number(rng) for name in NODE_9.ds}
            lines.append(node(f"n{index}", uptime=_random_number(rng), values=values))
            lines.append(
                storage(f"n{index}/s", total=_random_number(rng), used=_random_number(rng))
            )
    read = assert_scanned_matches(dump(*lines))
    assert read.guests.height == 150


# --- 3. the scanner reads clean dumps alone; declined lines go to the polars parser -----


def test_clean_dump_never_reaches_the_polars_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    text = generate_dump(40, 4, 5)
    reference = _parse_with_polars(text)

    def refuse(text: str, source: str) -> object:
        raise AssertionError("the polars parser was called for a clean dump")

    monkeypatch.setattr(dump_parse, "polars_rows", refuse)
    assert_reads_equal(parse_status_dump(text), reference)
    assert_reads_equal(parse_status_dump(text, "named.txt"), reference)


def test_only_the_declined_lines_go_to_the_polars_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = dump(node("pve1"), guest("100"), guest("101", name="a:b"), "garbage", storage())
    reference = _parse_with_polars(text, "dump.txt")
    assert [f.where for f in reference.findings] == ["dump.txt:4"]
    assert reference.guests["name"].to_list() == ["web", "a:b"]
    calls: list[tuple[str, str, object]] = []
    polars_rows = textparser.polars_rows

    def spy(text: str, source: str, only: list[int] | None = None) -> object:
        calls.append((text, source, only))
        return polars_rows(text, source, only)

    monkeypatch.setattr(dump_parse, "polars_rows", spy)
    assert_reads_equal(parse_status_dump(text, "dump.txt"), reference)
    assert calls == [(text, "dump.txt", [3, 4])]


def test_the_declined_lines_are_read_alone_with_their_numbers() -> None:
    text = dump(node("pve1"), "garbage", guest("100"), "", "pve-vm-9.0/x:1")
    fields = textparser._numbered_fields(text, [2, 5])
    # an empty line first (not line 1): a byte-order mark there would be skipped
    assert fields["lineno"].to_list() == [0, 2, 5]
    assert fields["f0"].to_list() == [None, "garbage", "pve-vm-9.0/x"]
    fields = textparser._numbered_fields(text, [1, 3])
    assert fields["lineno"].to_list() == [1, 3]
    assert fields["f0"].to_list() == ["pve-node-9.0/pve1", "pve-vm-9.0/100"]


def test_lines_that_do_not_read_alone_are_read_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only blanks declined (the CSV reader gives no row for a text of blanks): the whole
    text is read again with the other lines emptied, so no line number can shift."""
    read_fields = textparser._read_fields
    texts: list[str] = []

    def record(text: str) -> pl.DataFrame:
        texts.append(text)
        return read_fields(text)

    monkeypatch.setattr(textparser, "_read_fields", record)
    text = dump(node("pve1"), " ", guest("100"), "\t")
    assert textparser._numbered_fields(text, [2, 4]).is_empty()
    assert texts == ["\n \n\t", "\n \n\n\t\n"]


@pytest.mark.parametrize(
    "text",
    [
        dump(node("pve1"), "\ufeffpve-vm-9.0/100:garbage", guest("101")),
        "\ufeff" + dump("garbage", node("pve1"), guest("100")),
        "\ufeff" + dump(guest("100", values={"cpu": "x"}), node("pve1")),
        dump(node("pve1"), " ", guest("100"), "\t", "\r"),
        dump(node("pve1"), "  garbage  ", "\ufeff", guest("100", name="a:b")),
        dump(guest("100", values={"cpu": "x"}), guest("100", values={"cpu": "0.5"})),
    ],
)
def test_declined_lines_read_alone_match_the_whole_text(text: str) -> None:
    assert declined_lines(text)
    assert_public_matches_polars(text, "d")


def test_an_exact_tie_keeps_the_later_line_whichever_reader_read_it() -> None:
    """Same id, ctime and generation: the later line wins, also when one of the two lines
    went to the polars parser (a value it takes as unknown) and the other to the scanner."""
    good = guest("100", name="good", values={"cpu": "0.5"})
    bad = guest("100", name="bad", values={"cpu": "zero"})
    for lines, kept in (((bad, good), "good"), ((good, bad), "bad")):
        text = dump(node("pve1"), *lines)
        assert declined_lines(text) == [2 + lines.index(bad)]
        read = parse_status_dump(text, "d")
        assert read.guests["name"].to_list() == [kept]
        assert [finding.where for finding in read.findings] == [f"d:{2 + lines.index(bad)}"]
        assert_public_matches_polars(text, "d")


# --- 4. each kind of damage is declined at its line -------------------------------------


def _around(line: str) -> tuple[str, int]:
    """``line`` as line 3 of a dump (line 2 blank): the scanner must decline line 3."""
    return dump(node("pve1"), "", line, guest("100"), storage()), 3


_BAD_NUMBERS = [
    "", "u", "nan", "NaN", "inf", "-inf", "Infinity", "+5", ".5", "5.", "0x10", " 5", "5 ",
    "1e999", "-1e999", "1" + "0" * 400, "1.7976931348623159e308", "1e", "e5", "-", "1.5.5",
    "1e5.5", "1_000", "١", "５", "5e+", "--5", "0.5e", "1,5", "1e+-5", "U ", "UU", "-U",
]  # fmt: skip

DAMAGE: dict[str, tuple[str, int | list[int]]] = {
    "unknown prefix": _around("pve-vm-8.0/100" + guest("100")[len("pve-vm-9.0/100") :]),
    "prefix in other case": _around("PVE-VM-9.0/100" + guest("100")[len("pve-vm-9.0/100") :]),
    "no slash": _around("pve-vm-9.0" + guest("100")[len("pve-vm-9.0/100") :]),
    "guest id letters": _around(guest("abc")),
    "guest id mixed": _around(guest("10a")),
    "guest id negative": _around(guest("-1")),
    "guest id decimal": _around(guest("1.0")),
    "guest id Arabic-Indic digits": _around(guest("١٠٠")),
    "guest id empty": _around(guest("")),
    "node id empty": _around(node("")),
    "node id non-ASCII": _around(node("nöde")),
    "node id with space": _around(node("no de")),
    "storage id without node": _around(storage("nodeonly")),
    "storage id three parts": _around(storage("a/b/c")),
    "storage id empty node": _around(storage("/local")),
    "storage id empty storage": _around(storage("pve1/")),
    "storage id empty": _around(storage("")),
    "too few fields, guest": _around(guest("100").rsplit(":", 1)[0]),
    "too many fields, guest": _around(guest("100") + ":0"),
    "too few fields, old guest": _around(guest("100", old=True).rsplit(":", 1)[0]),
    "too many fields, old guest": _around(guest("100", old=True) + ":0"),
    "old guest prefix, 9.0 fields": _around(
        "pve2.3-vm/100" + guest("100")[len("pve-vm-9.0/100") :]
    ),
    "9.0 guest prefix, old fields": _around(
        "pve-vm-9.0/100" + guest("100", old=True)[len("pve2.3-vm/100") :]
    ),
    "too few fields, node": _around(node().rsplit(":", 1)[0]),
    "too many fields, node": _around(node() + ":0"),
    "old node prefix, 9.0 fields": _around("pve2-node/pve1" + node()[len("pve-node-9.0/pve1") :]),
    "too few fields, storage": _around(storage().rsplit(":", 1)[0]),
    "too many fields, storage": _around(storage() + ":0"),
    "trailing colon, guest": _around(guest("100") + ":"),
    "trailing colon, node": _around(node() + ":"),
    "trailing colon, storage": _around(storage() + ":"),
    "key only": _around("pve-vm-9.0/100"),
    "key and colon": _around("pve-vm-9.0/100:"),
    "garbage": _around("garbage"),
    "spaces only": _around("   "),
    "colon only": _around(":"),
    "lone carriage return": _around("\r"),
    "ctime U": _around(guest("100", ctime="U")),
    "ctime decimal": _around(guest("100", ctime="1.5")),
    "ctime 16 digits": _around(guest("100", ctime="1" * 16)),
    "ctime negative": _around(guest("100", ctime="-1")),
    "ctime exponent": _around(guest("100", ctime="1e9")),
    "ctime empty": _around(guest("100", ctime="")),
    "ctime plus": _around(guest("100", ctime="+1")),
    "ctime Arabic-Indic": _around(guest("100", ctime="١٢٣")),
    "node ctime U": _around(node(ctime="U")),
    "node ctime 16 digits": _around(node(ctime="1" * 16)),
    "storage ctime U": _around(storage(ctime="U")),
    "storage ctime decimal": _around(storage(ctime="1.0")),
    "template 2": _around(guest("100", template="2")),
    "template empty": _around(guest("100", template="")),
    "template U": _around(guest("100", template="U")),
    "template 01": _around(guest("100", template="01")),
    "template true": _around(guest("100", template="true")),
    "status empty": _around(guest("100", status="")),
    "name holding a colon": _around(guest("100", name="a:b")),
    "old name holding a colon": _around(guest("100", old=True, name="a:b")),
    "tab in name": _around(guest("100", name="a\tb")),
    "NUL in name": _around(guest("100", name="a\x00b")),
    "DEL in name": _around(guest("100", name="a\x7fb")),
    "escape in name": _around(guest("100", name="\x1b[31m")),
    "vertical tab in name": _around(guest("100", name="a\x0bb")),
    "form feed in status": _around(guest("100", status="run\x0c")),
    "carriage return in name": _around(guest("100", name="a\rb")),
    "tab in node level": _around(node(level="c\t")),
    "NUL in node level": _around(node(level="\x00")),
    "tab in key": _around("pve-vm-9.0/\t100" + guest("100")[len("pve-vm-9.0/100") :]),
    "NBSP before key": _around("\u00a0" + guest("100")),
    "BOM before key": _around("\ufeff" + guest("100")),
    "space before key": _around(" " + guest("100")),
    "tab before key": _around("\t" + guest("100")),
    "space after key": _around(guest("100").replace(":", " :", 1)),
    "carriage return at end": _around(guest("100") + "\r"),
    "CRLF line endings": ("\r\n".join([node("pve1"), guest("100")]) + "\r\n", [1, 2]),
    "CRLF, last line without": ("\n".join([node("pve1"), guest("100")]) + "\r\n", 2),
    "BOM at the start of the text": ("\ufeff" + dump(node("pve1"), guest("100")), 1),
    "damage on the first line": ("garbage\n" + dump(node("pve1")), 1),
    "damage on the last line, no newline": (dump(node("pve1"), "") + "garbage", 3),
    "two damaged lines": (dump(node("pve1"), guest("1x"), "garbage"), [2, 3]),
    "after many blank lines": ("\n" * 9 + "garbage\n", 10),
}
for _bad in _BAD_NUMBERS:
    DAMAGE[f"guest maxmem {_bad!r}"] = _around(guest("100", values={"maxmem": _bad}))
for _bad in ["", "nan", "inf", "+5", ".5", "5.", " 5", "1e999", "u"]:
    DAMAGE[f"guest uptime {_bad!r}"] = _around(guest("100", uptime=_bad))
    DAMAGE[f"guest last PSI {_bad!r}"] = _around(guest("100", values={"pressurememoryfull": _bad}))
    DAMAGE[f"old guest diskwrite {_bad!r}"] = _around(
        guest("100", old=True, values={"diskwrite": _bad})
    )
    DAMAGE[f"guest cpu {_bad!r}"] = _around(guest("100", values={"cpu": _bad}))
    DAMAGE[f"node memused {_bad!r}"] = _around(node(values={"memused": _bad}))
    DAMAGE[f"node uptime {_bad!r}"] = _around(node(uptime=_bad))
    DAMAGE[f"old node netout {_bad!r}"] = _around(node(old=True, values={"netout": _bad}))
    DAMAGE[f"storage used {_bad!r}"] = _around(storage(used=_bad))
    DAMAGE[f"storage total {_bad!r}"] = _around(storage(total=_bad))


@pytest.mark.parametrize(("text", "lineno"), DAMAGE.values(), ids=DAMAGE.keys())
def test_damage_is_declined_at_its_line(text: str, lineno: int | list[int]) -> None:
    assert declined_lines(text) == (lineno if isinstance(lineno, list) else [lineno])
    assert_public_matches_polars(text)


def test_every_prefix_alone_is_accepted() -> None:
    """Each key prefix of DUMP_KEY_PREFIXES is known to the scanner."""
    builders = {
        ("node", "9.0"): node("n1"),
        ("node", "pve2"): node("n1", old=True),
        ("guest", "9.0"): guest("100"),
        ("guest", "pve2"): guest("100", old=True),
        ("storage", "9.0"): storage("n1/s"),
        ("storage", "pve2"): storage("n1/s", old=True),
    }
    for prefix, kind_generation in DUMP_KEY_PREFIXES.items():
        line = builders[kind_generation]
        assert line.startswith(prefix + "/")
        assert_scanned_matches(dump(line))


# --- 5. fuzz ----------------------------------------------------------------------------

_POOL = [
    ":", "/", "U", "u", "e", "E", ".", "-", "+", " ", "\r", "\t", "\x00", "\x7f", "\u00a0",
    "\ufeff", "١", "５", "ü", '"', "#", "nan", "inf", "e5", "e-3", "0", "1", "5", "9", "00", "",
]  # fmt: skip
_CLEAN_NUMBERS = [
    "U",
    "0",
    "-0",
    "1e5",
    "2.5E-3",
    "007",
    "-12.5",
    str(2**64),
    "0.12345678901234567",
]


def _swap_generation(line: str, rng: random.Random) -> str:
    """A line under the other key generation: its field count fitted (clean) or not."""
    key, _, rest = line.partition(":")
    prefix, _, ident = key.partition("/")
    kind, generation = DUMP_KEY_PREFIXES[prefix]
    other = next(p for p, (k, g) in DUMP_KEY_PREFIXES.items() if k == kind and g != generation)
    fields = rest.split(":")
    if rng.random() < 0.75:
        current, old = LAYOUTS[kind]
        first_ds = 1 if kind == "storage" else 3 if kind == "node" else 5
        wanted = first_ds + len(current.ds if generation == "pve2" else old.ds)
        fields = fields[:wanted] + [rng.choice(_CLEAN_NUMBERS) for _ in range(wanted - len(fields))]
    return f"{other}/{ident}:" + ":".join(fields)


def _damage(text: str, rng: random.Random) -> str:
    lines = text.split("\n")[:-1]
    for _ in range(rng.choice([1, 1, 2, 3])):
        index = rng.randrange(len(lines))
        line = lines[index]
        op = rng.random()
        if op < 0.35:  # character-level damage: mostly declined
            position = rng.randrange(len(line) + 1)
            which = rng.randrange(3)
            if which == 0:
                line = line[:position] + line[position + 1 :]
            elif which == 1:
                line = line[:position] + rng.choice(_POOL) + line[position:]
            else:
                line = line[:position] + rng.choice(_POOL) + line[position + 1 :]
            lines[index] = line
        elif op < 0.45:  # a field replaced from the pool: mostly declined
            fields = line.split(":")
            field = rng.randrange(1, len(fields))
            fields[field] = rng.choice(_POOL) + rng.choice(["", "5", fields[field]])
            lines[index] = ":".join(fields)
        elif op < 0.6:  # a number replaced by another clean number: accepted
            fields = line.split(":")
            kind = DUMP_KEY_PREFIXES.get(fields[0].partition("/")[0], ("", ""))[0]
            first_ds = {"node": 4, "guest": 6, "storage": 2}.get(kind)
            if first_ds is not None and len(fields) > first_ds:
                fields[rng.randrange(first_ds, len(fields))] = rng.choice(_CLEAN_NUMBERS)
                lines[index] = ":".join(fields)
        elif op < 0.72:  # a line duplicated, maybe with another ctime: accepted
            copy = line
            fields = copy.split(":")
            kind = DUMP_KEY_PREFIXES.get(fields[0].partition("/")[0], ("", ""))[0]
            time_field = {"node": 3, "guest": 5, "storage": 1}.get(kind)
            if time_field is not None and fields[time_field].isdigit():
                fields[time_field] = str(int(fields[time_field]) + rng.choice([-1, 0, 0, 1]))
                fields[-1] = rng.choice(_CLEAN_NUMBERS)
                copy = ":".join(fields)
            lines.insert(rng.randrange(len(lines) + 1), copy)
        elif op < 0.85:  # a line moved to the other key generation
            if line.partition("/")[0] in DUMP_KEY_PREFIXES and ":" in line:
                new = _swap_generation(line, rng)
                if rng.random() < 0.5:
                    lines.insert(rng.randrange(len(lines) + 1), new)
                else:
                    lines[index] = new
        elif op < 0.92:  # blank lines: accepted
            lines.insert(rng.randrange(len(lines) + 1), "")
        else:  # two lines swapped: accepted
            other = rng.randrange(len(lines))
            lines[index], lines[other] = lines[other], lines[index]
    return "\n".join(lines) + rng.choice(["\n", "\n", ""])


def test_fuzzed_dumps_agree_with_polars() -> None:
    rng = random.Random(20240611)
    clean = damaged = 0
    for case in range(150):
        text = _damage(generate_dump(30, 4, seed=case), rng)
        try:
            assert_public_matches_polars(text)
            declined = declined_lines(text)
            lines = text.split("\n")
            if declined:
                damaged += 1
                assert all(1 <= number <= len(lines) and lines[number - 1] for number in declined)
                # Each declined line is declined on its own, and the others are all accepted.
                for number in declined:
                    assert declined_lines(lines[number - 1]) == [1]
                rest = "\n".join(
                    "" if number in declined else line for number, line in enumerate(lines, 1)
                )
                assert declined_lines(rest) == []
            else:
                clean += 1
        except AssertionError as error:
            raise AssertionError(f"fuzz case {case}: {text!r}") from error
    assert clean >= 40, (clean, damaged)
    assert damaged >= 40, (clean, damaged)


# --- 6. without the extension -----------------------------------------------------------


def test_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scanner, "scan_module", lambda: None)
    text = generate_dump(60, 5, 3)
    assert scan_rows(text.encode()) is None
    for sample in (text, dump(guest("100", name="a:b"), "garbage"), "", "\n"):
        assert_reads_equal(parse_status_dump(sample, "x"), _parse_with_polars(sample, "x"))


# --- 7. the C function's argument checks ------------------------------------------------


def _scan() -> Callable[..., object]:
    module = scan_module()
    assert module is not None
    scan: Callable[..., object] = module.scan
    return scan


def test_scan_accepts_any_contiguous_buffer() -> None:
    prefixes, kinds = scanner._PREFIXES, scanner._KINDS
    data = dump(guest("100"), node("pve1")).encode()
    want = _scan()(data, prefixes, kinds)
    assert isinstance(want, tuple)
    assert want[1] == []
    assert _scan()(bytearray(data), prefixes, kinds) == want
    assert _scan()(memoryview(data), prefixes, kinds) == want
    assert _scan()(b"", [], []) == ([], [])
    bad_utf8 = dump(node("pve1"), guest("100", name="N"), guest("101")).encode()
    result = _scan()(bad_utf8.replace(b":N:", b":\xffN:"), prefixes, kinds)
    assert isinstance(result, tuple)
    per_kind, declined = result
    assert declined == [2]
    ids, _, texts, _, lines = per_kind[1]
    assert (ids, texts[0], lines) == (["101"], ["web"], (3).to_bytes(8, "little"))


@pytest.mark.parametrize(
    "arguments",
    [
        ("text", "P", "K"),
        (None, "P", "K"),
        (123, "P", "K"),
        (b"", 5, "K"),
        (b"", "P", 5),
        (b"", None, "K"),
        (b"", "P", None),
        (b"", "P"),
        (b"",),
        (b"", "P", "K", 1),
        (b"", [("pve-vm-9.0", 1, True, 22)], "K"),
        (b"", [(b"pve-vm-9.0", 1.5, True, 22)], "K"),
        (b"", [(b"pve-vm-9.0", "1", True, 22)], "K"),
        (b"", [(b"pve-vm-9.0", 1, True, "22")], "K"),
        (b"", [(b"pve-vm-9.0", 1, True)], "K"),
        (b"", [(b"pve-vm-9.0", 1, True, 22, 0)], "K"),
        (b"", "P", [("nnn", "a")]),
        (b"", "P", [(b"nnn", "a")]),
        (b"", "P", [(b"nnn",)]),
        (b"", "P", [(b"nnn", b"a", b"x")]),
        (b"", [[b"pve-vm-9.0", 1, True, 22]], "K"),
        (b"", [b"pve-vm-9.0"], "K"),
        (b"", [None], "K"),
        (b"", "P", [[b"nnn", b"a"]]),
        (b"", "P", [None]),
    ],
    ids=lambda arguments: repr(arguments)[:60],
)
def test_scan_rejects_wrong_types(arguments: tuple[object, ...]) -> None:
    prefixes, kinds = scanner._PREFIXES, scanner._KINDS
    resolved = [prefixes if a == "P" else kinds if a == "K" else a for a in arguments]
    with pytest.raises(TypeError):
        _scan()(*resolved)


def test_scan_takes_no_keywords() -> None:
    prefixes, kinds = scanner._PREFIXES, scanner._KINDS
    with pytest.raises(TypeError):
        _scan()(data=b"", prefixes=prefixes, kinds=kinds)


@pytest.mark.parametrize(
    ("prefixes", "kinds"),
    [
        ([(b"x", 0, True, 1)], [(b"q", b"a")]),
        ([(b"x", 0, True, 1)], [(b"n\0", b"a")]),
        ([(b"x", 0, True, 1)], [(b"n", b"z")]),
        ([(b"x", 0, True, 1)], [(b"n", b"")]),
        ([(b"x", 0, True, 1)], [(b"n", b"aa")]),
        ([(b"x", 0, True, 1)], [(b"n" * 65, b"a")]),
        ([(b"x", 1, True, 1)], [(b"n", b"a")]),
        ([(b"x", -1, True, 1)], [(b"n", b"a")]),
        ([(b"x", 0, True, 0)], [(b"n", b"a")]),
        ([(b"x", 0, True, 2)], [(b"n", b"a")]),
        ([(b"x", 0, True, 1)], [(b"ns", b"a")]),
    ],
)
def test_scan_rejects_bad_layouts(
    prefixes: list[tuple[bytes, int, bool, int]], kinds: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(ValueError, match=r"."):
        _scan()(b"", prefixes, kinds)
