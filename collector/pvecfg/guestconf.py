"""Guest configs ``nodes/<node>/qemu-server/<vmid>.conf`` and ``nodes/<node>/lxc/<vmid>.conf``.

Only the main section describes the running guest: the first ``[snapshot]``,
``[PENDING]`` or ``[special:cloudinit]`` header ends it. From it we derive the guest's
static size the way the CRS does (vCPUs capped by ``cpulimit``, memory in bytes), its
identity (name, tags, template, lock) and its disks: total configured bytes and the
storages they live on, so the caller can tell whether migrating it copies local disks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from collector.pvecfg.members import GuestType
from collector.pvecfg.values import (
    MIB,
    at,
    decode_text,
    finding,
    parse_bool,
    parse_int,
    parse_number,
    parse_size,
    split_property_string,
)
from model.snapshot import Finding

DEFAULT_MEMORY_MIB = 512

_SECTION_HEADER = re.compile(r"^\[([^\]]+)\]\s*$")
_KEY_VALUE = re.compile(r"^([a-z][a-z0-9_\-]*):\s*(.*?)\s*$")
_LXC_RAW = re.compile(r"^lxc\.[a-z0-9_\-.]+\s*[:=]")
_QEMU_DISK = re.compile(r"^(?:(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0|unused\d+)$")
_LXC_DISK = re.compile(r"^(?:rootfs|mp\d+|unused\d+)$")
_VOLUME_ID = re.compile(r"^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$", re.IGNORECASE)
_TAG_SEPARATORS = re.compile(r"[;, ]+")
_PASSTHROUGH = re.compile(r"^(?:hostpci|usb)\d+$")


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """What a guest's config says about it: static size, identity, disks."""

    vmid: int
    type: GuestType
    node: str
    """The node directory the config was found in."""
    name: str
    maxcpu: float | None
    """vCPUs capped by cpulimit; None for a CT without ``cores`` (all host cores, see
    ``maxcpu_on``)."""
    maxmem: int
    """Configured memory in bytes."""
    cpulimit: float = 0.0
    """0 means unlimited."""
    tags: tuple[str, ...] = ()
    template: bool = False
    disk_bytes: int = 0
    """Sum of the ``size=`` of every disk, mount point and unused volume (CD-ROMs excluded)."""
    storages: frozenset[str] = frozenset()
    """Every storage id a volume (disk, CD-ROM image, unused volume) of the guest lives on."""
    host_volumes: tuple[str, ...] = ()
    """Volumes given as host paths (VM pass-through disks, CT bind mounts): node-bound."""
    local_devices: tuple[str, ...] = ()
    """Keys of host PCI/USB pass-through devices not using a cluster mapping: node-bound."""
    lock: str | None = None
    description: str = ""
    pool: str | None = None
    source: str = ""
    values: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Every ``key: value`` of the main section, as written."""

    @property
    def sid(self) -> str:
        """The HA id: ``vm:<vmid>`` or ``ct:<vmid>``."""
        return f"{'vm' if self.type == 'qemu' else 'ct'}:{self.vmid}"

    def maxcpu_on(self, host_cpus: float) -> float:
        """Configured cores on a node with ``host_cpus`` cores (fills a CT's missing ``cores``)."""
        cores = host_cpus if self.maxcpu is None else self.maxcpu
        return min(cores, self.cpulimit) if self.cpulimit > 0 else cores


def parse_guest_config(
    text: str, vmid: int, guest_type: GuestType, node: str, source: str
) -> tuple[GuestConfig, list[Finding]]:
    """Parse one guest config's main section; bad lines and values become findings.

    Never raises: an unusable value is reported and its PVE default used instead.
    """
    findings: list[Finding] = []
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    description: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.startswith("[") and _SECTION_HEADER.match(line):
            break
        if line.startswith("#"):
            if not values:
                description.append(decode_text(line[1:]))
            continue
        if guest_type == "lxc" and _LXC_RAW.match(line):
            continue
        match = _KEY_VALUE.match(line)
        if match is None or not match.group(2):
            findings.append(
                finding("config-syntax", at(source, number), f"ignored line {line.strip()!r}")
            )
            continue
        key, value = match.groups()
        if key == "description":
            description.append(decode_text(value))
            continue
        values[key] = value
        lines[key] = number

    reader = _ValueReader(values, lines, source, findings)
    maxcpu: float | None
    if guest_type == "qemu":
        maxcpu, cpulimit = _qemu_cpus(reader)
        name = values.get("name") or f"VM {vmid}"
        memory = reader.memory(values.get("memory"))
        disk_pattern = _QEMU_DISK
    else:
        maxcpu, cpulimit = _lxc_cpus(reader)
        name = values.get("hostname") or f"CT{vmid}"
        memory = reader.memory(values.get("memory"))
        disk_pattern = _LXC_DISK
    disks = _Disks()
    for key, value in values.items():
        if disk_pattern.match(key):
            disks.add(key, value, guest_type, reader)
    template = reader.flag("template")
    config = GuestConfig(
        vmid=vmid,
        type=guest_type,
        node=node,
        name=name,
        maxcpu=maxcpu,
        maxmem=memory * MIB,
        cpulimit=cpulimit,
        tags=split_tags(values.get("tags", "")),
        template=template,
        disk_bytes=disks.total_bytes,
        storages=frozenset(disks.storages),
        host_volumes=tuple(disks.host_volumes),
        local_devices=_local_devices(values),
        lock=values.get("lock"),
        description="\n".join(description),
        source=source,
        values=values,
    )
    return config, findings


def split_tags(text: str) -> tuple[str, ...]:
    """Tags as PVE splits them (``;``, ``,`` or spaces), duplicates dropped, order kept."""
    return tuple(dict.fromkeys(tag for tag in _TAG_SEPARATORS.split(text) if tag))


class _ValueReader:
    """Reads typed values out of the main section, reporting bad ones at their line."""

    def __init__(
        self, values: dict[str, str], lines: dict[str, int], source: str, findings: list[Finding]
    ) -> None:
        self.values = values
        self.lines = lines
        self.source = source
        self.findings = findings

    def bad(self, key: str, expected: str, default: object) -> None:
        self.findings.append(
            finding(
                "config-bad-value",
                at(self.source, self.lines[key]),
                f"bad value {self.values[key]!r} for '{key}' (expected {expected}), "
                f"using {default!r}",
            )
        )

    def count(self, key: str, default: int | None) -> int | None:
        if key not in self.values:
            return default
        value = parse_int(self.values[key], minimum=1)
        if value is None:
            self.bad(key, "an integer >= 1", default)
            return default
        return value

    def cpulimit(self) -> float:
        if "cpulimit" not in self.values:
            return 0.0
        value = parse_number(self.values["cpulimit"])
        if value is None:
            self.bad("cpulimit", "a number >= 0", 0)
            return 0.0
        return value

    def flag(self, key: str) -> bool:
        if key not in self.values:
            return False
        value = parse_bool(self.values[key])
        if value is None:
            self.bad(key, "0 or 1", False)
            return False
        return value

    def memory(self, text: str | None) -> int:
        """``memory`` in MiB: a plain number or (qemu-server 8.1+) ``current=<MiB>``."""
        if text is None:
            return DEFAULT_MEMORY_MIB
        keyed, positional = split_property_string(text)
        raw = keyed.get("current", positional[0] if positional else None)
        value = parse_int(raw, minimum=1)
        if value is None:
            self.bad("memory", "MiB >= 1", DEFAULT_MEMORY_MIB)
            return DEFAULT_MEMORY_MIB
        return value


def _qemu_cpus(reader: _ValueReader) -> tuple[float, float]:
    sockets = reader.count("sockets", 1) or 1
    cores = reader.count("cores", 1) or 1
    vcpus = reader.count("vcpus", None)
    cpus = float(vcpus if vcpus is not None else sockets * cores)
    cpulimit = reader.cpulimit()
    return (min(cpus, cpulimit) if cpulimit > 0 else cpus), cpulimit


def _lxc_cpus(reader: _ValueReader) -> tuple[float | None, float]:
    cores = reader.count("cores", None)
    cpulimit = reader.cpulimit()
    if cores is None:
        return None, cpulimit
    return (min(float(cores), cpulimit) if cpulimit > 0 else float(cores)), cpulimit


class _Disks:
    """Accumulates disk sizes, storages and host-path volumes over the disk keys."""

    def __init__(self) -> None:
        self.total_bytes = 0
        self.storages: set[str] = set()
        self.host_volumes: list[str] = []

    def add(self, key: str, text: str, guest_type: GuestType, reader: _ValueReader) -> None:
        keyed, positional = split_property_string(text)
        volume_key = "file" if guest_type == "qemu" else "volume"
        volume = keyed.get(volume_key, positional[0] if positional else "")
        if volume in ("", "none", "cdrom"):
            return
        if volume.startswith("/"):
            self.host_volumes.append(volume)
        else:
            match = _VOLUME_ID.match(volume)
            if match is None:
                reader.bad(key, "'<storage>:<volume>' or a host path", "no storage")
            else:
                self.storages.add(match.group(1))
        if keyed.get("media") == "cdrom" or "size" not in keyed:
            return
        size = parse_size(keyed["size"])
        if size is None:
            reader.bad(key, "size=<number>[KMGT]", 0)
            return
        self.total_bytes += size


def _local_devices(values: dict[str, str]) -> tuple[str, ...]:
    devices = []
    for key, value in values.items():
        if not _PASSTHROUGH.match(key):
            continue
        keyed, positional = split_property_string(value)
        if "mapping" in keyed or "spice" in positional or keyed.get("host") == "spice":
            continue
        devices.append(key)
    return tuple(devices)
