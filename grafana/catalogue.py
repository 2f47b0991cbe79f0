"""The metric catalogue the exporter publishes: the contract dashboards and rules are checked
against.

Kept as data so tests can prove that every metric a panel or rule names really exists, and so
docs/metrics.md has one list to follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    type: MetricType
    labels: tuple[str, ...]
    help: str


_MOVE_LABELS = ("rank", "id", "sid", "source", "target")
_NODE_LABELS = ("id", "node")

METRICS: tuple[Metric, ...] = (
    Metric("pve_rebalancer_up", "gauge", (), "1 when the last round succeeded"),
    Metric("pve_rebalancer_build_info", "gauge", ("version", "python"), "always 1"),
    Metric("pve_rebalancer_imbalance_ratio", "gauge", (), "CV/sqrt(n-1) of node loads, 0..1"),
    Metric("pve_rebalancer_imbalance_cv", "gauge", (), "raw coefficient of variation"),
    Metric(
        "pve_rebalancer_imbalance_threshold_ratio", "gauge", (), "threshold in force (percent/100)"
    ),
    Metric("pve_rebalancer_imbalance_margin_ratio", "gauge", (), "margin in force (percent/100)"),
    Metric(
        "pve_rebalancer_imbalance_after_plan_ratio",
        "gauge",
        (),
        "expected imbalance, plan done",
    ),
    Metric("pve_rebalancer_rounds_above_threshold", "gauge", (), "the hold counter"),
    Metric("pve_rebalancer_hold_duration_rounds", "gauge", (), "rounds required before acting"),
    Metric("pve_rebalancer_triggered", "gauge", (), "1 when this round's trigger fired"),
    Metric(
        "pve_rebalancer_automation_enabled", "gauge", (), "1 when the actuator may carry out moves"
    ),
    Metric(
        "pve_rebalancer_ha_recommend_only",
        "gauge",
        (),
        "1 when HA resources are only recommended (built-in CRS auto-rebalances)",
    ),
    Metric(
        "pve_rebalancer_node_load_ratio",
        "gauge",
        ("id", "node", "resource", "view"),
        "node load; resource cpu/memory/combined, view raw/smoothed",
    ),
    Metric("pve_rebalancer_node_cpu_capacity_cores", "gauge", _NODE_LABELS, "maxcpu"),
    Metric("pve_rebalancer_node_memory_capacity_bytes", "gauge", _NODE_LABELS, "maxmem"),
    Metric("pve_rebalancer_node_usable", "gauge", _NODE_LABELS, "1 online and not in maintenance"),
    Metric("pve_rebalancer_recommended_moves", "gauge", (), "number of moves in the plan"),
    Metric("pve_rebalancer_recommended_move_info", "gauge", _MOVE_LABELS, "1 per planned move"),
    Metric(
        "pve_rebalancer_recommended_move_imbalance_after_ratio",
        "gauge",
        _MOVE_LABELS,
        "expected imbalance after this step",
    ),
    Metric(
        "pve_rebalancer_recommended_move_cost_seconds", "gauge", _MOVE_LABELS, "estimated duration"
    ),
    Metric(
        "pve_rebalancer_placement_score",
        "gauge",
        ("id", "node"),
        "start-placement score when asked",
    ),
    Metric("pve_rebalancer_data_issues", "gauge", ("kind", "severity"), "findings, last snapshot"),
    Metric("pve_rebalancer_round_duration_seconds", "histogram", (), "wall time of a round"),
    Metric(
        "pve_rebalancer_last_success_timestamp_seconds",
        "gauge",
        (),
        "unix time of the last good round",
    ),
    Metric("pve_rebalancer_rounds_total", "counter", (), "rounds run"),
    Metric("pve_rebalancer_round_failures_total", "counter", (), "rounds that failed"),
    Metric("pve_rebalancer_migrations_started_total", "counter", ("type",), "actuator"),
    Metric("pve_rebalancer_migrations_succeeded_total", "counter", ("type",), "actuator"),
    Metric("pve_rebalancer_migrations_failed_total", "counter", ("type",), "actuator"),
)

EXTERNAL_METRICS: frozenset[str] = frozenset({"pve_guest_info", "pve_node_info"})
"""prometheus-pve-exporter's info metrics, joined on ``id`` for names when present."""

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exposed_series_names() -> frozenset[str]:
    """Every series name the exporter exposes (histograms expand to bucket/sum/count)."""
    names: set[str] = set()
    for metric in METRICS:
        if metric.type == "histogram":
            names.update(metric.name + suffix for suffix in _HISTOGRAM_SUFFIXES)
        else:
            names.add(metric.name)
    return frozenset(names)
