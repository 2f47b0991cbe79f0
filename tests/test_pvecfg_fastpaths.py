"""Inputs off the parsers' fast paths (odd spacing, keyed volumes, Unicode digits) parse as
before the fast paths existed; the expectations were recorded from the line-by-line parser."""

from __future__ import annotations

from collector.pvecfg import parse_guest_config, parse_pools, parse_vmlist

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
