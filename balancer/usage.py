"""Node and guest usage as the PVE CRS counts them, per scheduling mode.

Mirrors PVE::HA::Usage::{Basic,Static,Dynamic} (pve-ha-manager) and the
NodeStats helpers of proxmox-resource-scheduling:

- basic: a node's usage is the number of guests running on it (no rebalancing in this mode);
- static: usage starts at 0 and every running guest, HA-managed or not, adds its configured
  size: maxcpu (the node's maxcpu when the guest has no limit, ``add_started_resource``) and
  maxmem; a guest with a move in flight (``ClusterArrays.guest_target`` >= 0, not a settled
  'started' service, running or about to start) also adds that size to its target node.
  Checked against pve-ha-manager ``PVE::HA::Usage`` (``add_service_usage`` and
  ``get_used_service_nodes``): services in state ``migrate`` or ``relocate`` are counted on
  their current node and on their ``target`` (when online), ``request_start_balance`` on its
  target only; ``Usage::Static`` caches one size per service (``service-stats``, read on the
  source node), so the target gets the same size as the source;
- dynamic: usage is the node's measured cpu/mem as-is (host, HA and non-HA guests);
  a guest's measured usage is only used to simulate moving it.

``guest_usage`` is what moving a guest transfers in that mode.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from balancer.cluster import F64, ClusterArrays

Mode = Literal["basic", "static", "dynamic"]


def guest_static_size(c: ClusterArrays, node_of_guest: np.ndarray | None = None) -> tuple[F64, F64]:
    """Configured cores and bytes of every guest; an unlimited guest counts its node's cores."""
    nodes = c.guest_node if node_of_guest is None else node_of_guest
    node_cores = np.where(nodes >= 0, c.node_maxcpu[np.maximum(nodes, 0)], 0.0)
    cpu = np.where(c.guest_maxcpu > 0, c.guest_maxcpu, node_cores)
    return cpu.astype(np.float64), c.guest_maxmem.astype(np.float64, copy=True)


def guest_usage(c: ClusterArrays, mode: Mode) -> tuple[F64, F64]:
    """Cores and bytes each guest takes with it when it moves, as the mode counts them."""
    if mode == "dynamic":
        return c.guest_cpu.astype(np.float64, copy=True), c.guest_mem.astype(np.float64, copy=True)
    if mode == "static":
        return guest_static_size(c)
    ones = np.ones(c.n_guests, dtype=np.float64)
    return ones, ones.copy()


def node_usage(c: ClusterArrays, mode: Mode) -> tuple[F64, F64]:
    """Per-node cores and bytes in use as the mode counts them (basic: running guest counts)."""
    if mode == "dynamic":
        return c.node_cpu.astype(np.float64, copy=True), c.node_mem.astype(np.float64, copy=True)
    placed = c.guest_running & (c.guest_node >= 0)
    nodes = c.guest_node[placed]
    if mode == "static":
        cpu, mem = guest_static_size(c)
        # A move in flight also loads its target (PVE: migrate/relocate count on both nodes).
        # A settled 'started' service with a leftover target is not moving (guest_ha_started
        # is False exactly for HA services in migrate/relocate or not started at all).
        moving = (
            (c.guest_target >= 0)
            & (c.guest_target != c.guest_node)
            & ~c.guest_ha_started
            & (c.guest_running | c.guest_starting)
        )
        nodes = np.concatenate([nodes, c.guest_target[moving]])
        cpu = np.concatenate([cpu[placed], cpu[moving]])
        mem = np.concatenate([mem[placed], mem[moving]])
        return (
            np.bincount(nodes, weights=cpu, minlength=c.n_nodes).astype(np.float64),
            np.bincount(nodes, weights=mem, minlength=c.n_nodes).astype(np.float64),
        )
    counts = np.bincount(nodes, minlength=c.n_nodes).astype(np.float64)
    return counts, counts.copy()
