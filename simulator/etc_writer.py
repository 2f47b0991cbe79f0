"""Write the /etc/pve tree of a simulated cluster (pve-facts.md section 3).

Guest configs are ``key: value`` lines (keys sorted, as qemu-server and pve-container write
them) with an optional snapshot section; HA, storage and datacenter files use the section
config syntax: ``type: id`` header, TAB-indented ``key value`` lines, a blank line between
sections. Contents depend only on the cluster spec, so equal seeds give equal bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from simulator.model import (
    DIR_STORAGE,
    LOCAL_STORAGE,
    SHARED_STORAGE,
    ClusterSpec,
    SimGuest,
    SimNode,
)


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


def _uuid(*parts: object) -> str:
    h = _digest(*parts)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def section(kind: str, ident: str, entries: Iterable[tuple[str, object]]) -> str:
    """One section-config block: header, then TAB-indented key/value lines."""
    body = "".join(f"\t{key} {value}\n" for key, value in entries)
    return f"{kind}: {ident}\n{body}"


def sections(blocks: Sequence[str]) -> str:
    return "\n".join(blocks)


def config_dir(guest: SimGuest) -> str:
    return "qemu-server" if guest.kind == "qemu" else "lxc"


def guest_config_path(root: Path, guest: SimGuest, node: str) -> Path:
    return root / "nodes" / node / config_dir(guest) / f"{guest.vmid}.conf"


def _disk_value(guest: SimGuest, index: int) -> str:
    disk = guest.disks[index]
    volume = f"{disk.storage}:vm-{guest.vmid}-disk-{index}"
    if guest.template and guest.kind == "qemu":
        volume = f"{disk.storage}:base-{guest.vmid}-disk-{index}"
    if disk.key.startswith("mp"):
        return f"{volume},mp=/srv/data,size={disk.size_gib}G"
    extra = ",iothread=1" if guest.kind == "qemu" else ""
    return f"{volume}{extra},size={disk.size_gib}G"


def guest_config_lines(guest: SimGuest, seed: int) -> dict[str, str]:
    """The current-state keys of a guest config."""
    keys: dict[str, str] = {}
    if guest.cores is not None:
        keys["cores"] = str(guest.cores)
    keys["memory"] = str(guest.memory_mib)
    keys["ostype"] = guest.ostype
    if guest.cpulimit:
        keys["cpulimit"] = f"{guest.cpulimit:g}"
    if guest.tags:
        keys["tags"] = ";".join(guest.tags)
    for index, disk in enumerate(guest.disks):
        keys[disk.key] = _disk_value(guest, index)
    if guest.kind == "qemu":
        keys["name"] = guest.name
        keys["sockets"] = str(guest.sockets)
        if guest.vcpus:
            keys["vcpus"] = str(guest.vcpus)
        keys["boot"] = "order=scsi0;net0"
        keys["cpu"] = "x86-64-v2-AES"
        keys["net0"] = f"virtio={guest.mac},bridge=vmbr0,firewall=1"
        keys["numa"] = "0"
        keys["scsihw"] = "virtio-scsi-single"
        keys["smbios1"] = f"uuid={_uuid(seed, guest.vmid, 'smbios')}"
        keys["vmgenid"] = _uuid(seed, guest.vmid, "vmgenid")
        if guest.template:
            keys["template"] = "1"
    else:
        keys["hostname"] = guest.name
        keys["arch"] = "amd64"
        keys["net0"] = f"name=eth0,bridge=vmbr0,hwaddr={guest.mac},ip=dhcp,type=veth"
        keys["swap"] = "512"
        keys["unprivileged"] = "1"
    return keys


def render_guest_config(guest: SimGuest, seed: int) -> str:
    keys = guest_config_lines(guest, seed)
    if guest.has_snapshot:
        keys["parent"] = "before-upgrade"
    text = "".join(f"{key}: {keys[key]}\n" for key in sorted(keys))
    if guest.has_snapshot:
        old = dict(guest_config_lines(guest, seed))
        old["memory"] = str(max(512, guest.memory_mib // 2))
        if guest.cores is not None:
            old["cores"] = str(max(1, guest.cores // 2))
        old["snaptime"] = "1764547200"
        text += "\n[before-upgrade]\n" + "".join(f"{key}: {old[key]}\n" for key in sorted(old))
    return text


def render_vmlist(spec: ClusterSpec, version: int) -> str:
    ids = {
        str(g.vmid): {"node": g.node, "type": g.kind, "version": version}
        for g in sorted(spec.guests, key=lambda g: g.vmid)
    }
    return json.dumps({"version": version, "ids": ids}, indent=1) + "\n"


def render_members(spec: ClusterSpec, version: int, local_node: SimNode) -> str:
    data = {
        "nodename": local_node.name,
        "version": version,
        "cluster": {
            "name": spec.name,
            "version": 1,
            "nodes": len(spec.nodes),
            "quorate": 1,
        },
        "nodelist": {n.name: {"id": n.nodeid, "online": 1, "ip": n.ip} for n in spec.nodes},
    }
    return json.dumps(data, indent=1) + "\n"


def render_datacenter(spec: ClusterSpec) -> str:
    return f"crs: {spec.crs}\nkeyboard: en-us\nmigration: secure,network=10.10.0.0/16\n"


def render_storage_cfg() -> str:
    return sections(
        [
            section(
                "dir",
                DIR_STORAGE,
                [("path", "/var/lib/vz"), ("content", "iso,vztmpl,backup")],
            ),
            section(
                "lvmthin",
                LOCAL_STORAGE,
                [("thinpool", "data"), ("vgname", "pve"), ("content", "rootdir,images")],
            ),
            section(
                "rbd",
                SHARED_STORAGE,
                [("content", "images,rootdir"), ("krbd", "0"), ("pool", SHARED_STORAGE)],
            ),
        ]
    )


def render_resources(spec: ClusterSpec) -> str:
    blocks = []
    for guest in spec.guests:
        if guest.ha_state is None:
            continue
        entries: list[tuple[str, object]] = []
        if guest.group is not None:
            entries.append(("group", guest.group))
        entries.append(("state", guest.ha_state))
        entries += [("max_relocate", 1), ("max_restart", 1)]
        if not guest.auto_rebalance:
            entries.append(("auto-rebalance", 0))
            entries.append(("comment", "licence bound to host"))
        blocks.append(section(guest.sid.split(":")[0], str(guest.vmid), entries))
    return sections(blocks)


def render_rules(spec: ClusterSpec) -> str:
    blocks = []
    for rule in spec.rules:
        entries: list[tuple[str, object]] = [("resources", ",".join(rule.resources))]
        if rule.type == "node-affinity":
            entries.append(("nodes", ",".join(f"{n}:{p}" for n, p in rule.nodes)))
            entries.append(("strict", int(rule.strict)))
        else:
            entries.append(("affinity", rule.affinity))
        if rule.disable:
            entries.append(("disable", 1))
        if rule.comment:
            entries.append(("comment", rule.comment))
        blocks.append(section(rule.type, rule.id, entries))
    return sections(blocks)


def render_groups(spec: ClusterSpec) -> str:
    blocks = [
        section(
            "group",
            group.id,
            [
                ("nodes", ",".join(f"{n}:{p}" for n, p in group.nodes)),
                ("nofailback", 0),
                ("restricted", int(group.restricted)),
            ],
        )
        for group in spec.groups
    ]
    return sections(blocks)


def render_user_cfg(spec: ClusterSpec) -> str:
    lines = ["user:root@pam:1:0:::root@example.invalid:::", ""]
    for pool, vmids in spec.pools.items():
        members = ",".join(str(v) for v in sorted(vmids))
        lines.append(f"pool:{pool}:{pool} guests:{members}::")
    lines += ["", "acl:1:/:root@pam:Administrator:"]
    return "\n".join(lines) + "\n"


def render_manager_status(
    spec: ClusterSpec,
    node_status: Mapping[str, str],
    service_overrides: Mapping[str, dict[str, str]],
    now: int,
) -> str:
    """manager_status JSON; ``service_overrides`` replaces entries (e.g. in-flight moves)."""
    services: dict[str, dict[str, Any]] = {}
    for guest in spec.guests:
        if guest.ha_state is None or guest.ha_state == "ignored":
            continue
        state = "started" if guest.ha_state == "started" and guest.running else "stopped"
        entry: dict[str, Any] = {"node": guest.node, "state": state}
        entry.update(service_overrides.get(guest.sid, {}))
        entry["uid"] = _digest(spec.seed, guest.sid)[:22]
        services[guest.sid] = entry
    data = {
        "master_node": spec.nodes[0].name,
        "node_status": dict(node_status),
        "service_status": services,
        "timestamp": now,
    }
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_guest_config(root: Path, guest: SimGuest, seed: int) -> Path:
    path = guest_config_path(root, guest, guest.node)
    write_text(path, render_guest_config(guest, seed))
    return path


def write_etc_tree(root: Path, spec: ClusterSpec, vmlist_version: int) -> None:
    """Write every /etc/pve file except manager_status (which has its own evolving state)."""
    for node in spec.nodes:
        for sub in ("qemu-server", "lxc"):
            (root / "nodes" / node.name / sub).mkdir(parents=True, exist_ok=True)
    for guest in spec.guests:
        write_guest_config(root, guest, spec.seed)
    write_text(root / ".vmlist", render_vmlist(spec, vmlist_version))
    write_text(root / ".members", render_members(spec, len(spec.nodes), spec.nodes[0]))
    write_text(root / "datacenter.cfg", render_datacenter(spec))
    write_text(root / "storage.cfg", render_storage_cfg())
    write_text(root / "user.cfg", render_user_cfg(spec))
    write_text(root / "ha" / "resources.cfg", render_resources(spec))
    write_text(root / "ha" / "rules.cfg", render_rules(spec))
    if spec.groups:
        write_text(root / "ha" / "groups.cfg", render_groups(spec))
