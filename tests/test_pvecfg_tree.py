"""read_tree over whole /etc/pve-shaped directories, and robustness against arbitrary text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.pvecfg import (
    PveTreeNotFoundError,
    parse_datacenter_cfg,
    parse_groups_cfg,
    parse_guest_config,
    parse_manager_status,
    parse_members,
    parse_pools,
    parse_resources_cfg,
    parse_rules_cfg,
    parse_storage_cfg,
    parse_vmlist,
    read_tree,
)
from model import Crs, Finding

FIXTURES = Path(__file__).parent / "fixtures" / "etc_pve"


def locations(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.where) for f in findings]


def test_clean_cluster():
    tree = read_tree(FIXTURES / "pve9-cluster")
    assert tree.findings == []
    assert tree.members is not None
    assert tree.members.cluster_name == "lab"
    assert sorted(tree.guests) == [100, 101, 102, 103, 200, 201]
    assert tree.crs == Crs(
        ha="dynamic", rebalance_on_start=True, auto_rebalance=True, threshold=40.0
    )
    assert {vmid: g.pool for vmid, g in tree.guests.items()} == {
        100: "prod",
        101: "prod",
        102: "lab",
        103: "lab",
        200: "prod",
        201: None,
    }
    local = {100: False, 101: False, 102: True, 103: False, 200: False, 201: True}
    assert {vmid: tree.has_local_disk(g) for vmid, g in tree.guests.items()} == local
    shared = tree.shared_storages()
    assert {vmid: tree.has_local_disk(g, shared) for vmid, g in tree.guests.items()} == local
    assert [r.id for r in tree.rules] == ["keep-db-on-fast-nodes", "db-apart", "web-with-dns"]
    assert sorted(tree.ha_resources) == ["ct:200", "vm:100", "vm:101", "vm:102"]
    assert tree.manager_status is not None
    assert tree.manager_status.node_status["pve3"] == "maintenance"
    assert tree.guests[201].maxcpu_on(8) == 1.5


def test_messy_tree_cross_checks():
    tree = read_tree(FIXTURES / "pve8-messy")
    assert sorted(tree.guests) == [300, 301, 302, 305, 306]
    assert tree.guests[306].name == "live-copy"  # the copy .vmlist points at
    assert tree.guests[302].node == "n1"  # where its config was found
    assert tree.vmlist[302].node == "n2"
    assert tree.crs.threshold == 45.0
    assert tree.crs.margin == 5.0
    # rules.cfg rule first, then the groups.cfg ones; bare 301 resolved to a CT via .vmlist
    assert [(r.id, r.origin) for r in tree.rules] == [
        ("pin", "rules.cfg"),
        ("group:fast", "groups.cfg"),
        ("group:odd", "groups.cfg"),
    ]
    assert tree.rules[0].resources == ["vm:300", "ct:301"]
    assert tree.has_local_disk(tree.guests[306])  # 'nas' is not in storage.cfg
    cross = [
        (f.kind, f.where)
        for f in tree.findings
        if not f.kind.startswith("config-")
        or f.kind
        in (
            "config-duplicate",
            "config-without-vmlist",
            "config-unknown-storage",
            "config-rule-conflict",
            "config-unreadable",
        )
    ]
    assert cross == [
        ("config-rule-conflict", "vm:300"),
        ("vmlist-misplaced-config", "nodes/n1/qemu-server/302.conf"),
        ("config-without-vmlist", "nodes/n2/qemu-server/305.conf"),
        ("config-duplicate", "nodes/n1/qemu-server/306.conf"),
        ("vmlist-without-config", "vm:303"),
        ("config-unknown-storage", "nodes/n2/qemu-server/306.conf"),
    ]
    found = locations(tree.findings)
    assert ("config-syntax", "nodes/n2/qemu-server/305.conf") in found  # not UTF-8
    assert ("config-syntax", "nodes/n2/qemu-server/notes.txt") in found
    assert ("config-syntax", "ha/manager_status:1") in found
    assert ("config-syntax", "nodes/n1/qemu-server/300.conf:6") in found
    assert tree.guests[305].name == "latin1"


def test_missing_root_raises_clear_error(tmp_path):
    with pytest.raises(PveTreeNotFoundError, match="nowhere"):
        read_tree(tmp_path / "nowhere")
    assert issubclass(PveTreeNotFoundError, FileNotFoundError)


def test_empty_root_gives_defaults(tmp_path):
    tree = read_tree(tmp_path)
    assert tree.crs == Crs()
    assert (tree.guests, tree.rules, tree.storages, tree.members) == ({}, [], {}, None)
    assert locations(tree.findings) == [("vmlist-missing", ".vmlist")]


def test_unreadable_file_is_a_finding(tmp_path):
    root = tmp_path / "pve"
    shutil.copytree(FIXTURES / "pve9-cluster", root)
    (root / "datacenter.cfg").unlink()
    (root / "datacenter.cfg").mkdir()
    tree = read_tree(root)
    assert tree.crs == Crs()
    assert locations(tree.findings) == [("config-unreadable", "datacenter.cfg")]
    assert tree.findings[0].severity == "error"


PARSERS = [
    parse_datacenter_cfg,
    parse_groups_cfg,
    parse_manager_status,
    parse_members,
    parse_pools,
    parse_resources_cfg,
    parse_rules_cfg,
    parse_storage_cfg,
    parse_vmlist,
]
LINES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "vm: 100",
                "\tstate x",
                "pool:a:b:1,x:",
                "crs: ha=9,x",
                "[snap]",
                "cores: -1",
                "scsi0: a:b,size=1Q",
                "",
                "\t",
                "{",
                "#c",
            ]
        ),
        st.text(max_size=30),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(LINES)
def test_no_parser_raises_on_arbitrary_text(lines):
    text = "\n".join(lines)
    for parser in PARSERS:
        _, findings = parser(text, "f")
        assert all(f.where.startswith("f") for f in findings)
    for guest_type in ("qemu", "lxc"):
        config, _ = parse_guest_config(text, 100, guest_type, "n", "f")
        assert config.maxmem > 0


def test_broken_vmlist_disables_cross_check(tmp_path):
    root = tmp_path / "pve"
    shutil.copytree(FIXTURES / "pve9-cluster", root)
    (root / ".vmlist").write_text('{"version": 3, "ids": {"100": ')
    tree = read_tree(root)
    assert tree.vmlist == {}
    assert len(tree.guests) == 6
    assert locations(tree.findings) == [
        ("config-syntax", ".vmlist:1"),
        ("vmlist-missing", ".vmlist"),
    ]
