"""A snapshot as a few flat numpy arrays: the shape every balancer hot path works on.

Nodes and guests become index positions; everything a decision needs (capacity, usage,
placement, HA flags) is a column. Built once per round from a :class:`model.Snapshot`;
nothing downstream touches the per-guest dataclasses again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model import Snapshot

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

RUNNING_STATES = frozenset({"running"})


@dataclass(slots=True)
class ClusterArrays:
    node_names: list[str]
    node_maxcpu: F64
    """Cores."""
    node_maxmem: F64
    """Bytes."""
    node_cpu: F64
    """Measured cores in use (host and every guest), as the snapshot's usage view says."""
    node_mem: F64
    """Measured bytes in use."""
    node_usable: Bool
    """Online and not in maintenance: may be a migration or start target."""

    guest_sids: list[str]
    guest_vmid: I64
    guest_is_ct: Bool
    guest_node: I64
    """Index into the node arrays; -1 when the guest's node is not in the snapshot."""
    guest_cpu: F64
    """Measured cores in use; 0 where unknown."""
    guest_mem: F64
    """Measured bytes in use; 0 where unknown."""
    guest_maxcpu: F64
    """Configured cores; 0 means no limit (the node's maxcpu counts in static mode)."""
    guest_maxmem: F64
    guest_running: Bool
    guest_ha: Bool
    """Managed by the HA stack (has an entry in resources.cfg)."""
    guest_ha_started: Bool
    """HA state 'started' and the HA service state is not a move in flight."""
    guest_auto_rebalance: Bool
    """The resources.cfg 'auto-rebalance' flag (True for non-HA guests)."""
    guest_starting: Bool
    """About to start (HA service state request_start / request_start_balance)."""
    guest_target: I64
    """Index of the node a move in flight is taking the guest to (HA ``target``); -1: none."""

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_guests(self) -> int:
        return len(self.guest_sids)

    def node_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.node_names)}

    def sid_index(self) -> dict[str, int]:
        return {sid: i for i, sid in enumerate(self.guest_sids)}


MOVING_SERVICE_STATES = frozenset({"migrate", "relocate"})
STARTING_SERVICE_STATES = frozenset({"request_start", "request_start_balance"})


def from_snapshot(snapshot: Snapshot) -> ClusterArrays:
    """Flatten a snapshot; node order and guest order are the snapshot's own."""
    nodes = snapshot.nodes
    guests = snapshot.guests
    index = {n.name: i for i, n in enumerate(nodes)}

    def col(values: list[float | None]) -> F64:
        return np.array([0.0 if v is None else v for v in values], dtype=np.float64)

    def flags(values: list[bool]) -> Bool:
        return np.array(values, dtype=np.bool_).reshape(len(values))

    service = [g.ha.service_state if g.ha else None for g in guests]
    return ClusterArrays(
        node_names=[n.name for n in nodes],
        node_maxcpu=col([n.maxcpu for n in nodes]),
        node_maxmem=col([n.maxmem for n in nodes]),
        node_cpu=col([n.cpu for n in nodes]),
        node_mem=col([n.mem for n in nodes]),
        node_usable=flags([n.online and not n.maintenance for n in nodes]),
        guest_sids=[g.sid for g in guests],
        guest_vmid=np.array([g.vmid for g in guests], dtype=np.int64).reshape(len(guests)),
        guest_is_ct=flags([g.type == "lxc" for g in guests]),
        guest_node=np.array([index.get(g.node, -1) for g in guests], dtype=np.int64).reshape(
            len(guests)
        ),
        guest_cpu=col([g.cpu for g in guests]),
        guest_mem=col([g.mem for g in guests]),
        guest_maxcpu=col([g.maxcpu for g in guests]),
        guest_maxmem=col([g.maxmem for g in guests]),
        guest_running=flags([g.status in RUNNING_STATES for g in guests]),
        guest_ha=flags([g.ha is not None for g in guests]),
        guest_ha_started=flags(
            [
                g.ha is not None and g.ha.state == "started" and s not in MOVING_SERVICE_STATES
                for g, s in zip(guests, service, strict=True)
            ]
        ),
        guest_auto_rebalance=flags([g.ha is None or g.ha.auto_rebalance for g in guests]),
        guest_starting=flags([s in STARTING_SERVICE_STATES for s in service]),
        guest_target=np.array(
            [index.get(g.ha.target, -1) if g.ha and g.ha.target else -1 for g in guests],
            dtype=np.int64,
        ).reshape(len(guests)),
    )
