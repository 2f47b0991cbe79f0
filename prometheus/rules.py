"""The pve-rebalancer recording and alerting rules, as data built from the thresholds.

Pure: thresholds in, rule groups (plain dicts in Prometheus' rule-file shape) out. The
generator writes them as YAML; the promtool unit tests in prometheus/tests check they fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prometheus.thresholds import Thresholds

Severity = Literal["info", "warning", "critical"]

RECORDING_GROUP = "pve-rebalancer.recording"
ALERTING_GROUP = "pve-rebalancer.alerts"

NODE_LOAD_AGGREGATES = ("max", "min", "avg")


@dataclass(frozen=True, slots=True)
class RecordingRule:
    record: str
    expr: str

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record, "expr": self.expr}


@dataclass(frozen=True, slots=True)
class AlertRule:
    alert: str
    expr: str
    severity: Severity
    summary: str
    description: str
    for_: str = "0s"

    def to_dict(self, runbook_url: str) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.alert, "expr": self.expr}
        if self.for_ != "0s":
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{runbook_url}#{self.alert.lower()}",
        }
        return rule


def recording_rules() -> list[RecordingRule]:
    """Series the dashboards read instead of aggregating every node on each refresh."""
    node_load = [
        RecordingRule(
            record=f"job_resource_view:pve_rebalancer_node_load_ratio:{aggregate}",
            expr=f"{aggregate} by (job, resource, view) (pve_rebalancer_node_load_ratio)",
        )
        for aggregate in NODE_LOAD_AGGREGATES
    ]
    moves = RecordingRule(
        record="job:pve_rebalancer_recommended_move_info:count",
        expr="count by (job) (pve_rebalancer_recommended_move_info)",
    )
    return [*node_load, moves]


def alert_rules(limits: Thresholds) -> list[AlertRule]:
    imbalance = "pve_rebalancer_imbalance_ratio"
    threshold = "pve_rebalancer_imbalance_threshold_ratio"
    overloaded = (
        'pve_rebalancer_node_load_ratio{resource=~"cpu|memory", view="smoothed"} '
        f"> {limits.node_overload_ratio:g}"
    )
    failures = (
        "sum by (job, instance, type) "
        f"(increase(pve_rebalancer_migrations_failed_total[{limits.migration_failure_window}])) "
        f"> {limits.migration_failures_allowed}"
    )
    return [
        AlertRule(
            alert="PveRebalancerImbalanceHigh",
            expr=f"{imbalance} > {threshold}",
            for_=limits.imbalance_warning_for,
            severity="warning",
            summary="Cluster imbalance above the rebalancing threshold",
            description=(
                "Cluster imbalance on {{ $labels.instance }} has stayed above the threshold in "
                f"force for {limits.imbalance_warning_for}; it is now "
                "{{ $value | humanizePercentage }}."
            ),
        ),
        AlertRule(
            alert="PveRebalancerImbalanceCritical",
            expr=f"{imbalance} > {limits.imbalance_critical_factor:g} * {threshold}",
            for_=limits.imbalance_critical_for,
            severity="critical",
            summary="Cluster imbalance far above the rebalancing threshold",
            description=(
                "Cluster imbalance on {{ $labels.instance }} has stayed above "
                f"{limits.imbalance_critical_factor:g} times the threshold in force for "
                f"{limits.imbalance_critical_for}; it is now {{{{ $value | humanizePercentage }}}}."
            ),
        ),
        AlertRule(
            alert="PveRebalancerNodeOverloaded",
            expr=overloaded,
            for_=limits.node_overload_for,
            severity="warning",
            summary="Node {{ $labels.node }} overloaded in {{ $labels.resource }}",
            description=(
                "Smoothed {{ $labels.resource }} load of node {{ $labels.node }} is "
                "{{ $value | humanizePercentage }}, above "
                f"{limits.node_overload_ratio:.0%} for {limits.node_overload_for}."
            ),
        ),
        AlertRule(
            alert="PveRebalancerRecommendationPending",
            expr=(
                "pve_rebalancer_recommended_moves > 0 "
                "and on(job, instance) pve_rebalancer_automation_enabled == 0"
            ),
            for_=limits.recommendation_pending_for,
            severity="info",
            summary="Rebalancing moves recommended but automation is off",
            description=(
                "{{ $value }} recommended move(s) on {{ $labels.instance }} have waited "
                f"{limits.recommendation_pending_for} with automation disabled; review and "
                "carry them out by hand, or enable automation."
            ),
        ),
        AlertRule(
            alert="PveRebalancerDown",
            expr="pve_rebalancer_up == 0",
            for_=limits.down_for,
            severity="warning",
            summary="pve-rebalancer rounds are failing",
            description=(
                "The last balancing rounds on {{ $labels.instance }} failed "
                f"(pve_rebalancer_up is 0 for {limits.down_for})."
            ),
        ),
        AlertRule(
            alert="PveRebalancerStale",
            expr=(
                "time() - pve_rebalancer_last_success_timestamp_seconds "
                f"> {limits.stale_after_seconds}"
            ),
            for_="1m",
            severity="critical",
            summary="No successful pve-rebalancer round recently",
            description=(
                "The last successful round on {{ $labels.instance }} was "
                "{{ $value | humanizeDuration }} ago, more than "
                f"{limits.stale_after_rounds} round intervals of "
                f"{limits.round_interval_seconds}s."
            ),
        ),
        AlertRule(
            alert="PveRebalancerAbsent",
            expr=f'absent(pve_rebalancer_up{{job="{limits.job}"}})',
            for_=limits.absent_for,
            severity="critical",
            summary="pve-rebalancer metrics are missing",
            description=(
                f'No pve_rebalancer_up series from job "{limits.job}" for {limits.absent_for}: '
                "the service is down or Prometheus cannot scrape it."
            ),
        ),
        AlertRule(
            alert="PveRebalancerMigrationsFailing",
            expr=failures,
            severity="warning",
            summary="pve-rebalancer migrations are failing",
            description=(
                "{{ $value | humanize }} {{ $labels.type }} migration(s) started by the "
                f"rebalancer on {{{{ $labels.instance }}}} failed in the last "
                f"{limits.migration_failure_window}."
            ),
        ),
    ]


def rule_groups(limits: Thresholds) -> dict[str, Any]:
    """The whole rule file as a mapping, ready to dump as YAML."""
    return {
        "groups": [
            {
                "name": RECORDING_GROUP,
                "rules": [rule.to_dict() for rule in recording_rules()],
            },
            {
                "name": ALERTING_GROUP,
                "rules": [rule.to_dict(limits.runbook_url) for rule in alert_rules(limits)],
            },
        ]
    }
