"""The service configuration: a TOML file (stdlib ``tomllib``) turned into a typed :class:`Config`.

Why a module of its own: ``run``, ``check-config`` and ``history`` all read the same file and
must agree on every default. Every key has a default (``Config()`` is a working recommend-only
service on a PVE node), so an empty file is valid. :func:`load_config` does not stop at the
first problem: it collects EVERY unknown key, wrong type and out-of-range value, each with the
dotted key and the line it is on (found by scanning the TOML text; ``tomllib`` syntax errors
carry their own line), and raises one :class:`ConfigError` holding them all.

Sections (see ``pve-rebalancer.example.toml`` for every key with its default):

- ``[source]``: where a round's snapshot comes from (``files``: /etc/pve + RRD files; ``api``:
  the PVE API, with ``[source.api]``). ``now`` picks the reference time of the files source:
  ``"wall"`` (the clock), ``"latest"`` (the newest point in the node RRD files; for copies of a
  cluster's files and the simulator) or a fixed unix time.
- ``[balancer]``: every :class:`balancer.options.BalancerOptions` field plus ``follow_crs``
  (take threshold, margin, hold duration, method and mode from datacenter.cfg every round).
- ``[exporter]``, ``[actuator]`` (migrates through the PVE API, so enabling it, even as a
  dry run, needs ``[source.api]`` credentials whatever the source type), ``[state]``,
  ``[schedule]``.

Secrets: the API token secret comes from an environment variable or from a file readable by
its owner only (a group/world-readable file is refused). It is held in a :class:`Secret`,
whose ``repr``/``str`` never show the value, and no error message ever quotes it.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from balancer.options import METHODS, BalancerOptions
from cli.durations import parse_duration
from collector.smoothing import VIEWS
from model import Crs

SOURCE_TYPES = ("files", "api")
WINDOW_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class Secret:
    """A secret string that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: only for the request header that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    key: str
    """Dotted key, e.g. ``balancer.threshold`` (the section name for a whole section)."""
    line: int
    """1-based line in the file; 0 when the key is not written in the file."""
    problem: str

    def format(self, path: Path | str) -> str:
        """``FILE:LINE: key: problem``, as ``check-config`` prints it."""
        return f"{path}:{self.line}: {self.key}: {self.problem}"


class ConfigError(Exception):
    """The configuration file is unusable; ``problems`` lists every reason."""

    def __init__(self, path: Path | str, problems: list[ConfigProblem]) -> None:
        self.path = Path(path)
        self.problems = problems
        super().__init__("\n".join(p.format(path) for p in problems))


@dataclass(frozen=True, slots=True)
class ApiConfig:
    hosts: list[str] = field(default_factory=list)
    """host or host:port of one or more cluster nodes, tried in order."""
    token_id: str = ""
    """``user@realm!tokenname``."""
    token_secret_env: str = ""
    """Name of the environment variable holding the token secret."""
    token_secret_file: str = ""
    """File holding the token secret; must not be readable by group or others."""
    verify_tls: bool = True
    ca_file: str = ""
    """CA bundle for the node certificates (the cluster CA); empty: the system store."""
    timeout: float = 10.0
    token_secret: Secret | None = None
    """Resolved from ``token_secret_env`` or ``token_secret_file`` (not a TOML key)."""


@dataclass(frozen=True, slots=True)
class SourceConfig:
    type: str = "files"
    root: str = "/etc/pve"
    rrd_dir: str = "/var/lib/rrdcached/db"
    rrdcached: str = ""
    """rrdcached address to flush through before reading; empty: none."""
    status_dump: str = ""
    window: float = 3600.0
    usage: str = "ewma"
    half_life: float = 600.0
    now: str | int = "wall"
    """``"wall"``, ``"latest"`` (newest node RRD point) or a fixed unix time."""
    api: ApiConfig = field(default_factory=ApiConfig)


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    follow_crs: bool = True
    """Take threshold, margin, hold duration, method and mode from datacenter.cfg each round."""
    options: BalancerOptions = field(default_factory=BalancerOptions)

    def options_for(self, crs: Crs) -> BalancerOptions:
        """The options in force for a round on a cluster whose datacenter.cfg says ``crs``."""
        if not self.follow_crs:
            return self.options
        return replace(
            self.options,
            mode="dynamic" if crs.ha == "dynamic" else "static",
            method=crs.method,
            threshold=crs.threshold,
            margin=crs.margin,
            hold_duration=crs.hold_duration,
        )


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    listen: str = "127.0.0.1"
    port: int = 9878
    tls_cert: str = ""
    tls_key: str = ""
    auth_user: str = ""
    auth_password_hash: str = ""
    """``sha256:<64 hex>`` or a bcrypt hash; never the password itself."""
    health_max_age: float = 300.0


@dataclass(frozen=True, slots=True)
class ActuatorConfig:
    enabled: bool = False
    dry_run: bool = False
    concurrency: int = 2
    windows: list[str] = field(default_factory=list)
    """Local-time windows ``HH:MM-HH:MM`` (may wrap midnight) when moves may start; [] = any."""
    allow_ha_when_crs_auto_rebalance: bool = False
    """False: while datacenter.cfg has ha-auto-rebalance=1, HA resources are only recommended."""
    allow_containers: bool = False
    """Containers restart when migrated: the actuator leaves them alone unless allowed."""
    task_timeout: float = 900.0
    """A migration task not ended after this long is reported failed."""
    poll_interval: float = 2.0
    """How often a running migration task is polled."""

    @property
    def active(self) -> bool:
        """The actuator runs (carrying moves out, or listing the calls in a dry run)."""
        return self.enabled or self.dry_run


@dataclass(frozen=True, slots=True)
class StateConfig:
    dir: str = "/var/lib/pve-rebalancer"


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    interval: float = 10.0
    history_interval: float = 60.0
    """A history row is written at most this often, and whenever the decision changes."""


@dataclass(frozen=True, slots=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    exporter: ExporterConfig = field(default_factory=ExporterConfig)
    actuator: ActuatorConfig = field(default_factory=ActuatorConfig)
    state: StateConfig = field(default_factory=StateConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


def example_keys() -> list[str]:
    """Every dotted key a configuration file may hold (tests check the example has them)."""
    keys = [f"source.{f.name}" for f in fields(SourceConfig) if f.name != "api"]
    keys += [f"source.api.{f.name}" for f in fields(ApiConfig) if f.name != "token_secret"]
    keys += ["balancer.follow_crs"] + [f"balancer.{f.name}" for f in fields(BalancerOptions)]
    for name, cls in (
        ("exporter", ExporterConfig),
        ("actuator", ActuatorConfig),
        ("state", StateConfig),
        ("schedule", ScheduleConfig),
    ):
        keys += [f"{name}.{f.name}" for f in fields(cls)]
    return keys


# ----- locating keys in the text ---------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*=""")


def key_lines(text: str) -> dict[str, int]:
    """Dotted key (and table name) -> 1-based line, for keys written as ``key = value``."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = ".".join(part.strip().strip("\"'") for part in header.group(1).split("."))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            name = key.group(1).strip("\"'")
            lines.setdefault(f"{table}.{name}" if table else name, number)
    return lines


# ----- converting values -----------------------------------------------------------------


class _Problems:
    def __init__(self, lines: dict[str, int]) -> None:
        self.lines = lines
        self.items: list[ConfigProblem] = []

    def add(self, key: str, problem: str) -> None:
        line = self.lines.get(key, 0)
        probe = key
        while not line and "." in probe:
            probe = probe.rsplit(".", 1)[0]
            line = self.lines.get(probe, 0)
        self.items.append(ConfigProblem(key, line, problem))


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)  # fmt: skip


def _convert(key: str, value: Any, expected: Any, problems: _Problems) -> Any:
    """``value`` as ``expected`` (a type hint), or None with a problem recorded."""
    origin = typing.get_origin(expected)
    if expected is bool:
        if isinstance(value, bool):
            return value
        problems.add(key, f"expected a boolean, got {_type_name(value)}")
        return None
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.add(key, f"expected an integer, got {_type_name(value)}")
        return None
    if expected is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        problems.add(key, f"expected a number, got {_type_name(value)}")
        return None
    if expected is str or origin is typing.Literal:
        if isinstance(value, str):
            return value
        problems.add(key, f"expected a string, got {_type_name(value)}")
        return None
    if origin is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        problems.add(key, "expected an array of strings")
        return None
    if origin is dict:
        if isinstance(value, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
        ):
            return {str(k): float(v) for k, v in value.items()}
        problems.add(key, "expected a table of numbers")
        return None
    problems.add(key, "unsupported value")  # pragma: no cover - every field type is above
    return None


def _duration(key: str, value: Any, problems: _Problems) -> float | None:
    """A duration: a number of seconds or a string such as ``30s``, ``10m``, ``1h``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as error:
            problems.add(key, str(error))
            return None
    problems.add(key, f"expected a duration (seconds or e.g. '10m'), got {_type_name(value)}")
    return None


DURATION_KEYS = {
    "source.window",
    "source.half_life",
    "source.api.timeout",
    "actuator.task_timeout",
    "actuator.poll_interval",
    "exporter.health_max_age",
    "schedule.interval",
    "schedule.history_interval",
}


def _section(
    name: str, cls: Any, data: Any, problems: _Problems, skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Keyword arguments for ``cls`` from table ``data``; unknown keys and bad types recorded."""
    if not isinstance(data, dict):
        problems.add(name, f"expected a table, got {_type_name(data)}")
        return {}
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)} - skip
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{name}.{key}"
        if key not in known:
            problems.add(dotted, "unknown key")
            continue
        if dotted in DURATION_KEYS:
            converted = _duration(dotted, value, problems)
        else:
            converted = _convert(dotted, value, hints[key], problems)
        if converted is not None:
            out[key] = converted
    return out


# ----- range checks ----------------------------------------------------------------------


def _check_range(
    problems: _Problems,
    key: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> None:
    if low is not None and (value <= low if low_open else value < low):
        problems.add(key, f"{value:g} must be {'>' if low_open else '>='} {low:g}")
    if high is not None and value > high:
        problems.add(key, f"{value:g} must be <= {high:g}")


def _check_choice(problems: _Problems, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        problems.add(key, f"{value!r} must be one of {', '.join(choices)}")


_PERCENT = (0.0, 100.0)
_BALANCER_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    # key: (low, high, low_open)
    "threshold": (*_PERCENT, False),
    "margin": (*_PERCENT, False),
    "overload_percent": (0.0, 100.0, True),
    "hold_duration": (0, None, False),
    "overload_hold": (1, None, False),
    "mem_headroom": (0.0, 1.0, True),
    "cpu_cap": (0.0, None, True),
    "static_cpu_cap": (0.0, None, True),
    "max_moves": (0, None, False),
    "concurrency": (1, None, False),
    "lookahead_width": (0, None, False),
    "lookahead_max_candidates": (0, None, False),
    "top_n": (0, None, False),
    "bandwidth_gib_s": (0.0, None, True),
    "migration_overhead_s": (0.0, None, False),
    "min_gain_per_gib": (0.0, None, False),
    "cooldown_seconds": (0.0, None, False),
    "in_flight_timeout_s": (0.0, None, True),
    "optimal_time_limit_s": (0.0, None, True),
    "optimal_max_guests": (1, None, False),
    "consolidate_below_percent": (*_PERCENT, False),
    "consolidate_max_nodes": (1, None, False),
}


def _balancer(data: Any, problems: _Problems) -> BalancerConfig:
    if not isinstance(data, dict):
        problems.add("balancer", f"expected a table, got {_type_name(data)}")
        return BalancerConfig()
    data = dict(data)
    follow = data.pop("follow_crs", True)
    if not isinstance(follow, bool):
        problems.add("balancer.follow_crs", f"expected a boolean, got {_type_name(follow)}")
        follow = True
    stop = data.pop("stop_threshold", "auto")
    values = _section("balancer", BalancerOptions, data, problems, frozenset({"stop_threshold"}))
    if stop == "auto":
        values["stop_threshold"] = None
    elif isinstance(stop, int | float) and not isinstance(stop, bool):
        values["stop_threshold"] = float(stop)
        _check_range(problems, "balancer.stop_threshold", float(stop), *_PERCENT)
    else:
        problems.add("balancer.stop_threshold", 'expected a percent or "auto"')
    for key, (low, high, low_open) in _BALANCER_RANGES.items():
        if key in values:
            _check_range(problems, f"balancer.{key}", values[key], low, high, low_open=low_open)
    choices = {"method": METHODS, "mode": ("static", "dynamic"), "scope": ("crs", "all")}
    for key, allowed in choices.items():
        if key in values:
            _check_choice(problems, f"balancer.{key}", values[key], allowed)
    for pair, bandwidth in values.get("pair_bandwidth_gib_s", {}).items():
        where = f"balancer.pair_bandwidth_gib_s.{pair}"
        if pair.count(":") != 1 or not all(pair.split(":")):
            problems.add(where, 'key must be "nodeA:nodeB"')
        _check_range(problems, where, bandwidth, 0.0, None, low_open=True)
    return BalancerConfig(follow_crs=follow, options=BalancerOptions(**values))


# ----- secrets -------------------------------------------------------------------------


def read_secret_file(path: Path) -> Secret:
    """The secret in ``path``; refuses a file that group or others may read."""
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )
    if info.st_uid != os.geteuid():
        raise PermissionError(f"{path} is not owned by the user running pve-rebalancer")
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return Secret(value)


def _api(data: Any, problems: _Problems, needed: bool) -> ApiConfig:
    values = _section("source.api", ApiConfig, data, problems, frozenset({"token_secret"}))
    api = ApiConfig(**values)
    if api.timeout <= 0:
        problems.add("source.api.timeout", "must be positive")
    if not needed:
        return api
    if not api.hosts:
        problems.add("source.api.hosts", "the api source needs at least one host")
    if "!" not in api.token_id or "@" not in api.token_id:
        problems.add("source.api.token_id", "expected user@realm!tokenname")
    if api.ca_file and not Path(api.ca_file).is_file():
        problems.add("source.api.ca_file", f"{api.ca_file} is not a file")
    secret: Secret | None = None
    if bool(api.token_secret_env) == bool(api.token_secret_file):
        problems.add(
            "source.api.token_secret_env",
            "set exactly one of token_secret_env and token_secret_file",
        )
    elif api.token_secret_env:
        value = os.environ.get(api.token_secret_env, "")
        if value:
            secret = Secret(value)
        else:
            problems.add(
                "source.api.token_secret_env",
                f"environment variable {api.token_secret_env} is not set or empty",
            )
    else:
        try:
            secret = read_secret_file(Path(api.token_secret_file))
        except (OSError, ValueError) as error:
            problems.add("source.api.token_secret_file", str(error))
    return replace(api, token_secret=secret)


def _source(data: Any, problems: _Problems, *, api_needed: bool) -> SourceConfig:
    if not isinstance(data, dict):
        problems.add("source", f"expected a table, got {_type_name(data)}")
        return SourceConfig()
    data = dict(data)
    api_data = data.pop("api", {})
    now = data.pop("now", "wall")
    values = _section("source", SourceConfig, data, problems, frozenset({"api", "now"}))
    if "type" in values:
        _check_choice(problems, "source.type", values["type"], SOURCE_TYPES)
    if "usage" in values:
        _check_choice(problems, "source.usage", values["usage"], VIEWS)
    for key in ("window", "half_life"):
        if key in values:
            _check_range(problems, f"source.{key}", values[key], 0.0, None, low_open=True)
    if isinstance(now, int) and not isinstance(now, bool):
        _check_range(problems, "source.now", now, 0)
    elif now not in ("wall", "latest"):
        problems.add("source.now", 'expected "wall", "latest" or a unix time')
        now = "wall"
    values["now"] = now
    api = _api(api_data, problems, needed=api_needed or values.get("type", "files") == "api")
    return SourceConfig(**values, api=api)


def _exporter(data: Any, problems: _Problems) -> ExporterConfig:
    exporter = ExporterConfig(**_section("exporter", ExporterConfig, data, problems))
    _check_range(problems, "exporter.port", exporter.port, 0, 65535)
    _check_range(problems, "exporter.health_max_age", exporter.health_max_age, 0, None,
                 low_open=True)  # fmt: skip
    if bool(exporter.tls_cert) != bool(exporter.tls_key):
        problems.add("exporter.tls_cert", "tls_cert and tls_key go together")
    for key in ("tls_cert", "tls_key"):
        value = getattr(exporter, key)
        if value and not Path(value).is_file():
            problems.add(f"exporter.{key}", f"{value} is not a file")
    if bool(exporter.auth_user) != bool(exporter.auth_password_hash):
        problems.add("exporter.auth_user", "auth_user and auth_password_hash go together")
    elif exporter.auth_user:
        from exporters.auth import BasicAuth  # the check is the one the server applies

        try:
            BasicAuth.from_hash(exporter.auth_user, exporter.auth_password_hash)
        except ValueError as error:
            problems.add("exporter.auth_password_hash", str(error))
    return exporter


def _actuator(data: Any, problems: _Problems) -> ActuatorConfig:
    actuator = ActuatorConfig(**_section("actuator", ActuatorConfig, data, problems))
    _check_range(problems, "actuator.concurrency", actuator.concurrency, 1)
    for key in ("task_timeout", "poll_interval"):
        _check_range(problems, f"actuator.{key}", getattr(actuator, key), 0.0, None,
                     low_open=True)  # fmt: skip
    for window in actuator.windows:
        if not WINDOW_RE.match(window):
            problems.add("actuator.windows", f"{window!r} is not HH:MM-HH:MM")
    return actuator


def _schedule(data: Any, problems: _Problems) -> ScheduleConfig:
    schedule = ScheduleConfig(**_section("schedule", ScheduleConfig, data, problems))
    _check_range(problems, "schedule.interval", schedule.interval, 1.0)
    _check_range(problems, "schedule.history_interval", schedule.history_interval, 0.0)
    return schedule


SECTIONS = ("source", "balancer", "exporter", "actuator", "state", "schedule")


def parse_config(text: str, path: Path | str = "<config>") -> Config:
    """A :class:`Config` from TOML ``text``; raises :class:`ConfigError` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"line (\d+)", str(error))
        line = int(match.group(1)) if match else 0
        raise ConfigError(path, [ConfigProblem("(syntax)", line, str(error))]) from None
    problems = _Problems(key_lines(text))
    for name in data:
        if name not in SECTIONS:
            problems.add(name, "unknown section")
    actuator_data = data.get("actuator", {})
    # the actuator migrates through the PVE API: it needs [source.api] whatever the source
    api_needed = isinstance(actuator_data, dict) and any(
        actuator_data.get(key) is True for key in ("enabled", "dry_run")
    )
    config = Config(
        source=_source(data.get("source", {}), problems, api_needed=api_needed),
        balancer=_balancer(data.get("balancer", {}), problems),
        exporter=_exporter(data.get("exporter", {}), problems),
        actuator=_actuator(actuator_data, problems),
        state=StateConfig(**_section("state", StateConfig, data.get("state", {}), problems)),
        schedule=_schedule(data.get("schedule", {}), problems),
    )
    if problems.items:
        raise ConfigError(path, sorted(problems.items, key=lambda p: (p.line, p.key)))
    return config


def load_config(path: Path | str) -> Config:
    """Read and check the configuration file at ``path``.

    Raises :class:`ConfigError` (every problem with key and line) or, when the file cannot be
    read at all, :class:`ConfigError` with one problem on line 0.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, [ConfigProblem("(file)", 0, str(error))]) from None
    return parse_config(text, path)
