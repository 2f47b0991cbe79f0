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
_KEY = re.compile(r"[a-z][a-z0-9_\-]*")
_LXC_RAW = re.compile(r"^lxc\.[a-z0-9_\-.]+\s*[:=]")
_QEMU_DISK = re.compile(r"^(?:(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0|unused\d+)$")
_LXC_DISK = re.compile(r"^(?:rootfs|mp\d+|unused\d+)$")
_STORAGE_ID = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.IGNORECASE)
_CANONICAL_OPTIONS = re.compile(r"[^,=\s]+(?:,[^,=\s]+=[^,\s]*)*")
_TAG_SEPARATORS = re.compile(r"[;, ]+")
_PASSTHROUGH = re.compile(r"^(?:hostpci|usb)\d+$")

# What the text before the first colon of a line is, as bit flags (0: not a valid key).
# Keys, storage ids, disk sizes and tag lists come from small vocabularies, so their parses
# are memoised; each memo is capped so that a flood of odd values cannot grow it unbounded.
_VALID_KEY = 1
_DESCRIPTION = 2
_QEMU_DISK_KEY = 4
_LXC_DISK_KEY = 8
_DEVICE_KEY = 16
_MEMO_LIMIT = 4096
_KEY_KINDS: dict[str, int] = {}
_STORAGE_IDS: dict[str, bool] = {}
_SIZES: dict[str, int | None] = {}
_TAGS: dict[str, tuple[str, ...]] = {}


def _classify_key(key: str) -> int:
    kind = 0
    if _KEY.fullmatch(key):
        kind = _VALID_KEY
        if key == "description":
            kind |= _DESCRIPTION
        if _QEMU_DISK.match(key):
            kind |= _QEMU_DISK_KEY
        if _LXC_DISK.match(key):
            kind |= _LXC_DISK_KEY
        if _PASSTHROUGH.match(key):
            kind |= _DEVICE_KEY
    if len(_KEY_KINDS) < _MEMO_LIMIT:
        _KEY_KINDS[key] = kind
    return kind


def _is_storage_id(text: str) -> bool:
    valid = _STORAGE_IDS.get(text)
    if valid is None:
        valid = _STORAGE_ID.fullmatch(text) is not None
        if len(_STORAGE_IDS) < _MEMO_LIMIT:
            _STORAGE_IDS[text] = valid
    return valid


def _size(text: str) -> int | None:
    """``parse_size``, memoised."""
    if text in _SIZES:
        return _SIZES[text]
    size = parse_size(text)
    if len(_SIZES) < _MEMO_LIMIT:
        _SIZES[text] = size
    return size


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
    text: str,
    vmid: int,
    guest_type: GuestType,
    node: str,
    source: str,
    *,
    pool: str | None = None,
) -> tuple[GuestConfig, list[Finding]]:
    """Parse one guest config's main section; bad lines and values become findings.

    Never raises: an unusable value is reported and its PVE default used instead. ``pool``
    is stored as is (``read_tree`` passes the guest's pool from user.cfg).
    """
    findings: list[Finding] = []
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    description: list[str] = []
    disk_keys: list[str] = []
    device_keys: list[str] = []
    disk_kind = _QEMU_DISK_KEY if guest_type == "qemu" else _LXC_DISK_KEY
    kinds = _KEY_KINDS
    for number, line in enumerate(text.splitlines(), start=1):
        # Fast path: a well-formed ``key: value`` line, the overwhelming majority.
        key, colon, rest = line.partition(":")
        if colon:
            kind = kinds.get(key)
            if kind is None:
                kind = _classify_key(key)
            if kind:
                value = rest.strip()
                if value:
                    if kind & _DESCRIPTION:
                        description.append(decode_text(value))
                        continue
                    if kind != _VALID_KEY and key not in values:
                        if kind & disk_kind:
                            disk_keys.append(key)
                        if kind & _DEVICE_KEY:
                            device_keys.append(key)
                    values[key] = value
                    lines[key] = number
                    continue
        # Everything else, checked in the order PVE's parser does.
        if not line.strip():
            continue
        if line[0] == "[" and _SECTION_HEADER.match(line):
            break
        if line[0] == "#":
            if not values:
                description.append(decode_text(line[1:]))
            continue
        if guest_type == "lxc" and _LXC_RAW.match(line):
            continue
        findings.append(
            finding("config-syntax", at(source, number), f"ignored line {line.strip()!r}")
        )

    reader = _ValueReader(values, lines, source, findings)
    maxcpu: float | None
    if guest_type == "qemu":
        maxcpu, cpulimit = _qemu_cpus(reader)
        name = values.get("name") or f"VM {vmid}"
    else:
        maxcpu, cpulimit = _lxc_cpus(reader)
        name = values.get("hostname") or f"CT{vmid}"
    memory = reader.memory()
    disks = _Disks()
    for key in disk_keys:
        disks.add(key, values[key], guest_type, reader)
    tags = values.get("tags")
    template = reader.flag("template")
    # Positional, in field order: notably cheaper than 18 keywords for 10,000 guests.
    config = GuestConfig(
        vmid,
        guest_type,
        node,
        name,
        maxcpu,
        memory * MIB,
        cpulimit,
        split_tags(tags) if tags is not None else (),
        template,
        disks.total_bytes,
        frozenset(disks.storages),
        tuple(disks.host_volumes),
        _local_devices(values, device_keys) if device_keys else (),
        values.get("lock"),
        "\n".join(description),
        pool,
        source,
        values,
    )
    return config, findings


def split_tags(text: str) -> tuple[str, ...]:
    """Tags as PVE splits them (``;``, ``,`` or spaces), duplicates dropped, order kept."""
    tags = _TAGS.get(text)
    if tags is None:
        tags = tuple(dict.fromkeys(tag for tag in _TAG_SEPARATORS.split(text) if tag))
        if len(_TAGS) < _MEMO_LIMIT:
            _TAGS[text] = tags
    return tags


class _ValueReader:
    """Reads typed values out of the main section, reporting bad ones at their line.

    Plain decimal values take a shortcut; anything else goes through the shared parsers in
    :mod:`collector.pvecfg.values`, which decide what is valid and what becomes a finding.
    """

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
        text = self.values.get(key)
        if text is None:
            return default
        if text.isascii() and text.isdigit() and int(text) >= 1:
            return int(text)
        value = parse_int(text, minimum=1)
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

    def memory(self) -> int:
        """``memory`` in MiB: a plain number or (qemu-server 8.1+) ``current=<MiB>``."""
        text = self.values.get("memory")
        if text is None:
            return DEFAULT_MEMORY_MIB
        if text.isascii() and text.isdigit() and int(text) >= 1:
            return int(text)
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
        volume_key = "file" if guest_type == "qemu" else "volume"
        if _CANONICAL_OPTIONS.fullmatch(text):
            # ``volume,key=value,...`` without blanks or empty items, as PVE writes it: the
            # items are exactly the comma-separated parts, so the first ``,key=`` is the
            # first item with that key and its value runs to the next comma. This gives
            # what split_property_string would, without building its dict and list.
            volume = text.partition(",")[0]
            if f",{volume_key}=" in text:
                volume = _option(text, f",{volume_key}=")
            media = _option(text, ",media=") if ",media=" in text else None
            size_text = _option(text, ",size=") if ",size=" in text else None
        else:
            keyed, positional = split_property_string(text)
            volume = keyed.get(volume_key, positional[0] if positional else "")
            media = keyed.get("media")
            size_text = keyed.get("size")
        if volume in ("", "none", "cdrom"):
            return
        if volume.startswith("/"):
            self.host_volumes.append(volume)
        else:
            # ``<storage>:<volume name>``; the storage id cannot contain a colon.
            storage, colon, name = volume.partition(":")
            if colon and name and _is_storage_id(storage):
                self.storages.add(storage)
            else:
                reader.bad(key, "'<storage>:<volume>' or a host path", "no storage")
        if size_text is None or media == "cdrom":
            return
        size = _size(size_text)
        if size is None:
            reader.bad(key, "size=<number>[KMGT]", 0)
            return
        self.total_bytes += size


def _option(text: str, marker: str) -> str:
    """The value after the first ``marker`` (``,key=``) of a canonical option string that
    holds it."""
    start = text.index(marker) + len(marker)
    end = text.find(",", start)
    return text[start:] if end < 0 else text[start:end]


def _local_devices(values: dict[str, str], keys: list[str]) -> tuple[str, ...]:
    """The pass-through ``keys`` (in config order) not using a mapping or SPICE."""
    devices = []
    for key in keys:
        keyed, positional = split_property_string(values[key])
        if "mapping" in keyed or "spice" in positional or keyed.get("host") == "spice":
            continue
        devices.append(key)
    return tuple(devices)
