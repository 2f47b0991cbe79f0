"""Fast synthetic clusters for benchmarks and property tests, built straight as arrays.

``synthetic_arrays`` builds a :class:`balancer.cluster.ClusterArrays` for N nodes x M guests
in a few vectorised steps (no per-guest Python objects), with optional worst-case rules;
``synthetic_snapshot`` builds the equivalent :class:`model.Snapshot` for small sizes.

Nodes come in a few capacity classes (as real clusters do); guests are HA-managed, started and
running, spread unevenly (node i gets weight ~ 1 + i mod 5) so the cluster is imbalanced.
``paired`` co-locates guests 2i and 2i+1 (the positive pairs of the worst-case rules).
``unusable_nodes`` puts the last nodes in maintenance with no guests, which is how the RFC's
48-node anchor reaches 9,999 x 46 = 459,954 candidates (47 usable nodes hold the guests and
each guest has 46 other usable targets).

Worst-case rule set ("worst"): guests 4q..4q+3 form two positive pairs {4q, 4q+1} and
{4q+2, 4q+3}, two negative pairs {4q, 4q+2} and {4q+1, 4q+3}, and each positive pair shares
a node-affinity rule (half of the nodes, priorities 0..2, alternately strict). Each guest is
in three rules; pairs never share two resources with a negative rule.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from balancer.cluster import ClusterArrays
from model import Guest, HaConfig, Node, Rule, Snapshot

RuleKind = Literal["none", "worst"]
GIB = float(2**30)
CLASSES = np.array([[32.0, 256.0], [64.0, 512.0], [48.0, 384.0], [128.0, 1024.0]])


def synthetic_arrays(
    n_nodes: int,
    n_guests: int,
    seed: int = 0,
    unusable_nodes: int = 0,
    n_classes: int = 4,
    paired: bool = False,
) -> ClusterArrays:
    """A random imbalanced cluster as arrays; dynamic usage = sum of guest usage + host."""
    rng = np.random.default_rng(seed)
    cls = CLASSES[np.arange(n_nodes) % min(n_classes, len(CLASSES))]
    maxcpu, maxmem = cls[:, 0].copy(), cls[:, 1] * GIB
    usable = np.ones(n_nodes, dtype=np.bool_)
    holders = n_nodes - unusable_nodes
    usable[holders:] = False
    weight = 1.0 + (np.arange(holders) % 5)
    node = rng.choice(holders, size=n_guests, p=weight / weight.sum()).astype(np.int64)
    if paired:
        node[1::2] = node[0 : n_guests - n_guests % 2 : 2]
    gmaxcpu = rng.choice([1.0, 2.0, 4.0, 8.0], size=n_guests)
    gmaxmem = rng.choice([1.0, 2.0, 4.0, 8.0, 16.0], size=n_guests) * GIB
    gcpu = np.round(gmaxcpu * rng.uniform(0.05, 0.9, n_guests), 3)
    gmem = np.round(gmaxmem * rng.uniform(0.2, 0.9, n_guests))
    host_cpu = np.round(rng.uniform(0.1, 1.0, n_nodes), 3)
    host_mem = np.round(rng.uniform(1.0, 4.0, n_nodes) * GIB)
    node_cpu = host_cpu + np.bincount(node, weights=gcpu, minlength=n_nodes)
    node_mem = host_mem + np.bincount(node, weights=gmem, minlength=n_nodes)
    ones = np.ones(n_guests, dtype=np.bool_)
    return ClusterArrays(
        node_names=[f"node{i + 1:04d}" for i in range(n_nodes)],
        node_maxcpu=maxcpu,
        node_maxmem=maxmem,
        node_cpu=node_cpu,
        node_mem=node_mem,
        node_usable=usable,
        guest_sids=[f"vm:{100 + i}" for i in range(n_guests)],
        guest_vmid=np.arange(100, 100 + n_guests, dtype=np.int64),
        guest_is_ct=np.zeros(n_guests, dtype=np.bool_),
        guest_node=node,
        guest_cpu=gcpu,
        guest_mem=gmem,
        guest_maxcpu=gmaxcpu,
        guest_maxmem=gmaxmem,
        guest_running=ones,
        guest_ha=ones.copy(),
        guest_ha_started=ones.copy(),
        guest_auto_rebalance=ones.copy(),
        guest_starting=np.zeros(n_guests, dtype=np.bool_),
        guest_target=np.full(n_guests, -1, dtype=np.int64),
    )


def synthetic_rules(c: ClusterArrays, kind: RuleKind = "worst", seed: int = 0) -> list[Rule]:
    """The rule set described in the module docstring ("none": no rules)."""
    if kind == "none":
        return []
    rng = np.random.default_rng(seed + 1)
    sids = c.guest_sids
    n = c.n_nodes
    rules: list[Rule] = []
    for q in range(len(sids) // 4):
        a, b, x, y = (sids[4 * q + k] for k in range(4))
        rules.append(Rule(f"pos-{q}-a", "resource-affinity", [a, b], affinity="positive"))
        rules.append(Rule(f"pos-{q}-b", "resource-affinity", [x, y], affinity="positive"))
        rules.append(Rule(f"neg-{q}-a", "resource-affinity", [a, x], affinity="negative"))
        rules.append(Rule(f"neg-{q}-b", "resource-affinity", [b, y], affinity="negative"))
        for tag, pair in (("a", [a, b]), ("b", [x, y])):
            picked = rng.choice(n, size=max(1, n // 2), replace=False)
            nodes = {c.node_names[i]: int(rng.integers(0, 3)) for i in picked.tolist()}
            rules.append(
                Rule(f"na-{q}-{tag}", "node-affinity", pair, nodes=nodes, strict=bool(q % 2))
            )
    return rules


def synthetic_snapshot(
    n_nodes: int, n_guests: int, seed: int = 0, rules: RuleKind = "none", unusable_nodes: int = 0
) -> Snapshot:
    """The same cluster as :func:`synthetic_arrays`, as a model.Snapshot (small sizes)."""
    c = synthetic_arrays(n_nodes, n_guests, seed, unusable_nodes, paired=rules == "worst")
    nodes = [
        Node(
            name=name,
            online=True,
            maintenance=not bool(c.node_usable[i]),
            maxcpu=float(c.node_maxcpu[i]),
            maxmem=float(c.node_maxmem[i]),
            cpu=float(c.node_cpu[i]),
            mem=float(c.node_mem[i]),
        )
        for i, name in enumerate(c.node_names)
    ]
    guests = [
        Guest(
            vmid=int(c.guest_vmid[g]),
            sid=sid,
            type="qemu",
            name=f"guest{g}",
            node=c.node_names[int(c.guest_node[g])],
            status="running",
            ha=HaConfig(state="started", service_state="started"),
            maxcpu=float(c.guest_maxcpu[g]),
            maxmem=float(c.guest_maxmem[g]),
            cpu=float(c.guest_cpu[g]),
            mem=float(c.guest_mem[g]),
        )
        for g, sid in enumerate(c.guest_sids)
    ]
    return Snapshot(timestamp=0, nodes=nodes, guests=guests, rules=synthetic_rules(c, rules, seed))


def make_node(
    name: str,
    maxcpu: float,
    maxmem: float,
    cpu: float = 0.0,
    mem: float = 0.0,
    online: bool = True,
    maintenance: bool = False,
) -> Node:
    """A hand-written node for tests and examples (memory in bytes)."""
    return Node(name, online, maintenance, maxcpu, maxmem, cpu, mem)


def make_guest(
    vmid: int,
    node: str,
    cpu: float,
    mem: float,
    maxcpu: float = 1.0,
    maxmem: float = GIB,
    *,
    ha_state: str | None = "started",
    service_state: str | None = None,
    auto_rebalance: bool = True,
    running: bool = True,
    ct: bool = False,
) -> Guest:
    """A hand-written guest; ``ha_state=None`` makes it a non-HA guest."""
    prefix = "ct" if ct else "vm"
    ha = None
    if ha_state is not None:
        ha = HaConfig(
            state=ha_state,
            auto_rebalance=auto_rebalance,
            service_state=service_state or ha_state,
        )
    return Guest(
        vmid=vmid,
        sid=f"{prefix}:{vmid}",
        type="lxc" if ct else "qemu",
        name=f"{prefix}{vmid}",
        node=node,
        status="running" if running else "stopped",
        ha=ha,
        maxcpu=maxcpu,
        maxmem=maxmem,
        cpu=cpu if running else None,
        mem=mem if running else None,
    )
