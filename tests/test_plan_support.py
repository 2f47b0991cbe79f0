"""Builders for small hand-checkable clusters used by the planner and engine tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from balancer.engine import decide
from balancer.options import BalancerOptions
from balancer.stability import BalancerState
from model import Crs, Guest, HaConfig, Node, Rule, Snapshot
from model.plan import RoundResult

GIB = float(1 << 30)


def vm(
    vmid: int,
    node: str,
    cpu: float,
    mem_gib: float,
    *,
    kind: str = "qemu",
    ha: bool = True,
    auto_rebalance: bool = True,
    tags: Sequence[str] = (),
    pool: str | None = None,
    template: bool = False,
    status: str = "running",
    maxcpu: float = 4.0,
    maxmem_gib: float | None = None,
    local_disk_gib: float | None = None,
) -> Guest:
    prefix = "ct" if kind == "lxc" else "vm"
    return Guest(
        vmid=vmid,
        sid=f"{prefix}:{vmid}",
        type="lxc" if kind == "lxc" else "qemu",
        name=f"guest{vmid}",
        node=node,
        status=status,
        ha=HaConfig(state="started", auto_rebalance=auto_rebalance, service_state="started")
        if ha
        else None,
        maxcpu=maxcpu,
        maxmem=(maxmem_gib if maxmem_gib is not None else mem_gib) * GIB,
        cpu=cpu if status == "running" else None,
        mem=mem_gib * GIB if status == "running" else None,
        tags=list(tags),
        template=template,
        pool=pool,
        maxdisk=None if local_disk_gib is None else local_disk_gib * GIB,
        local_disk=local_disk_gib is not None,
    )


def cluster(
    node_names: Sequence[str],
    guests: Sequence[Guest],
    *,
    cores: float = 10.0,
    mem_gib: float = 100.0,
    rules: Sequence[Rule] = (),
    offline: Sequence[str] = (),
    maintenance: Sequence[str] = (),
    sizes: dict[str, tuple[float, float]] | None = None,
) -> Snapshot:
    """Nodes whose measured usage is the sum of their running guests' usage."""
    nodes = []
    for name in node_names:
        here = [g for g in guests if g.node == name and g.status == "running"]
        node_cores, node_mem = (sizes or {}).get(name, (cores, mem_gib))
        nodes.append(
            Node(
                name=name,
                online=name not in offline,
                maintenance=name in maintenance,
                maxcpu=node_cores,
                maxmem=node_mem * GIB,
                cpu=sum(g.cpu or 0.0 for g in here),
                mem=sum(g.mem or 0.0 for g in here),
            )
        )
    return Snapshot(
        timestamp=1_700_000_000,
        nodes=nodes,
        guests=list(guests),
        rules=list(rules),
        crs=Crs(ha="dynamic", auto_rebalance=True, hold_duration=0),
    )


def options(**overrides: object) -> BalancerOptions:
    """Dynamic greedy options acting at once, without cost-benefit or cooldown surprises."""
    base: dict[str, object] = {
        "mode": "dynamic",
        "method": "greedy",
        "threshold": 10.0,
        "hold_duration": 0,
        "overload_hold": 1,
        "margin": 0.0,
        "min_gain_per_gib": 0.0,
        "lookahead_width": 0,
        "concurrency": 1,
    }
    base.update(overrides)
    return BalancerOptions(**base)  # type: ignore[arg-type]


def test_cluster_node_usage_is_the_sum_of_its_guests() -> None:
    snap = cluster(["a", "b"], [vm(100, "a", 2.0, 8.0), vm(101, "a", 1.0, 4.0)])
    assert snap.nodes[0].cpu == 3.0
    assert snap.nodes[0].mem == 12.0 * GIB
    assert snap.nodes[1].mem == 0.0


def run(
    snap: Snapshot, state: BalancerState | None = None, /, **overrides: Any
) -> tuple[RoundResult, BalancerState]:
    """One engine round at ``now`` (default 1000) with :func:`options` and a fresh state."""
    now = float(overrides.pop("now", 1000.0))
    return decide(snap, options(**overrides), state or BalancerState(), now)


def even_cluster(per_node: dict[str, int], mem_gib: float = 10.0, cpu: float = 1.0) -> Snapshot:
    """Identical guests (cpu cores, mem GiB each) spread as given over 10-core/100-GiB nodes."""
    guests = []
    vmid = 100
    for name, count in per_node.items():
        for _ in range(count):
            guests.append(vm(vmid, name, cpu, mem_gib))
            vmid += 1
    return cluster(list(per_node), guests)
