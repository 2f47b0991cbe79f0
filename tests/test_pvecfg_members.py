"""The JSON files .vmlist and .members, user.cfg pools and storage.cfg."""

from __future__ import annotations

from pathlib import Path

from collector.pvecfg.members import MemberNode, VmListEntry, parse_members, parse_vmlist
from collector.pvecfg.pools import parse_pools, pool_of_guest
from collector.pvecfg.storage import parse_storage_cfg
from model import Finding

FIXTURES = Path(__file__).parent / "fixtures" / "etc_pve"


def locations(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.where) for f in findings]


def test_vmlist():
    entries, findings = parse_vmlist((FIXTURES / "pve9-cluster" / ".vmlist").read_text())
    assert findings == []
    assert sorted(entries) == [100, 101, 102, 103, 200, 201]
    assert entries[200] == VmListEntry(200, "pve1", "lxc", 3)


def test_vmlist_bad_entries_and_bad_json():
    entries, findings = parse_vmlist((FIXTURES / "pve8-messy" / ".vmlist").read_text())
    assert sorted(entries) == [300, 301, 302, 303, 306]
    assert locations(findings) == [
        ("config-bad-value", ".vmlist:abc"),
        ("config-bad-value", ".vmlist:304"),
    ]
    entries, findings = parse_vmlist('{"version": 1,\n"ids": {')
    assert entries == {}
    assert locations(findings) == [("config-syntax", ".vmlist:2")]
    assert findings[0].severity == "error"


def test_members_cluster():
    members, findings = parse_members((FIXTURES / "pve9-cluster" / ".members").read_text())
    assert findings == []
    assert (members.local_node, members.cluster_name, members.quorate) == ("pve1", "lab", True)
    assert members.nodes["pve3"] == MemberNode("pve3", 3, False, "192.168.10.13")
    assert [n.online for n in members.nodes.values()] == [True, True, False]


def test_members_standalone_node():
    members, findings = parse_members((FIXTURES / "pve8-messy" / ".members").read_text())
    assert findings == []
    assert members.cluster_name is None
    assert members.nodes == {"n1": MemberNode("n1", None, True, None)}


def test_members_not_an_object():
    members, findings = parse_members("[1, 2]")
    assert members.nodes == {}
    assert locations(findings) == [("config-syntax", ".members")]


def test_pools():
    pools, findings = parse_pools((FIXTURES / "pve9-cluster" / "user.cfg").read_text())
    assert findings == []
    assert pools["prod"].comment == "Production guests"
    assert pools["lab"].storages == ("local-lvm",)
    assert pool_of_guest(pools) == {100: "prod", 101: "prod", 200: "prod", 102: "lab", 103: "lab"}


def test_pools_malformed():
    pools, findings = parse_pools((FIXTURES / "pve8-messy" / "user.cfg").read_text())
    assert pool_of_guest(pools) == {300: "alpha", 301: "alpha", 302: "beta"}
    assert locations(findings) == [
        ("config-bad-value", "user.cfg:2"),
        ("config-bad-value", "user.cfg:3"),
        ("config-syntax", "user.cfg:4"),
    ]


def test_storage_shared_rules():
    storages, findings = parse_storage_cfg((FIXTURES / "pve9-cluster" / "storage.cfg").read_text())
    assert findings == []
    shared = {sid for sid, storage in storages.items() if storage.shared}
    assert shared == {"ceph-vm", "ceph-ct", "cephfs", "nfs-dir", "backup"}
    assert storages["local-zfs"].nodes == frozenset({"pve1", "pve2"})
    assert storages["local-zfs"].available_on("pve2")
    assert not storages["local-zfs"].available_on("pve3")
    assert storages["local"].nodes is None
    assert storages["local"].content == frozenset({"iso", "vztmpl", "backup"})
    assert storages["local"].path == "/var/lib/vz"
    assert storages["backup"].disable is True  # bare flag
    assert not storages["backup"].available_on("pve1")


def test_storage_malformed():
    storages, findings = parse_storage_cfg((FIXTURES / "pve8-messy" / "storage.cfg").read_text())
    assert sorted(storages) == ["drbdstore", "local", "san"]
    assert storages["local"].path == "/var/lib/vz"
    assert storages["drbdstore"].shared is True
    assert storages["san"].shared is False
    assert locations(findings) == [
        ("config-syntax", "storage.cfg:5"),
        ("config-syntax", "storage.cfg:14"),
        ("config-unknown-section", "storage.cfg:6"),
        ("config-bad-value", "storage.cfg:12"),
    ]
    assert findings[2].severity == "info"
