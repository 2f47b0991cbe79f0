"""What a migration costs: bytes copied, seconds taken, and whether the gain is worth it.

A live migration copies the guest's memory in use (its configured memory when usage is
unknown); a guest with a disk on node-local storage also copies that disk (maxdisk). The
duration is bytes / link bandwidth + a fixed overhead, with the bandwidth cluster-wide or per
node pair. The cost-benefit rule asks for a minimum imbalance gain per GiB moved.
"""

from __future__ import annotations

import numpy as np

from balancer.cluster import F64, I64, Bool
from model import Snapshot

GIB = float(1 << 30)


def guest_bytes_to_copy(snapshot: Snapshot) -> F64:
    """Bytes a migration of each guest copies, in snapshot guest order."""
    out = np.empty(len(snapshot.guests), dtype=np.float64)
    for i, guest in enumerate(snapshot.guests):
        memory = guest.mem if guest.mem is not None and guest.mem > 0 else guest.maxmem
        disk = (guest.maxdisk or 0.0) if guest.local_disk else 0.0
        out[i] = max(memory, 0.0) + max(disk, 0.0)
    return out


def bandwidth_matrix(
    node_names: list[str], default_gib_s: float, pair_gib_s: dict[str, float]
) -> tuple[F64, list[str]]:
    """Bytes/s between every node pair, and the pair keys that name unknown nodes."""
    n = len(node_names)
    matrix = np.full((n, n), default_gib_s * GIB, dtype=np.float64)
    index = {name: i for i, name in enumerate(node_names)}
    unknown: list[str] = []
    for key, gib_s in pair_gib_s.items():
        left, _, right = key.partition(":")
        if left not in index or right not in index:
            unknown.append(key)
            continue
        matrix[index[left], index[right]] = gib_s * GIB
        matrix[index[right], index[left]] = gib_s * GIB
    return matrix, unknown


def move_seconds(bytes_moved: F64, bandwidth: F64, overhead_s: float) -> F64:
    """Estimated duration of each move (element-wise; broadcasts)."""
    return np.asarray(bytes_moved / bandwidth + overhead_s, dtype=np.float64)


def worth_it(gain: F64, bytes_moved: F64, min_gain_per_gib: float) -> Bool:
    """The cost-benefit rule: imbalance gain (0..1 scale) per GiB must reach the minimum.

    ``min_gain_per_gib`` is in percentage points of imbalance per GiB; a move copying
    nothing only needs a positive gain.
    """
    gib = bytes_moved / GIB
    return np.asarray((gain > 0.0) & (gain * 100.0 >= min_gain_per_gib * gib), dtype=np.bool_)


def pair_bandwidth(bandwidth: F64, source: I64, target: I64) -> F64:
    """Bandwidth of each (source, target) pair."""
    return np.asarray(bandwidth[source, target], dtype=np.float64)
