"""Guest configs ``nodes/<node>/qemu-server/<vmid>.conf`` and ``nodes/<node>/lxc/<vmid>.conf``.

Only the main section describes the running guest: the first ``[snapshot]``,
``[PENDING]`` or ``[special:cloudinit]`` header ends it. From it we derive the guest's
static size the way the CRS does (vCPUs capped by ``cpulimit``, memory in bytes), its
identity (name, tags, template, lock) and its disks: total configured bytes and the
storages they live on, so the caller can tell whether migrating it copies local disks.

A cold read parses 10,000 configs: a plain pass reads the usual config (known keys, a
leading description, a section header), anything else goes line by line through PVE's
rules with findings at their lines; what 10,000 configs share (keys, disk options, sizes,
storage sets) is worked out once per distinct value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from collector.pvecfg.members import GuestType
from collector.pvecfg.slotinit import slot_init
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
_CANONICAL_OPTIONS = re.compile(r"(?:[^,=\s]+=[^,\s]*(?:,[^,=\s]+=[^,\s]*)*)?")
_TAG_SEPARATORS = re.compile(r"[;, ]+")
_PASSTHROUGH = re.compile(r"^(?:hostpci|usb)\d+$")

# What the text before the first colon of a line is, as bit flags (0: not a valid key).
# Keys, storage ids, disk sizes and options, tag lists, storage sets and static sizes come
# from small vocabularies, so their parses are memoised; each memo is capped so that a flood
# of odd values cannot grow it unbounded.
_VALID_KEY = 1
_DESCRIPTION = 2
_QEMU_DISK_KEY = 4
_LXC_DISK_KEY = 8
_DEVICE_KEY = 16
_MEMO_LIMIT = 4096
_KEY_KINDS: dict[str, int] = {}
_VALUE_KEYS: dict[str, str] = {}  # each valid key but "description", to itself
_STORAGE_IDS: dict[str, bool] = {}
_SIZES: dict[str, int | None] = {}
_TAGS: dict[str, tuple[str, ...]] = {}
_OPTIONS: dict[str, dict[str, str] | None] = {}
_STORAGE_SETS: dict[frozenset[str], frozenset[str]] = {}
_STATIC_SIZES: dict[tuple[str | None, ...], tuple[float | None, float, int]] = {}


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


_new_config = slot_init(GuestConfig)


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
    values, description, findings = _main_section(text, guest_type, source)
    reader = _ValueReader(text, guest_type, source, values, findings)
    maxcpu, cpulimit, memory = _static_size(reader)
    if guest_type == "qemu":
        name = values.get("name") or f"VM {vmid}"
    else:
        name = values.get("hostname") or f"CT{vmid}"
    disk_kind = _QEMU_DISK_KEY if guest_type == "qemu" else _LXC_DISK_KEY
    kinds = _KEY_KINDS
    disk_keys = []
    device_keys = []
    for key in [key for key in values if kinds.get(key) != _VALID_KEY]:  # the few others
        kind = kinds.get(key) or _classify_key(key)
        if kind & disk_kind:
            disk_keys.append(key)
        if kind & _DEVICE_KEY:
            device_keys.append(key)
    disk_bytes, storages, host_volumes = _disks(disk_keys, guest_type, reader)
    tags = values.get("tags")
    template = reader.flag("template")
    # Positional, in field order: notably cheaper than 18 keywords for 10,000 guests.
    config = _new_config(
        vmid,
        guest_type,
        node,
        name,
        maxcpu,
        memory * MIB,
        cpulimit,
        split_tags(tags) if tags is not None else (),
        template,
        disk_bytes,
        storages,
        host_volumes,
        _local_devices(values, device_keys) if device_keys else (),
        values.get("lock"),
        "\n".join(description),
        pool,
        source,
        values,
    )
    return config, findings


def _main_section(
    text: str, guest_type: GuestType, source: str, lines: dict[str, int] | None = None
) -> tuple[dict[str, str], list[str], list[Finding]]:
    """The main section as PVE's parser reads it: the last value of each valid key (keys in
    order of first appearance), the description lines and the findings. With ``lines``,
    also the line of each value kept (only a finding needs it)."""
    if lines is None:
        plain = _plain_main_section(text)
        if plain is not None:
            return plain[0], plain[1], []
    findings: list[Finding] = []
    values: dict[str, str] = {}
    description: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        key, colon, rest = line.partition(":")
        if colon:
            # One shared string per key: 10,000 configs share their dicts' keys.
            known = _VALUE_KEYS.get(key)
            kind = _VALID_KEY if known is not None else _KEY_KINDS.get(key)
            if kind is None:
                kind = _classify_key(key)
            if kind:
                value = rest.strip()
                if value:
                    if kind & _DESCRIPTION:
                        description.append(decode_text(value))
                        continue
                    known = known or _value_key(key)
                    values[known] = value
                    if lines is not None:
                        lines[known] = number
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
    return values, description, findings


def _plain_main_section(text: str) -> tuple[dict[str, str], list[str]] | None:
    """``_main_section``'s values and description for the usual config: ``key: value``
    lines with keys seen before (not ``description``), ``#`` lines before them, blank lines
    and a section header; None for any other (then it reads the text itself, keeping line
    numbers for its findings)."""
    values: dict[str, str] = {}
    description: list[str] = []
    keys = _VALUE_KEYS
    for line in text.splitlines():
        key, colon, rest = line.partition(":")
        if colon:
            known = keys.get(key)
            if known is not None:
                value = rest.strip()
                if not value:
                    return None
                values[known] = value
                continue
        if line.strip():
            if line[0] == "#" and not values:
                description.append(decode_text(line[1:]))
                continue
            if line[0] == "[" and _SECTION_HEADER.match(line):
                break
            return None
    return values, description


def _value_key(key: str) -> str:
    """``key`` (a valid key but ``description``), memoised as the one string used for it."""
    if len(_VALUE_KEYS) < _MEMO_LIMIT:
        _VALUE_KEYS[key] = key
    return key


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
        self,
        text: str,
        guest_type: GuestType,
        source: str,
        values: dict[str, str],
        findings: list[Finding],
    ) -> None:
        self.text = text
        self.guest_type = guest_type
        self.source = source
        self.values = values
        self.findings = findings
        self.lines: dict[str, int] | None = None

    def line_of(self, key: str) -> int:
        """The line of ``key``'s value, found again when a finding first needs a line."""
        if self.lines is None:
            self.lines = {}
            _main_section(self.text, self.guest_type, self.source, self.lines)
        return self.lines[key]

    def bad(self, key: str, expected: str, default: object) -> None:
        self.findings.append(
            finding(
                "config-bad-value",
                at(self.source, self.line_of(key)),
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


def _static_size(reader: _ValueReader) -> tuple[float | None, float, int]:
    """maxcpu, cpulimit and memory (MiB). Memoised per distinct ``sockets``, ``cores``,
    ``vcpus``, ``cpulimit`` and ``memory`` text: 10,000 guests have a few dozen sizes."""
    values = reader.values
    key = (
        reader.guest_type,
        values.get("sockets"),
        values.get("cores"),
        values.get("vcpus"),
        values.get("cpulimit"),
        values.get("memory"),
    )
    size = _STATIC_SIZES.get(key)
    if size is None:
        before = len(reader.findings)
        cpus = _qemu_cpus(reader) if reader.guest_type == "qemu" else _lxc_cpus(reader)
        size = (*cpus, reader.memory())
        if len(reader.findings) == before and len(_STATIC_SIZES) < _MEMO_LIMIT:
            _STATIC_SIZES[key] = size  # a size that gave a finding is worked out every time
    return size


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


def _disks(
    keys: list[str], guest_type: GuestType, reader: _ValueReader
) -> tuple[int, frozenset[str], tuple[str, ...]]:
    """Over the disk ``keys``: total ``size=`` bytes (CD-ROMs excluded), the storages the
    volumes live on, the volumes given as host paths."""
    total_bytes = 0
    storages: set[str] = set()
    host_volumes: list[str] = []
    volume_key = "file" if guest_type == "qemu" else "volume"
    for key in keys:
        volume, media, size_text = _volume(reader.values[key], volume_key)
        if volume in ("", "none", "cdrom"):
            continue
        if volume.startswith("/"):
            host_volumes.append(volume)
        else:
            # ``<storage>:<volume name>``; the storage id cannot contain a colon.
            storage, colon, name = volume.partition(":")
            if colon and name and _is_storage_id(storage):
                storages.add(storage)
            else:
                reader.bad(key, "'<storage>:<volume>' or a host path", "no storage")
        if size_text is None or media == "cdrom":
            continue
        size = _size(size_text)
        if size is None:
            reader.bad(key, "size=<number>[KMGT]", 0)
            continue
        total_bytes += size
    return total_bytes, _shared_set(frozenset(storages)), tuple(host_volumes)


def _shared_set(storages: frozenset[str]) -> frozenset[str]:
    """One object for each distinct set of storages, shared by the configs using it (10,000
    configs use a few sets; fewer objects for the garbage collector to walk)."""
    shared = _STORAGE_SETS.get(storages)
    if shared is None:
        shared = storages
        if len(_STORAGE_SETS) < _MEMO_LIMIT:
            _STORAGE_SETS[storages] = storages
    return shared


def _volume(text: str, volume_key: str) -> tuple[str, str | None, str | None]:
    """A disk value's volume, ``media`` and ``size``, as split_property_string reads them."""
    volume, _, options = text.partition(",")
    keyed = _keyed_options(options)
    if keyed is not None and volume and "=" not in volume and volume == volume.strip():
        # ``volume,key=value,...`` as PVE writes it (blanks only inside the volume): the
        # positional volume and the first value of each key, without splitting again.
        return keyed.get(volume_key, volume), keyed.get("media"), keyed.get("size")
    keyed, positional = split_property_string(text)
    volume = keyed.get(volume_key, positional[0] if positional else "")
    return volume, keyed.get("media"), keyed.get("size")


def _keyed_options(options: str) -> dict[str, str] | None:
    """``key=value,...`` (each key without ``,``, ``=`` or blanks, each value without ``,``
    or blanks; or nothing) as key -> first value; None for any other text. Memoised: the
    options after a disk's volume repeat across guests."""
    if options in _OPTIONS:
        return _OPTIONS[options]
    keyed: dict[str, str] | None = None
    if _CANONICAL_OPTIONS.fullmatch(options):
        keyed = {}
        for item in options.split(",") if options else ():
            key, _, value = item.partition("=")
            keyed.setdefault(key, value)
    if len(_OPTIONS) < _MEMO_LIMIT:
        _OPTIONS[options] = keyed
    return keyed


def _local_devices(values: dict[str, str], keys: list[str]) -> tuple[str, ...]:
    """The pass-through ``keys`` (in config order) not using a mapping or SPICE."""
    devices = []
    for key in keys:
        keyed, positional = split_property_string(values[key])
        if "mapping" in keyed or "spice" in positional or keyed.get("host") == "spice":
            continue
        devices.append(key)
    return tuple(devices)
