"""The parsers' fast paths give what their exact paths give.

Fixed inputs off the fast paths (odd spacing, keyed volumes, Unicode digits) parse as before
the fast paths existed (expectations recorded from the line-by-line parser); property tests
compare each fast path with the exact path it stands in for, on usual and unusual text; the
bulk constructors of ``slot_init`` build what the dataclasses' own ``__init__`` builds.
"""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError, astuple, dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.pvecfg import guestconf, ha_resources, parse_guest_config, parse_pools, parse_vmlist
from collector.pvecfg.guestconf import GuestConfig
from collector.pvecfg.ha_resources import HaResource, parse_resources_cfg
from collector.pvecfg.ha_status import ServiceStatus
from collector.pvecfg.members import VmListEntry
from collector.pvecfg.sectionconfig import split_property
from collector.pvecfg.slotinit import slot_init
from collector.pvecfg.values import parse_int, split_property_string

GIB = 2**30


def findings_of(findings):
    return [(f.kind, f.where, f.message) for f in findings]


def test_vm_config_with_odd_spacing_keyed_volumes_and_duplicates():
    text = (
        "cores:\t4 \n"
        "sockets: ٣\n"  # a Unicode decimal digit is a valid count, as int() reads it
        "memory:  current=2048 \n"
        "cores: 0\n"  # the last occurrence wins and is reported at its own line
        "scsi0: local:vm-1-disk-0, size=4G ,size=8G\n"  # first size wins, blanks stripped
        "scsi1: x,file=ceph:vm-1-disk-1,size=1T\n"  # file= beats the positional volume
        "ide2: cdrom,media=cdrom\n"
        "sata0: K:x,size=1M\n"  # one-letter storage ids are invalid, the size still counts
        "virtio0: bad volume,size=2Q\n"
    )
    config, findings = parse_guest_config(text, 100, "qemu", "n", "f.conf")
    assert config.maxcpu == 3.0  # sockets 3 x cores default 1 (cores 0 rejected)
    assert config.maxmem == 2048 * 2**20
    assert config.disk_bytes == 4 * GIB + 1024 * GIB + 2**20
    assert config.storages == frozenset({"local", "ceph"})
    assert config.values["scsi0"] == "local:vm-1-disk-0, size=4G ,size=8G"
    assert list(config.values) == [
        "cores",
        "sockets",
        "memory",
        "scsi0",
        "scsi1",
        "ide2",
        "sata0",
        "virtio0",
    ]
    volume_expected = "expected '<storage>:<volume>' or a host path), using 'no storage'"
    assert findings_of(findings) == [
        (
            "config-bad-value",
            "f.conf:4",
            "bad value '0' for 'cores' (expected an integer >= 1), using 1",
        ),
        (
            "config-bad-value",
            "f.conf:8",
            f"bad value 'K:x,size=1M' for 'sata0' ({volume_expected}",
        ),
        (
            "config-bad-value",
            "f.conf:9",
            f"bad value 'bad volume,size=2Q' for 'virtio0' ({volume_expected}",
        ),
        (
            "config-bad-value",
            "f.conf:9",
            "bad value 'bad volume,size=2Q' for 'virtio0' (expected size=<number>[KMGT]), using 0",
        ),
    ]


def test_ct_config_description_key_raw_lines_and_devices():
    text = (
        "description: first%20line\n"
        "#late comment\n"  # still description: no value has been set yet
        "tags: a b,a\n"
        "rootfs: volume=local:x,size=2G\n"
        "mp0: /srv,mp=/x,size=1G\n"
        "unused0: local:y,size=3G\n"
        "lxc.cap.drop: \n"
        "usb0: host=spice\n"
        "hostpci1: mapping=gpu\n"
        "hostpci2: 01:00.0\n"
    )
    config, findings = parse_guest_config(text, 100, "lxc", "n", "f.conf")
    assert findings == []
    assert config.description == "first line\nlate comment"
    assert config.tags == ("a", "b")
    assert config.disk_bytes == 6 * GIB
    assert config.storages == frozenset({"local"})
    assert config.host_volumes == ("/srv",)
    assert config.local_devices == ("hostpci2",)
    assert "description" not in config.values
    assert config.maxcpu is None


def test_unusual_line_breaks_split_lines_as_str_splitlines_does():
    config, findings = parse_guest_config("cores: 2\rmemory: 1024\x0bname: a", 1, "qemu", "n", "f")
    assert findings == []
    assert (config.maxcpu, config.maxmem, config.name) == (2.0, 1024 * 2**20, "a")


def test_pool_argument_is_stored():
    config, _ = parse_guest_config("cores: 1\n", 1, "qemu", "n", "f", pool="prod")
    assert config.pool == "prod"


def test_superscript_digits_are_bad_vmids_not_a_crash():
    # str.isdigit() accepts "²" but int() does not: this used to raise ValueError.
    vmlist, findings = parse_vmlist('{"ids": {"²": {"node": "a", "type": "qemu"}}}')
    assert vmlist == {}
    assert findings_of(findings) == [("config-bad-value", ".vmlist:²", "bad vmid '²', skipped")]
    pools, findings = parse_pools("pool:p::100,²::\n")
    assert pools["p"].vmids == (100,)
    assert [f.kind for f in findings] == ["config-bad-value"]


# -- guest configs: the plain main-section reader against the line-by-line one -------------

KEYS = [
    "cores",
    "sockets",
    "vcpus",
    "cpulimit",
    "memory",
    "name",
    "hostname",
    "tags",
    "template",
    "lock",
    "scsi0",
    "virtio1",
    "ide2",
    "efidisk0",
    "unused0",
    "rootfs",
    "mp0",
    "hostpci0",
    "usb1",
    "net0",
    "description",
    "lxc.apparmor.profile",
    "Cores",
    "9bad",
    "a b",
    "",
]
VALUES = [
    "2",
    "0",
    "٣",
    "1.5",
    "x",
    "current=2048",
    "local-lvm:vm-1-disk-0,size=8G",
    "ceph:vm-1-disk-1,iothread=1,size=32G",
    "none,media=cdrom",
    "cephfs:iso/x.iso,media=cdrom,size=1G",
    "/dev/sdb,size=1T",
    " spaced ",
    "a b,size=1G",
    "K:x,size=1M",
    "local:x,,size=2G",
    "volume=local:y,size=2G",
    "mapping=gpu",
    "host=1-2",
    "spice",
    "%20desc",
    "a;b c",
    "",
    "\t",
    "\xa0x",
]
SEPARATORS = [": ", ":", ":  ", ":\t", " : ", ": \t"]
OTHER_LINES = [
    "",
    "  ",
    "\t",
    "#comment",
    "#",
    "#%C3%A9t%C3%A9",
    "[snapshot]",
    "[PENDING]",
    "[special:cloudinit]",
    "[snap] ",
    "[x",
    "lxc.cgroup2.devices.allow = c 10:200 rwm",
    "é: x",
    "cores",
]
CONFIG_LINE = st.one_of(
    st.builds(
        "{}{}{}".format,
        st.sampled_from(KEYS),
        st.sampled_from(SEPARATORS),
        st.one_of(st.sampled_from(VALUES), st.text(max_size=12)),
    ),
    st.sampled_from(OTHER_LINES),
    st.text(max_size=20),
)
PLAIN_LINE = st.builds(
    "{}: {}".format, st.sampled_from(KEYS[:20]), st.sampled_from([v for v in VALUES if v])
)
CONFIG_TEXT = st.builds(
    lambda lines, separator, end: separator.join(lines) + end,
    st.lists(st.one_of(PLAIN_LINE, PLAIN_LINE, CONFIG_LINE), max_size=16),
    st.sampled_from(["\n", "\n", "\n", "\r\n", "\r", "\x0b", "\x1c", "\u2028", "\x85"]),
    st.sampled_from(["", "\n", "\n\n"]),
)


@pytest.fixture(autouse=True, scope="module")
def _seen_keys() -> None:
    """Let the plain reader know every valid key, as it does after a first config."""
    parse_guest_config("".join(f"{key}: 1\n" for key in KEYS if key), 1, "qemu", "n", "f")


def exact(text: str, guest_type: str) -> tuple[dict[str, str], list[str], list[object]]:
    return guestconf._main_section(text, guest_type, "f", lines={})  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(CONFIG_TEXT, st.sampled_from(["qemu", "lxc"]))
def test_plain_main_section_equals_the_line_by_line_read(text, guest_type):
    plain = guestconf._plain_main_section(text)
    values, description, findings = exact(text, guest_type)
    if plain is not None:
        assert plain == (values, description)
        assert list(plain[0]) == list(values)  # same key order
        assert findings == []
    assert guestconf._main_section(text, guest_type, "f") == (values, description, findings)


@settings(max_examples=300, deadline=None)
@given(CONFIG_TEXT, st.sampled_from(["qemu", "lxc"]))
def test_guest_config_equals_the_exact_parse(text, guest_type):
    fast, fast_findings = parse_guest_config(text, 100, guest_type, "n", "f.conf", pool="p")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(guestconf, "_plain_main_section", lambda text: None)
        slow, slow_findings = parse_guest_config(text, 100, guest_type, "n", "f.conf", pool="p")
    assert (astuple(fast), fast.values, fast_findings) == (
        astuple(slow),
        slow.values,
        slow_findings,
    )


def test_plain_reader_takes_usual_configs_and_leaves_the_rest():
    usual = "#note\ncores: 2\nscsi0: local:vm-1-disk-0,size=8G\n\n[snap]\ncores: 4\n"
    assert guestconf._plain_main_section(usual) == (
        {"cores": "2", "scsi0": "local:vm-1-disk-0,size=8G"},
        ["note"],
    )
    for odd in ("cores:\n", "cores: 2\n#late\n", "description: x\n", "junk\n", "[x\n"):
        assert guestconf._plain_main_section(odd) is None


def test_a_bad_value_is_reported_at_its_last_line():
    text = "#d\ncores: 2\n\nmemory: 1\ncores: 0\nname: x\n[s]\ncores: 0\n"
    _, findings = parse_guest_config(text, 1, "qemu", "n", "f")
    assert [(f.where, f.message) for f in findings] == [
        ("f:5", "bad value '0' for 'cores' (expected an integer >= 1), using 1")
    ]


OPTION_ITEMS = st.one_of(
    st.sampled_from(
        ["size=8G", "size=1T", "media=cdrom", "file=local:x", "volume=ceph:y", "iothread=1"]
    ),
    st.sampled_from(["", " ", "size= 2G", "x", "a=b=c", "size=8G ", "=1"]),
    st.text(alphabet="ab=, :\t", max_size=6),
)
DISK_VALUE = st.builds(
    lambda volume, items: ",".join([volume, *items]),
    st.one_of(
        st.sampled_from(["local:vm-1", "none", "cdrom", "/dev/sdb", "a b:c", " local:x", "x=y"]),
        st.text(alphabet="ab: =", max_size=5),
    ),
    st.lists(OPTION_ITEMS, max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(DISK_VALUE, st.sampled_from(["file", "volume"]))
def test_disk_volume_equals_split_property_string(text, volume_key):
    keyed, positional = split_property_string(text)
    expected = (
        keyed.get(volume_key, positional[0] if positional else ""),
        keyed.get("media"),
        keyed.get("size"),
    )
    assert guestconf._volume(text, volume_key) == expected


def test_keyed_options_of_nothing_is_empty():
    assert guestconf._keyed_options("") == {}
    assert guestconf._keyed_options("size=1G,media=cdrom,size=2G") == {
        "size": "1G",
        "media": "cdrom",
    }
    assert guestconf._keyed_options("size=1G,,media=cdrom") is None


# -- shared value parsers and section configs ------------------------------------------------

INTEGER = re.compile(r"^\d+$")
PROPERTY = re.compile(r"^\s+(\S+)(?:\s+(.*\S))?\s*$")


@given(st.one_of(st.text(max_size=6), st.sampled_from(["12", "007", " 3 ", "٣", "²", "1\n"])))
def test_parse_int_equals_the_regular_expression(text):
    stripped = text.strip()
    expected = int(stripped) if INTEGER.match(stripped) else None
    assert parse_int(text) == expected


@given(st.text(alphabet=" \tab=\xa0\u2003\x1f#", max_size=10))
def test_split_property_equals_the_regular_expression(line):
    match = PROPERTY.match(line)
    assert split_property(line) == (match.groups() if match else None)


BODY_LINE = st.one_of(
    st.sampled_from(
        [
            "\tstate started",
            "\tstate stopped",
            "\tstate enabled",
            "\tstate odd",
            "\tmax_relocate 1",
            "\tmax_restart 3",
            "\tmax_restart x",
            "\tfailback 0",
            "\tauto-rebalance 0",
            "\tgroup fast",
            "\tcomment licence%20bound",
            "\tcolour red",
            "\tstate started ",
            "  state stopped",
            "\t",
            "state started",
            "vm: 101",
        ]
    ),
    st.text(alphabet="\t abc1", max_size=8),
)
HEADER = st.one_of(
    st.builds("vm: {}".format, st.integers(90, 105)),
    st.builds("ct: {}".format, st.integers(98, 105)),
    st.sampled_from(["VM: 100", "vm:100", "vm: 0100", "group: g", "vm: 1x", "vm: 100 "]),
)
PLAIN_SECTION = st.builds(
    lambda kind, vmid, body: "\n".join([f"{kind}: {vmid}", *body]),
    st.sampled_from(["vm", "ct"]),
    st.integers(100, 130),
    st.lists(st.sampled_from(["\tstate started", "\tmax_restart 2", "\tcomment c"]), max_size=3),
)
ANY_SECTION = st.builds(
    lambda header, body: "\n".join([header, *body]), HEADER, st.lists(BODY_LINE, max_size=4)
)
RESOURCES_TEXT = st.builds(
    lambda sections, separator, end: separator.join(sections) + end,
    st.lists(st.one_of(PLAIN_SECTION, PLAIN_SECTION, ANY_SECTION), min_size=1, max_size=6),
    st.sampled_from(["\n\n", "\n\n", "\n\n", "\n", "\n\n\n", "\r\n\r\n", "\n#c\n"]),
    st.sampled_from(["", "\n", "\n\n", "\n\n\n"]),
)


@settings(max_examples=400, deadline=None)
@given(RESOURCES_TEXT)
def test_plain_resources_equal_the_section_parse(text):
    plain = ha_resources._plain_resources(text, "r.cfg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ha_resources, "_plain_resources", lambda text, source: None)
        resources, findings = parse_resources_cfg(text, "r.cfg")
    if plain is not None:
        assert (plain, list(plain)) == (resources, list(resources))
        assert findings == []
    assert parse_resources_cfg(text, "r.cfg") == (resources, findings)


def test_plain_resources_take_the_usual_file():
    text = "vm: 100\n\tstate started\n\nct: 200\n\tstate stopped\n\tmax_restart 2\n"
    plain = ha_resources._plain_resources(text, "r.cfg")
    assert plain is not None
    assert [(r.sid, r.state, r.max_restart, r.line) for r in plain.values()] == [
        ("vm:100", "started", 1, 1),
        ("ct:200", "stopped", 2, 4),
    ]


# -- slot_init: the bulk constructors build what the dataclasses' own __init__ builds ---------


def test_slot_init_builds_equal_frozen_instances():
    make = slot_init(GuestConfig)
    built = make(1, "qemu", "n", "vm", 2.0, 1024, tags=("a",), values={"cores": "2"})
    expected = GuestConfig(1, "qemu", "n", "vm", 2.0, 1024, tags=("a",), values={"cores": "2"})
    assert (built, astuple(built), built.values, hash(built)) == (
        expected,
        astuple(expected),
        expected.values,
        hash(expected),
    )
    first, second = make(1, "lxc", "n", "ct", None, 1), make(1, "lxc", "n", "ct", None, 1)
    assert first.values == {}
    assert first.values is not second.values  # the default factory runs for each
    with pytest.raises(FrozenInstanceError):
        built.name = "other"  # type: ignore[misc]
    for cls, args in (
        (VmListEntry, (100, "n", "qemu")),
        (HaResource, ("vm:100", "vm", 100, "started", False, 2, 3, True, "g", "c", 7)),
        (ServiceStatus, ("n", "migrate", "m")),
    ):
        assert slot_init(cls)(*args) == cls(*args)  # type: ignore[operator]


def test_slot_init_refuses_what_it_cannot_build():
    @dataclass
    class Plain:
        x: int

    @dataclass(slots=True)
    class Later:
        x: int

        def __post_init__(self) -> None:
            pass

    for cls in (Plain, Later, int):
        with pytest.raises(TypeError):
            slot_init(cls)
