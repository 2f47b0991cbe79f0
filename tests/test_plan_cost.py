"""Migration cost: bytes, seconds, per-pair bandwidth, the cost-benefit rule, cheaper wins."""

from __future__ import annotations

import math

import numpy as np

from balancer.cost import GIB, bandwidth_matrix, worth_it
from tests.test_plan_support import cluster, run, vm


def test_cost_counts_memory_and_local_disk_over_the_link() -> None:
    guests = [vm(100, "a", 0.0, 8.0, local_disk_gib=32.0), vm(101, "a", 0.0, 8.0)]
    snap = cluster(["a", "b"], guests)
    result, _ = run(
        snap, threshold=1.0, stop_threshold=0.0, max_moves=1, bandwidth_gib_s=2.0,
        migration_overhead_s=5.0,
    )  # fmt: skip
    move = result.moves[0]
    # both moves balance equally (8 / 8); the one without a local disk is cheaper
    assert move.sid == "vm:101"
    assert math.isclose(move.gib_moved, 8.0)
    assert math.isclose(move.cost_seconds, 8.0 / 2.0 + 5.0)
    costly = {m.sid: m for m in result.top_moves}["vm:100"]
    assert math.isclose(costly.gib_moved, 40.0)
    assert math.isclose(costly.cost_seconds, 40.0 / 2.0 + 5.0)


def test_pair_bandwidth_overrides_the_default_both_ways() -> None:
    matrix, unknown = bandwidth_matrix(["a", "b", "c"], 1.0, {"a:c": 4.0, "a:zz": 9.0})
    assert unknown == ["a:zz"]
    assert matrix[0, 2] == matrix[2, 0] == 4.0 * GIB
    assert matrix[0, 1] == 1.0 * GIB
    guests = [vm(100, "a", 0.0, 12.0), vm(101, "a", 0.0, 12.0)]
    snap = cluster(["a", "b", "c"], guests)
    result, _ = run(
        snap, threshold=1.0, max_moves=1, pair_bandwidth_gib_s={"c:a": 4.0},
        migration_overhead_s=0.0,
    )  # fmt: skip
    # b and c are equally good targets; the faster link to c makes it cheaper
    assert result.moves[0].target == "c"
    assert math.isclose(result.moves[0].cost_seconds, 3.0)


def test_cost_benefit_rule_needs_enough_gain_per_gib() -> None:
    gain = np.array([0.01, 0.01, 0.0])
    moved = np.array([1.0, 10.0, 0.0]) * GIB
    # 1 point per GiB: 1 point for 1 GiB passes, for 10 GiB does not; no gain never passes
    assert worth_it(gain, moved, 1.0).tolist() == [True, False, False]
    guests = [vm(100, "a", 0.0, 40.0), vm(101, "a", 0.0, 10.0)]
    snap = cluster(["a", "b"], guests)
    cheap, _ = run(snap, threshold=1.0, stop_threshold=0.0, min_gain_per_gib=0.0)
    assert cheap.moves
    # moving 10 GiB lowers the imbalance by 0.4 (1.0 -> 0.6): 4 points per GiB
    strict, _ = run(snap, threshold=1.0, stop_threshold=0.0, min_gain_per_gib=5.0)
    assert strict.moves == []
    lenient, _ = run(snap, threshold=1.0, stop_threshold=0.0, min_gain_per_gib=3.0)
    assert [m.sid for m in lenient.moves] == ["vm:101"]
