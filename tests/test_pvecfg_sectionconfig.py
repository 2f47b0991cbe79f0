"""Section-config splitting and the shared value parsers of collector.pvecfg."""

from __future__ import annotations

import pytest

from collector.pvecfg.sectionconfig import check_keys, parse_section_config
from collector.pvecfg.values import decode_text, parse_bool, parse_int, parse_size

TEXT = (
    "# leading comment\n"
    "dir: local\n"
    "\tpath /var/lib/vz\n"
    "\t# a comment inside a section does not end it\n"
    "\tcontent iso,vztmpl\n"
    "\tsparse\n"
    "\n"
    "junk outside\n"
    "rbd: ceph\n"
    "\tpool vm\n"
    "\tpool again\n"
    "not indented\n"
    "\n"
    "dir: local\n"
    "\tpath /other\n"
)


def test_sections_values_and_lines():
    sections, findings = parse_section_config(TEXT, "storage.cfg")
    assert [(s.type, s.id, s.line) for s in sections] == [("dir", "local", 2), ("rbd", "ceph", 9)]
    local, ceph = sections
    assert local.values == {"path": "/var/lib/vz", "content": "iso,vztmpl", "sparse": None}
    assert local.lines == {"path": 3, "content": 5, "sparse": 6}
    assert ceph.values == {"pool": "vm"}
    assert [(f.kind, f.where) for f in findings] == [
        ("config-syntax", "storage.cfg:8"),
        ("config-syntax", "storage.cfg:11"),
        ("config-syntax", "storage.cfg:12"),
        ("config-syntax", "storage.cfg:14"),
    ]
    assert "junk outside" in findings[0].message
    assert "duplicate key 'pool'" in findings[1].message
    assert "duplicate section 'dir: local'" in findings[3].message


def test_header_type_is_lowercased_and_crlf_accepted():
    sections, findings = parse_section_config("VM: 100\r\n\tstate started\r\n", "x.cfg")
    assert findings == []
    assert (sections[0].type, sections[0].id, sections[0].values) == (
        "vm",
        "100",
        {"state": "started"},
    )


def test_check_keys_drops_unknown_and_reports_missing():
    sections, _ = parse_section_config("group: g\n\tcomment c\n\tcolour red\n", "ha/groups.cfg")
    usable, findings = check_keys(sections[0], "ha/groups.cfg", ("nodes", "comment"), ("nodes",))
    assert usable is False
    assert sections[0].values == {"comment": "c"}
    assert [(f.kind, f.where) for f in findings] == [
        ("config-unknown-key", "ha/groups.cfg:3"),
        ("config-missing-key", "ha/groups.cfg:1"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("on", True),
        ("YES", True),
        ("0", False),
        ("off", False),
        ("2", None),
        (None, True),
        ("", None),
    ],
)
def test_parse_bool(text, expected):
    assert parse_bool(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("32G", 32 * 2**30),
        ("629M", 629 * 2**20),
        ("1.5T", 3 * 2**39),
        ("4096", 4096),
        ("8k", 8192),
        ("12X", None),
        ("", None),
        ("-1G", None),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_parse_int_and_decode_text():
    assert parse_int("7") == 7
    assert parse_int("0", minimum=1) is None
    assert parse_int("-3") is None
    assert parse_int("2.5") is None
    assert decode_text("Production%20guests%3A%20eu") == "Production guests: eu"
