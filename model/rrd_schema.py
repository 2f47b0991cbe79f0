"""The RRD layouts pmxcfs writes (pve-facts.md section 1), shared by reader and simulator.

The collector reads these files and the simulator writes them; both take the data-source
lists and archives from here so that the two can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["node", "guest", "storage"]

STEP = 60
HEARTBEAT = 120

NODE_DS_9 = (
    "loadavg", "maxcpu", "cpu", "iowait", "memtotal", "memused", "swaptotal", "swapused",
    "roottotal", "rootused", "netin", "netout", "memavailable", "arcsize",
    "pressurecpusome", "pressureiosome", "pressureiofull", "pressurememorysome",
    "pressurememoryfull",
)  # fmt: skip
GUEST_DS_9 = (
    "maxcpu", "cpu", "maxmem", "mem", "maxdisk", "disk", "netin", "netout", "diskread",
    "diskwrite", "memhost", "pressurecpusome", "pressurecpufull", "pressureiosome",
    "pressureiofull", "pressurememorysome", "pressurememoryfull",
)  # fmt: skip
STORAGE_DS = ("total", "used")
DERIVE_DS = frozenset({"netin", "netout", "diskread", "diskwrite"})

RRA_9 = ((1, 1440), (30, 1440), (360, 1440), (10080, 570))
RRA_OLD = ((1, 70), (30, 70), (180, 70), (720, 70), (10080, 70))
CONSOLIDATIONS = ("AVERAGE", "MAX")


@dataclass(frozen=True, slots=True)
class RrdLayout:
    """One generation of one kind of file: its directory under the RRD root and its DS."""

    kind: Kind
    directory: str
    ds: tuple[str, ...]
    rras: tuple[tuple[int, int], ...]
    generation: Literal["9.0", "pve2"]

    def create_args(self) -> list[str]:
        """DS and RRA definitions for ``rrdtool create`` (after the file and --step)."""
        args = [
            f"DS:{name}:{'DERIVE' if name in DERIVE_DS else 'GAUGE'}:{HEARTBEAT}:0:U"
            for name in self.ds
        ]
        for cf in CONSOLIDATIONS:
            args += [f"RRA:{cf}:0.5:{steps}:{rows}" for steps, rows in self.rras]
        return args


NODE_9 = RrdLayout("node", "pve-node-9.0", NODE_DS_9, RRA_9, "9.0")
GUEST_9 = RrdLayout("guest", "pve-vm-9.0", GUEST_DS_9, RRA_9, "9.0")
STORAGE_9 = RrdLayout("storage", "pve-storage-9.0", STORAGE_DS, RRA_9, "9.0")
NODE_OLD = RrdLayout("node", "pve2-node", NODE_DS_9[:12], RRA_OLD, "pve2")
GUEST_OLD = RrdLayout("guest", "pve2-vm", GUEST_DS_9[:10], RRA_OLD, "pve2")
STORAGE_OLD = RrdLayout("storage", "pve2-storage", STORAGE_DS, RRA_OLD, "pve2")

LAYOUTS: dict[Kind, tuple[RrdLayout, RrdLayout]] = {
    "node": (NODE_9, NODE_OLD),
    "guest": (GUEST_9, GUEST_OLD),
    "storage": (STORAGE_9, STORAGE_OLD),
}
"""Per kind: (current layout, pre-9 layout). Readers prefer the first and join the second."""

DUMP_KEY_PREFIXES: dict[str, tuple[Kind, str]] = {
    "pve-node-9.0": ("node", "9.0"),
    "pve-vm-9.0": ("guest", "9.0"),
    "pve-storage-9.0": ("storage", "9.0"),
    "pve2-node": ("node", "pve2"),
    "pve2.3-vm": ("guest", "pve2"),
    "pve2-storage": ("storage", "pve2"),
}
"""Status-dump key prefixes (pve-facts.md section 2) and what they describe."""
