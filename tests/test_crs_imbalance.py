"""Node usage, load and imbalance against numbers worked out by hand from the CRS formulas."""

import math

import numpy as np
import pytest

from balancer.cluster import from_snapshot
from balancer.imbalance import (
    imbalance,
    imbalance_after_moves,
    imbalance_after_moves_exact,
    imbalance_cv,
    node_load,
    resource_spread,
    truncate,
)
from balancer.usage import guest_usage, node_usage
from bench.synthetic import GIB, make_guest, make_node
from model import Snapshot


def three_nodes() -> Snapshot:
    nodes = [
        make_node("n1", 4, 8 * GIB, cpu=2, mem=4 * GIB),
        make_node("n2", 8, 16 * GIB, cpu=2, mem=4 * GIB),
        make_node("n3", 4, 8 * GIB, cpu=0, mem=0),
    ]
    guests = [
        make_guest(101, "n1", cpu=1.0, mem=2 * GIB, maxcpu=2, maxmem=4 * GIB),
        make_guest(102, "n1", cpu=0.5, mem=1 * GIB, maxcpu=0, maxmem=2 * GIB),
        make_guest(201, "n2", cpu=1.0, mem=2 * GIB, maxcpu=4, maxmem=8 * GIB, ha_state=None),
        make_guest(301, "n3", cpu=0, mem=0, maxcpu=2, maxmem=2 * GIB, running=False),
    ]
    return Snapshot(timestamp=0, nodes=nodes, guests=guests)


def test_load_and_imbalance_by_hand():
    c = from_snapshot(three_nodes())
    loads = node_load(c.node_cpu, c.node_mem, c.node_maxcpu, c.node_maxmem)
    # n1: (2/4 + 4/8)/2 = 0.5; n2: (2/8 + 4/16)/2 = 0.25; n3: 0
    assert loads.tolist() == [0.5, 0.25, 0.0]
    mean = 0.75 / 3
    std = math.sqrt(((0.5 - mean) ** 2 + (0.25 - mean) ** 2 + (0.0 - mean) ** 2) / 3)
    assert imbalance_cv(loads) == pytest.approx(std / mean, rel=1e-15)
    assert imbalance(loads) == pytest.approx(std / mean / math.sqrt(2), rel=1e-15)
    # var = (0.0625 + 0 + 0.0625) / 3, std = sqrt(1/24), cv = std / 0.25 = sqrt(2/3)
    assert imbalance(loads) == pytest.approx(math.sqrt(1 / 3), rel=1e-12)


def test_imbalance_edge_cases():
    assert imbalance(np.array([0.7])) == 0.0
    assert imbalance(np.zeros(4)) == 0.0
    assert imbalance(np.array([0.3, 0.3, 0.3])) == 0.0
    # all load on one of n nodes is the upper bound 1
    assert imbalance(np.array([0.8, 0.0, 0.0, 0.0])) == pytest.approx(1.0, rel=1e-15)
    zero_capacity = node_load(np.array([1.0]), np.array([1.0]), np.array([0.0]), np.array([2.0]))
    assert zero_capacity.tolist() == [0.25]


def test_usage_modes():
    c = from_snapshot(three_nodes())
    cpu, mem = node_usage(c, "dynamic")
    assert cpu.tolist() == [2, 2, 0]
    # static: running guests, HA or not, at configured size; vm:102 has no cpu limit -> 4 cores
    cpu, mem = node_usage(c, "static")
    assert cpu.tolist() == [2 + 4, 4, 0]
    assert mem.tolist() == [6 * GIB, 8 * GIB, 0]
    cpu, mem = node_usage(c, "basic")
    assert cpu.tolist() == [2, 1, 0]
    gcpu, gmem = guest_usage(c, "static")
    assert gcpu.tolist() == [2, 4, 4, 2]
    assert gmem.tolist() == [4 * GIB, 2 * GIB, 8 * GIB, 2 * GIB]
    gcpu, gmem = guest_usage(c, "dynamic")
    assert gcpu.tolist() == [1.0, 0.5, 1.0, 0.0]
    assert gmem.tolist() == [2 * GIB, 1 * GIB, 2 * GIB, 0.0]


def test_resource_spread():
    c = from_snapshot(three_nodes())
    cpu_spread, mem_spread = resource_spread(c.node_cpu, c.node_mem, c.node_maxcpu, c.node_maxmem)
    cpu_loads = [0.5, 0.25, 0.0]
    mean = sum(cpu_loads) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in cpu_loads) / 3)
    assert cpu_spread == pytest.approx(std / mean / math.sqrt(2))
    assert mem_spread == pytest.approx(std / mean / math.sqrt(2))


def test_move_simulation_by_hand_with_floor():
    c = from_snapshot(three_nodes())
    # move 3 cores / 6 GiB from n1 (has 2 / 4 GiB) to n3: the source floors at 0
    after = imbalance_after_moves(
        c.node_cpu,
        c.node_mem,
        c.node_maxcpu,
        c.node_maxmem,
        np.array([0]),
        np.array([2]),
        np.array([3.0]),
        np.array([6 * GIB]),
    )
    loads = [0.0, 0.25, (3 / 4 + 6 / 8) / 2]
    mean = sum(loads) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in loads) / 3)
    assert after[0] == pytest.approx(std / mean / math.sqrt(2), rel=1e-12)
    exact = imbalance_after_moves_exact(
        c.node_cpu,
        c.node_mem,
        c.node_maxcpu,
        c.node_maxmem,
        np.array([0]),
        np.array([2]),
        np.array([3.0]),
        np.array([6 * GIB]),
    )
    assert exact[0] == pytest.approx(after[0], rel=1e-13)


def test_truncation_to_15_digits():
    values = np.array([0.7231749488916931, 0.723174948891693])
    assert truncate(values).tolist() == [0.723174948891693, 0.723174948891693]
    assert truncate(np.array([0.1234567890123456789]))[0] == 0.123456789012345


def test_static_usage_counts_moves_in_flight_on_both_nodes():
    snap = three_nodes()
    moving = snap.guests[0]  # vm:101 on n1, 2 cores / 4 GiB
    assert moving.ha is not None
    moving.ha.service_state = "migrate"
    moving.ha.target = "n3"
    c = from_snapshot(snap)
    cpu, mem = node_usage(c, "static")
    # PVE::HA::Usage::get_used_service_nodes: migrate/relocate load source and target
    assert cpu.tolist() == [2 + 4, 4, 2]
    assert mem.tolist() == [6 * GIB, 8 * GIB, 4 * GIB]
    # a settled service with a leftover target is counted once
    moving.ha.service_state = "started"
    cpu, _ = node_usage(from_snapshot(snap), "static")
    assert cpu.tolist() == [2 + 4, 4, 0]
