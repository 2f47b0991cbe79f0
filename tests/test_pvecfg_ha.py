"""HA files: resources.cfg, rules.cfg, groups.cfg (turned into rules) and manager_status."""

from __future__ import annotations

from pathlib import Path

from collector.pvecfg.ha_resources import HaResource, parse_resources_cfg
from collector.pvecfg.ha_rules import (
    groups_to_rules,
    overlapping_node_affinity,
    parse_groups_cfg,
    parse_rules_cfg,
)
from collector.pvecfg.ha_status import ServiceStatus, parse_manager_status
from model import Finding, Rule

FIXTURES = Path(__file__).parent / "fixtures" / "etc_pve"
CLUSTER = FIXTURES / "pve9-cluster" / "ha"
MESSY = FIXTURES / "pve8-messy" / "ha"


def locations(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.where) for f in findings]


def test_resources_defaults_and_values():
    resources, findings = parse_resources_cfg((CLUSTER / "resources.cfg").read_text())
    assert findings == []
    assert list(resources) == ["vm:100", "vm:101", "ct:200", "vm:102"]
    assert resources["vm:100"] == HaResource("vm:100", "vm", 100, max_relocate=2, line=1)
    assert resources["vm:101"].auto_rebalance is False
    assert resources["vm:101"].comment == "db replica"
    assert resources["ct:200"] == HaResource("ct:200", "ct", 200, failback=False, line=10)
    assert resources["vm:102"].state == "stopped"


def test_resources_malformed():
    resources, findings = parse_resources_cfg((MESSY / "resources.cfg").read_text())
    assert list(resources) == ["vm:300", "ct:301", "vm:302"]
    assert resources["vm:300"].state == "started"  # 'enabled' is the old alias
    assert resources["vm:300"].group == "fast"
    assert resources["ct:301"].max_relocate == 0
    assert (resources["vm:302"].state, resources["vm:302"].max_restart) == ("started", 1)
    src = "ha/resources.cfg"
    assert locations(findings) == [
        ("config-syntax", f"{src}:17"),
        ("config-bad-value", f"{src}:9"),
        ("config-unknown-key", f"{src}:15"),
        ("config-bad-value", f"{src}:13"),
        ("config-bad-value", f"{src}:14"),
        ("config-unknown-section", f"{src}:19"),
    ]
    assert "'abc'" in findings[1].message


def test_rules():
    rules, findings = parse_rules_cfg((CLUSTER / "rules.cfg").read_text())
    assert findings == []
    assert rules == [
        Rule(
            "keep-db-on-fast-nodes",
            "node-affinity",
            ["vm:100", "vm:101"],
            nodes={"pve1": 2, "pve2": 1},
            strict=True,
        ),
        Rule("db-apart", "resource-affinity", ["vm:100", "vm:101"], affinity="negative"),
        Rule(
            "web-with-dns",
            "resource-affinity",
            ["vm:102", "ct:200"],
            affinity="positive",
            disable=True,
        ),
    ]


def test_rules_malformed_and_bare_vmids():
    rules, findings = parse_rules_cfg(
        (MESSY / "rules.cfg").read_text(), guest_types={301: "lxc", 300: "qemu"}
    )
    assert rules == [
        Rule("pin", "node-affinity", ["vm:300", "ct:301"], nodes={"n1": 1, "n3": 0}),
    ]
    src = "ha/rules.cfg"
    assert locations(findings) == [
        ("config-bad-value", f"{src}:2"),
        ("config-bad-value", f"{src}:3"),
        ("config-bad-value", f"{src}:7"),
        ("config-bad-value", f"{src}:5"),
        ("config-missing-key", f"{src}:9"),
        ("config-unknown-section", f"{src}:12"),
    ]
    assert "'vm:x1'" in findings[0].message
    assert "'n2:bad'" in findings[1].message


def test_bare_vmid_without_type_map_is_a_vm():
    rules, findings = parse_rules_cfg(
        "resource-affinity: r\n\tresources 5,ct:6\n\taffinity positive\n"
    )
    assert findings == []
    assert rules[0].resources == ["vm:5", "ct:6"]


def test_groups_become_node_affinity_rules():
    groups, findings = parse_groups_cfg((MESSY / "groups.cfg").read_text())
    assert sorted(groups) == ["fast", "odd", "unused"]
    assert groups["fast"].nodes == {"n1": 2, "n2": 0}
    assert (groups["fast"].restricted, groups["fast"].nofailback) == (True, True)
    assert groups["odd"].nodes == {"n2": 1}
    src = "ha/groups.cfg"
    assert locations(findings) == [
        ("config-missing-key", f"{src}:9"),
        ("config-unknown-section", f"{src}:12"),
        ("config-bad-value", f"{src}:16"),
    ]
    resources, _ = parse_resources_cfg((MESSY / "resources.cfg").read_text())
    rules, rule_findings = groups_to_rules(groups, resources)
    assert rules == [
        Rule(
            "group:fast",
            "node-affinity",
            ["vm:300"],
            nodes={"n1": 2, "n2": 0},
            strict=True,
            origin="groups.cfg",
        ),
        Rule(
            "group:odd",
            "node-affinity",
            ["vm:302"],
            nodes={"n2": 1},
            strict=False,
            origin="groups.cfg",
        ),
    ]
    assert locations(rule_findings) == [("config-bad-value", "ha/resources.cfg:5")]
    assert "'nosuch'" in rule_findings[0].message


def test_overlapping_node_affinity_ignores_disabled_rules():
    rules = [
        Rule("a", "node-affinity", ["vm:1", "vm:2"], nodes={"n1": 0}),
        Rule("b", "node-affinity", ["vm:2"], nodes={"n2": 0}, origin="groups.cfg"),
        Rule("c", "node-affinity", ["vm:1"], nodes={"n2": 0}, disable=True),
        Rule("d", "resource-affinity", ["vm:1", "vm:2"], affinity="positive"),
    ]
    findings = overlapping_node_affinity(rules)
    assert locations(findings) == [("config-rule-conflict", "vm:2")]
    assert "rules.cfg:a" in findings[0].message
    assert "groups.cfg:b" in findings[0].message


def test_manager_status():
    status, findings = parse_manager_status((CLUSTER / "manager_status").read_text())
    assert findings == []
    assert status.master_node == "pve1"
    assert status.timestamp == 1732540000
    assert status.node_status == {"pve1": "online", "pve2": "online", "pve3": "maintenance"}
    assert status.service_status["vm:101"] == ServiceStatus("pve1", "migrate", "pve2")
    assert status.service_status["ct:200"] == ServiceStatus("pve1", "started", None)


def test_manager_status_truncated_and_bad_entries():
    status, findings = parse_manager_status((MESSY / "manager_status").read_text())
    assert status.node_status == {}
    assert locations(findings) == [("config-syntax", "ha/manager_status:1")]
    status, findings = parse_manager_status(
        '{"node_status": {"a": "online", "b": "exploded"},'
        ' "service_status": {"vm:1": {"node": "a"}, "vm:2": {"node": "b", "state": "fence"}}}'
    )
    assert status.node_status == {"a": "online", "b": "exploded"}
    assert status.service_status == {"vm:2": ServiceStatus("b", "fence")}
    assert locations(findings) == [
        ("config-bad-value", "ha/manager_status:node_status.b"),
        ("config-bad-value", "ha/manager_status:service_status.vm:1"),
    ]
