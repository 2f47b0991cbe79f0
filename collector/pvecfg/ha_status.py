"""``/etc/pve/ha/manager_status``: the HA manager's live view of nodes and services.

The CRM master writes this JSON every round. Node states tell which nodes are in
maintenance or being fenced; service states tell which resources are already moving
(``migrate``, ``relocate``) or starting, which a balancer must not touch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from collector.pvecfg.ha_resources import HaResource
from collector.pvecfg.slotinit import slot_init
from collector.pvecfg.values import finding
from model.snapshot import Finding, HaConfig

NODE_STATES = ("online", "maintenance", "unknown", "fence", "gone")


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    node: str
    state: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class ManagerStatus:
    master_node: str | None = None
    timestamp: int | None = None
    node_status: dict[str, str] = field(default_factory=dict)
    service_status: dict[str, ServiceStatus] = field(default_factory=dict)


_new_status = slot_init(ServiceStatus)


def parse_manager_status(
    text: str, source: str = "ha/manager_status"
) -> tuple[ManagerStatus, list[Finding]]:
    """Parse manager_status; malformed entries are skipped with a finding."""
    findings: list[Finding] = []
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        findings.append(
            finding("config-syntax", f"{source}:{error.lineno}", f"invalid JSON: {error.msg}")
        )
        return ManagerStatus(), findings
    if not isinstance(data, dict):
        findings.append(finding("config-syntax", source, "expected a JSON object"))
        return ManagerStatus(), findings
    node_status: dict[str, str] = {}
    raw_nodes = data.get("node_status", {})
    for node, state in raw_nodes.items() if isinstance(raw_nodes, dict) else ():
        if state not in NODE_STATES:
            findings.append(
                finding(
                    "config-bad-value",
                    f"{source}:node_status.{node}",
                    f"unknown node state {state!r}",
                    "info",
                )
            )
        if isinstance(state, str):
            node_status[node] = state
    services: dict[str, ServiceStatus] = {}
    raw_services = data.get("service_status", {})
    for sid, raw in raw_services.items() if isinstance(raw_services, dict) else ():
        node = raw.get("node") if isinstance(raw, dict) else None
        state = raw.get("state") if isinstance(raw, dict) else None
        if not isinstance(node, str) or not isinstance(state, str):
            findings.append(
                finding(
                    "config-bad-value",
                    f"{source}:service_status.{sid}",
                    "service entry without string 'node' and 'state', skipped",
                )
            )
            continue
        target = raw.get("target")
        services[sid] = _new_status(node, state, target if isinstance(target, str) else None)
    master = data.get("master_node")
    timestamp = data.get("timestamp")
    return (
        ManagerStatus(
            master_node=master if isinstance(master, str) else None,
            timestamp=int(timestamp) if isinstance(timestamp, (int, float)) else None,
            node_status=node_status,
            service_status=services,
        ),
        findings,
    )


def ha_config(resource: HaResource | None, service: ServiceStatus | None) -> HaConfig | None:
    """A guest's ``ha`` block of the snapshot: resources.cfg joined with the live service state."""
    if resource is None:
        return None
    if service is None:
        return HaConfig(resource.state, resource.auto_rebalance, None, None, resource.group)
    return HaConfig(
        resource.state, resource.auto_rebalance, service.state, service.target, resource.group
    )
