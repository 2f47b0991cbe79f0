"""Load and validate prometheus/thresholds.yml, the single place alert thresholds are tuned.

Errors name the file and the offending key, so a typo fails the generator with a clear message
rather than producing rules Prometheus would reject (or silently never fire).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

THRESHOLDS_PATH = Path(__file__).resolve().parent / "thresholds.yml"

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


class ThresholdsError(ValueError):
    """The thresholds file is missing, unreadable, or has a bad or missing value."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    job: str
    runbook_url: str
    imbalance_warning_for: str
    imbalance_critical_factor: float
    imbalance_critical_for: str
    node_overload_ratio: float
    node_overload_for: str
    recommendation_pending_for: str
    down_for: str
    absent_for: str
    round_interval_seconds: int
    stale_after_rounds: int
    migration_failure_window: str
    migration_failures_allowed: int

    @property
    def stale_after_seconds(self) -> int:
        return self.round_interval_seconds * self.stale_after_rounds


def _check_value(name: str, value: Any, annotation: str) -> Any:
    if annotation == "str":
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty string")
        if name.endswith(("_for", "_window")) and not _DURATION.match(value):
            raise ValueError(f"{value!r} is not a Prometheus duration such as 15m or 1h")
        if name == "job" and not _JOB_NAME.match(value):
            raise ValueError(f"{value!r} is not a plain job name")
        return value
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("must be a whole number >= 0")
        if name in ("round_interval_seconds", "stale_after_rounds") and value == 0:
            raise ValueError("must be at least 1")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError("must be a number > 0")
    if name == "node_overload_ratio" and value > 1:
        raise ValueError("is a load ratio and must be <= 1")
    return float(value)


def parse(data: object, source: str = "<thresholds>") -> Thresholds:
    """Validate a parsed thresholds mapping; ``source`` names it in error messages."""
    if not isinstance(data, dict):
        raise ThresholdsError(f"{source}: expected a mapping of threshold names to values")
    known = {field.name: str(field.type) for field in fields(Thresholds)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ThresholdsError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}")
    values: dict[str, Any] = {}
    for name, annotation in known.items():
        if name not in data:
            raise ThresholdsError(f"{source}: missing key {name!r}")
        try:
            values[name] = _check_value(name, data[name], annotation)
        except ValueError as error:
            raise ThresholdsError(f"{source}: {name}: {error}") from None
    return Thresholds(**values)


def load(path: Path = THRESHOLDS_PATH) -> Thresholds:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ThresholdsError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ThresholdsError(f"{path}: not valid YAML: {error}") from None
    return parse(data, str(path))
