"""Resource pools from ``/etc/pve/user.cfg``.

user.cfg holds users, groups, roles, ACLs and pools, one colon-separated record per line;
only ``pool:<name>:<comment>:<vmid,...>:<storage,...>:`` lines are read here, everything
else is ignored. A guest belongs to at most one pool in PVE; a second claim is a finding.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.pvecfg.values import at, decode_text, finding
from model.snapshot import Finding


@dataclass(frozen=True, slots=True)
class PoolConfig:
    name: str
    comment: str
    vmids: tuple[int, ...]
    storages: tuple[str, ...]
    line: int


def parse_pools(text: str, source: str = "user.cfg") -> tuple[dict[str, PoolConfig], list[Finding]]:
    """Parse the pool lines of user.cfg into pool name -> PoolConfig.

    Bad vmids are dropped from their pool and a vmid already claimed by an earlier pool is
    dropped from the later one, each with a finding; the rest of the pool is kept.
    """
    pools: dict[str, PoolConfig] = {}
    findings: list[Finding] = []
    owner: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("pool:"):
            continue
        where = at(source, number)
        fields = line.split(":")
        name = fields[1].strip() if len(fields) > 1 else ""
        if not name:
            findings.append(finding("config-syntax", where, "pool line without a name, ignored"))
            continue
        if name in pools:
            findings.append(
                finding("config-syntax", where, f"pool '{name}' defined twice, second ignored")
            )
            continue
        fields += [""] * (5 - len(fields))
        vmids: list[int] = []
        for item in (part.strip() for part in fields[3].split(",")):
            if not item:
                continue
            if not item.isdecimal():  # isdigit() would accept "²", which int() rejects
                findings.append(
                    finding("config-bad-value", where, f"pool '{name}': bad vmid {item!r} ignored")
                )
                continue
            vmid = int(item)
            if vmid in owner:
                findings.append(
                    finding(
                        "config-bad-value",
                        where,
                        f"pool '{name}': vmid {vmid} already in pool '{owner[vmid]}', ignored",
                    )
                )
                continue
            owner[vmid] = name
            vmids.append(vmid)
        storages = tuple(part.strip() for part in fields[4].split(",") if part.strip())
        pools[name] = PoolConfig(name, decode_text(fields[2]), tuple(vmids), storages, number)
    return pools, findings


def pool_of_guest(pools: dict[str, PoolConfig]) -> dict[int, str]:
    """vmid -> pool name."""
    return {vmid: pool.name for pool in pools.values() for vmid in pool.vmids}
