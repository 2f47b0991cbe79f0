"""Guest config parsing: main section only, static size, tags, disks, findings."""

from __future__ import annotations

from pathlib import Path

from collector.pvecfg.guestconf import GuestConfig, parse_guest_config, split_tags
from collector.pvecfg.members import GuestType
from model import Finding

FIXTURES = Path(__file__).parent / "fixtures" / "etc_pve"
GIB = 2**30


def parse_fixture(
    relative: str, vmid: int, guest_type: GuestType, node: str
) -> tuple[GuestConfig, list[Finding]]:
    text = (FIXTURES / relative).read_text()
    return parse_guest_config(text, vmid, guest_type, node, relative)


def test_vm_sockets_times_cores_disks_and_description():
    config, findings = parse_fixture(
        "pve9-cluster/nodes/pve1/qemu-server/100.conf", 100, "qemu", "pve1"
    )
    assert findings == []
    assert config.sid == "vm:100"
    assert config.name == "db01"
    assert config.maxcpu == 2 * 4
    assert config.maxmem == 8192 * 2**20
    assert config.tags == ("db", "prod")
    # scsi0 64G + scsi1 200G + efidisk0 1M; the CD-ROM image is not a disk
    assert config.disk_bytes == 264 * GIB + 2**20
    assert config.storages == frozenset({"ceph-vm", "cephfs"})
    assert config.description == "Primary PostgreSQL: managed by ansible\nsecond line"
    assert config.template is False
    assert config.host_volumes == ()


def test_vm_vcpus_capped_by_fractional_cpulimit_and_passthrough():
    config, findings = parse_fixture(
        "pve9-cluster/nodes/pve1/qemu-server/101.conf", 101, "qemu", "pve1"
    )
    assert findings == []
    assert config.maxcpu == 2.5  # vcpus 3 capped by cpulimit 2.5
    assert config.cpulimit == 2.5
    assert config.tags == ("db", "replica")
    # usb0 spice and the mapped usb2 do not bind the VM to its node
    assert config.local_devices == ("hostpci0", "usb1")
    assert config.storages == frozenset({"nfs-dir"})


def test_vcpus_without_limit_and_limit_above_vcpus():
    config, _ = parse_guest_config("sockets: 2\ncores: 8\nvcpus: 6\n", 1, "qemu", "n", "x")
    assert config.maxcpu == 6
    config, _ = parse_guest_config("cores: 2\ncpulimit: 4\n", 1, "qemu", "n", "x")
    assert config.maxcpu == 2
    config, _ = parse_guest_config("", 7, "qemu", "n", "x")
    assert (config.maxcpu, config.maxmem, config.name) == (1, 512 * 2**20, "VM 7")


def test_pending_and_snapshot_sections_are_ignored():
    config, findings = parse_fixture(
        "pve9-cluster/nodes/pve2/qemu-server/102.conf", 102, "qemu", "pve2"
    )
    assert findings == []
    assert (config.maxcpu, config.maxmem) == (2, 2048 * 2**20)
    assert config.disk_bytes == 32 * GIB  # not the snapshot's 16G, unused0 has no size
    assert config.storages == frozenset({"local-lvm"})
    assert config.tags == ("web", "prod")
    assert config.values["parent"] == "before-upgrade"


def test_cloudinit_section_ends_main_section():
    text = "cores: 2\n[special:cloudinit]\ncores: 9\nipconfig0: ip=dhcp\n"
    config, findings = parse_guest_config(text, 5, "qemu", "n", "x")
    assert findings == []
    assert config.maxcpu == 2
    assert "ipconfig0" not in config.values


def test_template():
    config, _ = parse_fixture("pve9-cluster/nodes/pve3/qemu-server/103.conf", 103, "qemu", "pve3")
    assert config.template is True
    assert config.disk_bytes == 10 * GIB


def test_container_with_cores_mountpoints_and_raw_lxc_keys():
    config, findings = parse_fixture("pve9-cluster/nodes/pve1/lxc/200.conf", 200, "lxc", "pve1")
    assert findings == []
    assert config.sid == "ct:200"
    assert config.name == "dns01"
    assert config.maxcpu == 2
    assert config.maxmem == 1024 * 2**20
    assert config.disk_bytes == 28 * GIB
    assert config.storages == frozenset({"ceph-ct"})
    assert config.description == "DNS resolver"
    assert "lxc.apparmor.profile" not in config.values


def test_container_without_cores_uses_host_cores_capped_by_cpulimit():
    config, findings = parse_fixture("pve9-cluster/nodes/pve2/lxc/201.conf", 201, "lxc", "pve2")
    assert findings == []
    assert config.maxcpu is None
    assert config.maxcpu_on(16) == 1.5
    assert config.maxmem == 512 * 2**20
    assert config.host_volumes == ("/mnt/pve/media",)
    assert config.lock == "backup"
    assert config.name == "media"  # not the snapshot's hostname
    unlimited, _ = parse_guest_config("hostname: x\n", 9, "lxc", "n", "x")
    assert unlimited.maxcpu_on(12) == 12


def test_memory_property_string_and_bad_values_keep_defaults():
    relative = "pve8-messy/nodes/n1/qemu-server/300.conf"
    config, findings = parse_fixture(relative, 300, "qemu", "n1")
    assert config.maxmem == 4096 * 2**20
    assert config.maxcpu == 2  # sockets 2 x cores default 1 (cores 0 rejected)
    assert config.cpulimit == 0
    assert config.host_volumes == ("/dev/disk/by-id/ata-XYZ",)
    assert config.storages == frozenset({"local"})
    assert config.disk_bytes == 100 * GIB  # scsi0's size is invalid, the pass-through counts
    assert [(f.kind, f.where) for f in findings] == [
        ("config-syntax", f"{relative}:6"),
        ("config-bad-value", f"{relative}:3"),
        ("config-bad-value", f"{relative}:5"),
        ("config-bad-value", f"{relative}:7"),
        ("config-bad-value", f"{relative}:9"),
    ]
    assert "'cores'" in findings[1].message
    assert "'cpulimit'" in findings[2].message


def test_empty_value_and_bad_memory_are_findings():
    config, findings = parse_guest_config("name:\nmemory: lots\n", 8, "qemu", "n", "f.conf")
    assert config.maxmem == 512 * 2**20
    assert config.name == "VM 8"
    assert [(f.kind, f.where) for f in findings] == [
        ("config-syntax", "f.conf:1"),
        ("config-bad-value", "f.conf:2"),
    ]


def test_split_tags_accepts_every_pve_separator():
    assert split_tags("a;b,c d;;a") == ("a", "b", "c", "d")
    assert split_tags("") == ()
