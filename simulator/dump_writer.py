"""Render the live status dump ("rrd dump") text of pve-facts.md section 2.

One line per entry, ``<key>:<field>:...``, ``U`` for unknown. Guest lines carry the name,
status and template flag in front of the metrics, node lines uptime, subscription level and
ctime; old keys (pve2-node, pve2.3-vm, pve2-storage) stop after field 14 like pvestatd's
pre-9 broadcasts. The subscription level is left empty (a node without subscription);
a stopped guest has uptime 0 and ``U`` for cpu, mem, the counters, memhost and PSI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from simulator.rrd_writer import INTEGER_DS
from simulator.usage import FloatArray

NODE_FIELDS = (
    "loadavg", "maxcpu", "cpu", "iowait", "memtotal", "memused", "swaptotal", "swapused",
    "roottotal", "rootused", "netin", "netout", "memavailable", "arcsize", "pressurecpusome",
    "pressureiosome", "pressureiofull", "pressurememorysome", "pressurememoryfull",
)  # fmt: skip
"""Node metric fields in dump order (dump fields 3..21)."""
GUEST_FIELDS = (
    "maxcpu", "cpu", "maxmem", "mem", "maxdisk", "disk", "netin", "netout", "diskread",
    "diskwrite", "memhost", "pressurecpusome", "pressurecpufull", "pressureiosome",
    "pressureiofull", "pressurememorysome", "pressurememoryfull",
)  # fmt: skip
"""Guest metric fields in dump order (dump fields 5..21)."""
OLD_FIELD_COUNT = 15


def format_value(value: float, integer: bool) -> str:
    """A metric as pvestatd prints it: ``U`` when unknown, integers without a fraction."""
    if math.isnan(value):
        return "U"
    if integer:
        return str(int(value))
    return repr(round(float(value), 6))


@dataclass(frozen=True, slots=True)
class GuestStatus:
    vmid: int
    name: str
    status: str
    template: bool
    uptime: int


def _metrics(values: Mapping[str, FloatArray], names: Sequence[str], row: int) -> list[str]:
    return [format_value(float(values[name][row]), name in INTEGER_DS) for name in names]


def render_dump(
    now: int,
    nodes: Sequence[tuple[str, int]],
    node_values: Mapping[str, FloatArray],
    guests: Sequence[GuestStatus],
    guest_values: Mapping[str, FloatArray],
    storages: Sequence[tuple[str, str, float, float]],
    *,
    legacy_keys: bool = False,
) -> str:
    """The dump text; ``nodes`` are (name, uptime), ``storages`` (node, storage, total, used)."""
    lines: list[str] = []
    for row, (name, uptime) in enumerate(nodes):
        fields = [str(uptime), "", str(now), *_metrics(node_values, NODE_FIELDS, row)]
        lines.append(f"pve-node-9.0/{name}:" + ":".join(fields))
        if legacy_keys:
            lines.append(f"pve2-node/{name}:" + ":".join(fields[:OLD_FIELD_COUNT]))
    for row, guest in enumerate(guests):
        head = [str(guest.uptime), guest.name, guest.status, str(int(guest.template)), str(now)]
        fields = head + _metrics(guest_values, GUEST_FIELDS, row)
        lines.append(f"pve-vm-9.0/{guest.vmid}:" + ":".join(fields))
        if legacy_keys:
            lines.append(f"pve2.3-vm/{guest.vmid}:" + ":".join(fields[:OLD_FIELD_COUNT]))
    for node, storage, total, used in storages:
        fields = [str(now), format_value(total, True), format_value(used, True)]
        lines.append(f"pve-storage-9.0/{node}/{storage}:" + ":".join(fields))
        if legacy_keys:
            lines.append(f"pve2-storage/{node}/{storage}:" + ":".join(fields))
    return "\n".join(lines) + "\n"
