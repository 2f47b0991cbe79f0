"""The Prometheus metric catalogue, built per scrape from the latest published round.

A custom collector (rather than long-lived Gauge objects) because each round replaces the
whole label set: moves, nodes and findings come and go, and stale series must vanish with
the round that produced them. The collector reads :meth:`RoundPublisher.view` once per
scrape, so every family in one exposition describes the same round.

What is exported when:

* always: ``up``, ``build_info``, the round counters and histogram, the migration counters;
* once a round with data exists: everything else, from the newest round that carries a
  result (the last good one while later rounds fail, so dashboards keep the last plan;
  ``up`` and ``last_success_timestamp_seconds`` tell how old it is);
* ``node_load_ratio``: only the views the round has (``raw`` and/or ``smoothed``);
* ``data_issues``: only (kind, severity) pairs with at least one finding;
* ``placement_score``: only when the round was asked for start placements.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from exporters.actuator_metrics import GUEST_TYPES, MIGRATION_OUTCOMES
from exporters.state import (
    PublishedRound,
    RoundPublisher,
    cpu_ratio,
    guest_id,
    mem_ratio,
    node_id,
)
from model.plan import Move

LOG = logging.getLogger("pve_rebalancer.exporters.metrics")

PREFIX = "pve_rebalancer_"

METRIC_NAMES: tuple[str, ...] = tuple(
    PREFIX + name
    for name in (
        "up",
        "build_info",
        "imbalance_ratio",
        "imbalance_cv",
        "imbalance_threshold_ratio",
        "imbalance_margin_ratio",
        "imbalance_after_plan_ratio",
        "rounds_above_threshold",
        "hold_duration_rounds",
        "triggered",
        "automation_enabled",
        "ha_recommend_only",
        "node_load_ratio",
        "node_cpu_capacity_cores",
        "node_memory_capacity_bytes",
        "node_usable",
        "recommended_moves",
        "recommended_move_info",
        "recommended_move_imbalance_after_ratio",
        "recommended_move_cost_seconds",
        "placement_score",
        "data_issues",
        "round_duration_seconds",
        "last_success_timestamp_seconds",
        "rounds_total",
        "round_failures_total",
        "migrations_started_total",
        "migrations_succeeded_total",
        "migrations_failed_total",
    )
)
"""Every exposed metric name, as PromQL sees it (the dashboards' and rules' contract)."""

MOVE_LABELS = ("rank", "id", "sid", "source", "target")
NODE_LABELS = ("id", "node")


def package_version() -> str:
    try:
        return importlib.metadata.version("pve-rebalancer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=float(value))


def _move_labels(move: Move) -> list[str]:
    return [str(v) for v in (move.rank, guest_id(move.sid), move.sid, move.source, move.target)]


class RebalancerCollector(Collector):
    """Yields the whole catalogue from one read of the publisher's view."""

    def __init__(self, publisher: RoundPublisher, version: str | None = None) -> None:
        self._publisher = publisher
        self._build_labels = {
            "version": version if version is not None else package_version(),
            "python": platform.python_version(),
        }

    def collect(self) -> Iterator[Metric]:
        view = self._publisher.view()
        latest = view.latest
        up = 1.0 if latest is not None and latest.ok else 0.0
        yield _gauge("up", "1 when the last round succeeded.", up)
        build = InfoMetricFamily(PREFIX + "build", "Version of pve-rebalancer; always 1.")
        build.add_metric([], self._build_labels)
        yield build
        shown = view.display
        if shown is not None and shown.result is not None:
            try:
                round_families = list(self._round_metrics(shown))
            except (TypeError, ValueError, AttributeError):
                # A malformed round must not take the status and counters down with it.
                LOG.exception("cannot export the round finished at %s", shown.finished_at)
                round_families = []
            yield from round_families
        yield from self._counter_metrics(view.last_good)

    def _round_metrics(self, shown: PublishedRound) -> Iterator[Metric]:
        result = shown.result
        assert result is not None
        yield _gauge("imbalance_ratio", "CV/sqrt(n-1) of node loads, 0..1.", result.imbalance)
        yield _gauge("imbalance_cv", "Raw coefficient of variation.", result.imbalance_cv)
        yield _gauge("imbalance_threshold_ratio", "Threshold in force.", result.threshold / 100.0)
        yield _gauge("imbalance_margin_ratio", "Margin in force.", result.margin / 100.0)
        after = shown.imbalance_after_plan
        if after is not None:
            yield _gauge("imbalance_after_plan_ratio", "Expected imbalance after the plan.", after)
        yield _gauge("rounds_above_threshold", "The hold counter.", result.hold_count)
        if shown.snapshot is not None:
            yield _gauge(
                "hold_duration_rounds",
                "Rounds required before acting.",
                shown.snapshot.crs.hold_duration,
            )
        yield _gauge("triggered", "1 when this round's trigger fired.", float(result.triggered))
        yield _gauge(
            "automation_enabled",
            "1 when the actuator may carry out moves.",
            float(shown.automation_enabled),
        )
        yield _gauge(
            "ha_recommend_only",
            "1 when HA resources are only recommended because the built-in CRS "
            "auto-rebalances (ha-auto-rebalance=1).",
            float(shown.ha_recommend_only),
        )
        yield from self._node_metrics(shown)
        yield from self._move_metrics(result.moves)
        yield from self._placement_and_issue_metrics(shown)

    def _node_metrics(self, shown: PublishedRound) -> Iterator[Metric]:
        load = GaugeMetricFamily(
            PREFIX + "node_load_ratio",
            "Node load: cpu and memory shares and their mean (the CRS node load).",
            labels=[*NODE_LABELS, "resource", "view"],
        )
        for view_name, loads in shown.node_load_views().items():
            for node in loads:
                ids = [node_id(node.name), node.name]
                load.add_metric([*ids, "cpu", view_name], cpu_ratio(node))
                load.add_metric([*ids, "memory", view_name], mem_ratio(node))
                load.add_metric([*ids, "combined", view_name], float(node.load))
        yield load
        if shown.snapshot is None:
            return
        cpu = GaugeMetricFamily(
            PREFIX + "node_cpu_capacity_cores", "Node maxcpu.", labels=NODE_LABELS
        )
        mem = GaugeMetricFamily(
            PREFIX + "node_memory_capacity_bytes", "Node maxmem.", labels=NODE_LABELS
        )
        usable = GaugeMetricFamily(
            PREFIX + "node_usable", "1 when online and not in maintenance.", labels=NODE_LABELS
        )
        for member in shown.snapshot.nodes:
            ids = [node_id(member.name), member.name]
            cpu.add_metric(ids, float(member.maxcpu))
            mem.add_metric(ids, float(member.maxmem))
            usable.add_metric(ids, float(member.online and not member.maintenance))
        yield from (cpu, mem, usable)

    def _move_metrics(self, moves: list[Move]) -> Iterator[Metric]:
        yield _gauge("recommended_moves", "Number of moves in the plan.", len(moves))
        info = GaugeMetricFamily(
            PREFIX + "recommended_move_info", "1 per planned move.", labels=MOVE_LABELS
        )
        after = GaugeMetricFamily(
            PREFIX + "recommended_move_imbalance_after_ratio",
            "Expected imbalance after this step.",
            labels=MOVE_LABELS,
        )
        cost = GaugeMetricFamily(
            PREFIX + "recommended_move_cost_seconds",
            "Estimated migration duration.",
            labels=MOVE_LABELS,
        )
        for move in moves:
            labels = _move_labels(move)
            info.add_metric(labels, 1.0)
            after.add_metric(labels, float(move.imbalance_after))
            cost.add_metric(labels, float(move.cost_seconds))
        yield from (info, after, cost)

    def _placement_and_issue_metrics(self, shown: PublishedRound) -> Iterator[Metric]:
        if shown.placement_scores:
            score = GaugeMetricFamily(
                PREFIX + "placement_score",
                "Start-placement score of a node for a guest (higher is better).",
                labels=["id", "node"],
            )
            for entry in shown.placement_scores:
                score.add_metric([guest_id(entry.sid), entry.node], entry.score)
            yield score
        issues = GaugeMetricFamily(
            PREFIX + "data_issues",
            "Data-quality findings in the last snapshot.",
            labels=["kind", "severity"],
        )
        for kind, severity, count in shown.issue_counts:
            issues.add_metric([kind, severity], count)
        yield issues

    def _counter_metrics(self, last_good: PublishedRound | None) -> Iterator[Metric]:
        stats = self._publisher.round_stats.view()
        bounds = [str(float(b)) for b in stats.bucket_bounds] + ["+Inf"]
        yield HistogramMetricFamily(
            PREFIX + "round_duration_seconds",
            "Wall time of a round.",
            buckets=list(zip(bounds, map(float, stats.bucket_counts), strict=True)),
            sum_value=stats.duration_sum,
        )
        last_success = stats.last_success_at
        if last_good is not None:
            last_success = max(last_good.finished_at, last_success or 0.0)
        if last_success is not None:
            yield _gauge(
                "last_success_timestamp_seconds", "Unix time of the last good round.", last_success
            )
        yield CounterMetricFamily(PREFIX + "rounds", "Rounds run.", value=stats.rounds_total)
        yield CounterMetricFamily(
            PREFIX + "round_failures", "Rounds that failed.", value=stats.failures_total
        )
        counts = self._publisher.migrations.view()
        for outcome in MIGRATION_OUTCOMES:
            family = CounterMetricFamily(
                PREFIX + f"migrations_{outcome}",
                f"Migrations {outcome} by the actuator.",
                labels=["type"],
            )
            for guest_type in GUEST_TYPES:
                family.add_metric([guest_type], counts[(outcome, guest_type)])
            yield family


def make_registry(publisher: RoundPublisher, version: str | None = None) -> CollectorRegistry:
    """A dedicated registry holding only the rebalancer's collector (not the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RebalancerCollector(publisher, version))
    return registry
