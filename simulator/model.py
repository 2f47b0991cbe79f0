"""The seeded definition of a synthetic cluster: nodes, guests, HA rules, groups and pools.

Everything here is decided once from the seed (numpy ``default_rng``), before any file is
written, so two runs with the same arguments describe the very same cluster. Placement is
deliberately skewed (a few nodes get far more than their share) so a balancer has work to do,
while strict node-affinity, positive and negative resource-affinity rules are respected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SIM_NOW = 1_767_225_600
"""The simulated "now" every fresh simulation ends at: 2026-01-01T00:00:00Z, whatever the seed."""

MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

LOCAL_STORAGE = "local-lvm"
SHARED_STORAGE = "ceph-vm"
DIR_STORAGE = "local"

NODE_CORES = np.array([16, 24, 32, 48, 64, 96, 128])
NODE_MEM_GIB = np.array([64, 96, 128, 256, 384, 512, 1024])
ROLES = ("web", "db", "cache", "app", "ci", "mon", "mail", "proxy")
ENVIRONMENTS = ("prod", "staging", "dev")
VM_OSTYPES = ("l26", "l26", "l26", "win11", "win2k22")
CT_OSTYPES = ("debian", "ubuntu", "alpine")

GuestKind = Literal["qemu", "lxc"]


@dataclass(frozen=True, slots=True)
class SimNode:
    name: str
    nodeid: int
    ip: str
    cores: int
    memtotal: int
    swaptotal: int
    roottotal: int
    host_cpu: float
    """Cores the host itself uses (kernel, pmxcfs, ceph daemons...)."""
    host_mem: int
    """Bytes the host itself uses."""


@dataclass(frozen=True, slots=True)
class SimDisk:
    key: str
    storage: str
    size_gib: int


@dataclass(slots=True)
class SimGuest:
    vmid: int
    kind: GuestKind
    name: str
    node: str
    running: bool
    template: bool
    cores: int | None
    """None only for containers without a ``cores`` key (they may use all host cores)."""
    sockets: int
    vcpus: int | None
    cpulimit: float | None
    memory_mib: int
    tags: tuple[str, ...]
    pool: str | None
    disks: tuple[SimDisk, ...]
    ostype: str
    mac: str
    has_snapshot: bool
    ha_state: str | None = None
    """HA resource state (started, stopped, disabled, ignored) or None when not HA-managed."""
    auto_rebalance: bool = True
    group: str | None = None

    @property
    def sid(self) -> str:
        return f"{'vm' if self.kind == 'qemu' else 'ct'}:{self.vmid}"

    @property
    def maxmem(self) -> int:
        return self.memory_mib * MIB

    @property
    def maxdisk(self) -> int:
        return sum(d.size_gib for d in self.disks) * GIB

    @property
    def local_disk(self) -> bool:
        return any(d.storage == LOCAL_STORAGE for d in self.disks)

    def maxcpu(self, node_cores: int) -> float:
        """Configured vCPUs as PVE reports them (pve-facts.md section 3)."""
        if self.kind == "qemu":
            count = float(self.vcpus or self.sockets * (self.cores or 1))
        else:
            count = float(self.cores if self.cores is not None else node_cores)
        if self.cpulimit:
            count = min(count, self.cpulimit)
        return count


@dataclass(frozen=True, slots=True)
class SimRule:
    id: str
    type: Literal["node-affinity", "resource-affinity"]
    resources: tuple[str, ...]
    nodes: tuple[tuple[str, int], ...] = ()
    strict: bool = False
    affinity: Literal["positive", "negative"] | None = None
    disable: bool = False
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class SimGroup:
    """A legacy (pre-9) HA group: what PVE 9 turns into a node-affinity rule."""

    id: str
    nodes: tuple[tuple[str, int], ...]
    restricted: bool


@dataclass(slots=True)
class ClusterSpec:
    seed: int
    name: str
    nodes: list[SimNode]
    guests: list[SimGuest]
    rules: list[SimRule] = field(default_factory=list)
    groups: list[SimGroup] = field(default_factory=list)
    pools: dict[str, list[int]] = field(default_factory=dict)
    crs: str = (
        "ha=dynamic,ha-rebalance-on-start=1,ha-auto-rebalance=1,ha-auto-rebalance-threshold=10"
    )

    def node_index(self) -> dict[str, int]:
        return {n.name: i for i, n in enumerate(self.nodes)}


def build_cluster(
    nodes: int, guests: int, seed: int, *, legacy_groups: bool = False
) -> ClusterSpec:
    """Decide the whole cluster layout from the seed."""
    if nodes < 1 or guests < 0:
        raise ValueError(
            f"need at least one node and no negative guest count, got {nodes}/{guests}"
        )
    rng = np.random.default_rng([seed, 0])
    sim_nodes = _make_nodes(rng, nodes)
    sim_guests = _make_guests(rng, sim_nodes, guests)
    rules = _make_rules(rng, sim_nodes, sim_guests)
    _place(rng, sim_nodes, sim_guests, rules)
    groups: list[SimGroup] = []
    if legacy_groups:
        rules, groups = _rules_to_groups(rules, sim_guests)
    pools: dict[str, list[int]] = {env: [] for env in ENVIRONMENTS}
    for guest in sim_guests:
        if guest.pool is not None:
            pools[guest.pool].append(guest.vmid)
    return ClusterSpec(seed, f"sim{seed}", sim_nodes, sim_guests, rules, groups, pools)


def _make_nodes(rng: np.random.Generator, count: int) -> list[SimNode]:
    size_class = rng.integers(0, len(NODE_CORES), count)
    mem_class = np.clip(size_class + rng.integers(-1, 2, count), 0, len(NODE_MEM_GIB) - 1)
    host_cpu = rng.uniform(0.2, 1.0, count)
    host_mem_gib = rng.uniform(2.0, 8.0, count)
    out = []
    for i in range(count):
        out.append(
            SimNode(
                name=f"pve{i + 1}",
                nodeid=i + 1,
                ip=f"10.10.{(i + 1) // 250}.{(i + 1) % 250 + 1}",
                cores=int(NODE_CORES[size_class[i]]),
                memtotal=int(NODE_MEM_GIB[mem_class[i]]) * GIB,
                swaptotal=8 * GIB,
                roottotal=100 * GIB,
                host_cpu=round(float(host_cpu[i]), 3),
                host_mem=int(host_mem_gib[i] * GIB) // MIB * MIB,
            )
        )
    return out


def _mac(rng: np.random.Generator) -> str:
    tail = rng.integers(0, 256, 3)
    return "BC:24:11:" + ":".join(f"{int(b):02X}" for b in tail)


def _make_guests(rng: np.random.Generator, nodes: list[SimNode], count: int) -> list[SimGuest]:
    cluster_mem = sum(n.memtotal for n in nodes)
    is_ct = rng.random(count) < 0.2
    is_template = (~is_ct) & (rng.random(count) < 0.01)
    running = (~is_template) & (rng.random(count) >= 0.09)
    mean_mem_mib = max(cluster_mem / max(int(running.sum()), 1) / MIB, 512.0)
    mem_mib = mean_mem_mib * rng.lognormal(-0.25, 0.7, count)
    mem_mib = np.clip(2.0 ** np.round(np.log2(mem_mib)), 512, 256 * 1024).astype(int)
    cores = rng.choice([1, 2, 2, 4, 4, 8, 16], count)
    ha_draw = rng.random(count)
    guests = []
    for i in range(count):
        vmid = 100 + i
        kind: GuestKind = "lxc" if is_ct[i] else "qemu"
        role = ROLES[int(rng.integers(len(ROLES)))]
        env = ENVIRONMENTS[int(rng.integers(len(ENVIRONMENTS)))]
        tags = (role, env) if rng.random() < 0.7 else ()
        shared = rng.random() < 0.6
        storage = SHARED_STORAGE if shared else LOCAL_STORAGE
        disk_gib = int(rng.choice([8, 16, 32, 64, 128]))
        first = "rootfs" if kind == "lxc" else "scsi0"
        disks = [SimDisk(first, storage, disk_gib)]
        if rng.random() < 0.15:
            disks.append(SimDisk("mp0" if kind == "lxc" else "scsi1", storage, 2 * disk_gib))
        ha_state = None
        if not is_template[i] and ha_draw[i] < 0.6:
            ha_state = "started" if running[i] else "stopped"
            if not running[i] and rng.random() < 0.2:
                ha_state = "disabled"
        ct_without_cores = kind == "lxc" and rng.random() < 0.1
        guests.append(
            SimGuest(
                vmid=vmid,
                kind=kind,
                name=f"{role}-{vmid}" if not is_template[i] else f"tpl-{role}-{vmid}",
                node="",
                running=bool(running[i]),
                template=bool(is_template[i]),
                cores=None if ct_without_cores else int(cores[i]),
                sockets=2 if kind == "qemu" and cores[i] >= 8 and rng.random() < 0.3 else 1,
                vcpus=None,
                cpulimit=round(float(cores[i]) * 0.5, 1) if rng.random() < 0.05 else None,
                memory_mib=int(mem_mib[i]),
                tags=tags,
                pool=env if tags and rng.random() < 0.8 else None,
                disks=tuple(disks),
                ostype=str(rng.choice(CT_OSTYPES if kind == "lxc" else VM_OSTYPES)),
                mac=_mac(rng),
                has_snapshot=bool(rng.random() < 0.05) or i == 1,
                ha_state=ha_state,
                auto_rebalance=not (ha_state is not None and rng.random() < 0.05),
            )
        )
        guest = guests[-1]
        if kind == "qemu" and guest.sockets == 2 and rng.random() < 0.5:
            guest.vcpus = max(1, guest.sockets * int(cores[i]) - 2)
    return guests


def _pick_disjoint(rng: np.random.Generator, pool: list[int], size: int) -> list[int]:
    picked = [pool.pop() for _ in range(min(size, len(pool)))]
    return sorted(picked)


def _make_rules(
    rng: np.random.Generator, nodes: list[SimNode], guests: list[SimGuest]
) -> list[SimRule]:
    candidates = [i for i, g in enumerate(guests) if g.ha_state == "started"]
    rng.shuffle(candidates)
    node_pool = list(candidates)
    affinity_pool = node_pool[len(node_pool) // 2 :]
    node_pool = node_pool[: len(node_pool) // 2]
    per_kind = max(1, len(guests) // 250)
    names = [n.name for n in nodes]
    rules: list[SimRule] = []

    def sids(members: list[int]) -> tuple[str, ...]:
        return tuple(guests[i].sid for i in members)

    for k in range(per_kind):
        for strict in (True, False):
            members = _pick_disjoint(rng, node_pool, int(rng.integers(2, 5)))
            if len(members) < 1:
                break
            chosen = rng.choice(
                len(names), size=min(len(names), int(rng.integers(2, 4))), replace=False
            )
            prios = [(names[j], 2 if pos == 0 else 1) for pos, j in enumerate(chosen)]
            for member in members:
                if strict:
                    guests[member].tags = tuple(sorted({*guests[member].tags, "pinned"}))
            rules.append(
                SimRule(
                    id=f"{'pin' if strict else 'prefer'}-{k + 1}",
                    type="node-affinity",
                    resources=sids(members),
                    nodes=tuple(prios),
                    strict=strict,
                    comment="keep on fast nodes" if strict else None,
                )
            )
    for k in range(per_kind):
        together = _pick_disjoint(rng, affinity_pool, int(rng.integers(2, 4)))
        if len(together) >= 2:
            rules.append(
                SimRule(
                    f"together-{k + 1}", "resource-affinity", sids(together), affinity="positive"
                )
            )
        apart_size = min(len(nodes), int(rng.integers(2, 4)))
        apart = _pick_disjoint(rng, affinity_pool, apart_size)
        if len(apart) >= 2:
            rules.append(
                SimRule(f"apart-{k + 1}", "resource-affinity", sids(apart), affinity="negative")
            )
    if len(rules) >= 6:
        last = rules[-1]
        rules[-1] = SimRule(
            last.id, last.type, last.resources, last.nodes, last.strict, last.affinity, True,
            "disabled for maintenance",
        )  # fmt: skip
    return rules


def _place(
    rng: np.random.Generator, nodes: list[SimNode], guests: list[SimGuest], rules: list[SimRule]
) -> None:
    """Skewed placement honouring strict node-affinity and resource-affinity rules."""
    names = [n.name for n in nodes]
    memtotal = np.array([n.memtotal for n in nodes], dtype=float)
    skew = np.exp(rng.normal(0.0, 0.45, len(nodes)))
    skew[0] *= 1.8
    weight = memtotal * skew
    committed = np.zeros(len(nodes))
    by_sid = {g.sid: g for g in guests}

    def choose(allowed: np.ndarray) -> int:
        fits = allowed & (committed < np.minimum(1.6 * skew / skew.mean(), 1.3) * memtotal)
        mask = fits if fits.any() else allowed
        p = np.where(mask, weight, 0.0)
        return int(rng.choice(len(nodes), p=p / p.sum()))

    def put(guest: SimGuest, index: int) -> None:
        guest.node = names[index]
        committed[index] += guest.maxmem

    everywhere = np.ones(len(nodes), dtype=bool)
    for rule in rules:
        members = [by_sid[s] for s in rule.resources]
        if rule.type == "node-affinity" and rule.strict:
            allowed = np.isin(names, [n for n, _ in rule.nodes])
            for guest in members:
                put(guest, choose(allowed))
        elif rule.affinity == "positive":
            index = choose(everywhere)
            for guest in members:
                put(guest, index)
        elif rule.affinity == "negative":
            free = everywhere.copy()
            for guest in members:
                index = choose(free)
                free[index] = False
                put(guest, index)
    for guest in guests:
        if not guest.node:
            put(guest, choose(everywhere))


def _rules_to_groups(
    rules: list[SimRule], guests: list[SimGuest]
) -> tuple[list[SimRule], list[SimGroup]]:
    """Express node-affinity rules as pre-9 HA groups referenced from resources.cfg."""
    by_sid = {g.sid: g for g in guests}
    kept: list[SimRule] = []
    groups: list[SimGroup] = []
    for rule in rules:
        if rule.type != "node-affinity":
            kept.append(rule)
            continue
        group_id = f"grp-{rule.id}"
        groups.append(SimGroup(group_id, rule.nodes, rule.strict))
        for sid in rule.resources:
            by_sid[sid].group = group_id
    return kept, groups
