"""The cluster overview dashboard: is the cluster balanced, what would the rebalancer do, is the
rebalancer itself healthy.

Panels that recording rules make cheaper read the recorded series first and fall back to the raw
expression (``or``), so the dashboard also works where prometheus/rules is not loaded.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, statetimeline
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models

from grafana.panels import (
    DATASOURCE,
    JOB,
    LOAD_THRESHOLDS,
    NODE,
    dashboard,
    merge_and_tidy,
    node_load_spread,
    query,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
    value_text,
    with_guest_name,
)

UID = "pve-rebalancer-overview"
TITLE = "PVE rebalancer / Cluster overview"
RATE = "$__rate_interval"
MIGRATION_OUTCOMES = ("started", "succeeded", "failed")


def status_row(board: dash.Dashboard) -> dash.Dashboard:
    up_down = value_text({"0": ("DOWN", "red"), "1": ("UP", "green")})
    on_off = value_text({"0": ("OFF (advice only)", "blue"), "1": ("ON", "green")})
    return (
        board.with_row(dash.Row("Status"))
        .with_panel(
            stat_panel("Rebalancer up", "1 when the last round succeeded.", "none")
            .with_target(query(f"pve_rebalancer_up{{{JOB}}}", "{{instance}}"))
            .mappings(up_down)
            .span(4)
            .height(4)
        )
        .with_panel(
            stat_panel(
                "Last successful round",
                "Seconds since the last round that completed without error.",
                "s",
            )
            .with_target(
                query(
                    f"time() - pve_rebalancer_last_success_timestamp_seconds{{{JOB}}}",
                    "{{instance}}",
                )
            )
            .thresholds(thresholds((None, "green"), (300, "orange"), (900, "red")))
            .span(4)
            .height(4)
        )
        .with_panel(
            stat_panel("Imbalance", "CV/sqrt(n-1) of the node loads (0..1).", "percentunit")
            .with_target(query(f"pve_rebalancer_imbalance_ratio{{{JOB}}}", "{{instance}}"))
            .thresholds(thresholds((None, "green"), (0.3, "orange"), (0.6, "red")))
            .decimals(1)
            .span(4)
            .height(4)
        )
        .with_panel(
            stat_panel(
                "Hold counter",
                "Consecutive rounds above the threshold, of the rounds required before acting.",
                "none",
            )
            .with_target(query(f"pve_rebalancer_rounds_above_threshold{{{JOB}}}", "above"))
            .with_target(query(f"pve_rebalancer_hold_duration_rounds{{{JOB}}}", "required"))
            .span(4)
            .height(4)
        )
        .with_panel(
            stat_panel("Planned moves", "Moves in the current plan.", "none")
            .with_target(query(f"pve_rebalancer_recommended_moves{{{JOB}}}", "{{instance}}"))
            .span(4)
            .height(4)
        )
        .with_panel(
            stat_panel(
                "Automation",
                "Whether the actuator may carry out moves, or only recommends them.",
                "none",
            )
            .with_target(query(f"pve_rebalancer_automation_enabled{{{JOB}}}", "{{instance}}"))
            .mappings(on_off)
            .span(4)
            .height(4)
        )
    )


def imbalance_row(board: dash.Dashboard) -> dash.Dashboard:
    dashed = common_builders.LineStyle().fill("dash").dash([10, 10])
    return (
        board.with_row(dash.Row("Imbalance"))
        .with_panel(
            timeseries_panel(
                "Imbalance against threshold",
                "Cluster imbalance, the threshold in force, and the imbalance expected once "
                "the recommended plan is carried out.",
                "percentunit",
            )
            .with_target(query(f"pve_rebalancer_imbalance_ratio{{{JOB}}}", "imbalance"))
            .with_target(query(f"pve_rebalancer_imbalance_threshold_ratio{{{JOB}}}", "threshold"))
            .with_target(query(f"pve_rebalancer_imbalance_after_plan_ratio{{{JOB}}}", "after plan"))
            .override_by_name(
                "threshold",
                [
                    models.DynamicConfigValue(id_val="custom.lineStyle", value=dashed.build()),
                    models.DynamicConfigValue(
                        id_val="color", value={"mode": "fixed", "fixedColor": "red"}
                    ),
                    models.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
                ],
            )
            .min(0)
            .span(16)
            .height(9)
        )
        .with_panel(
            timeseries_panel(
                "Trigger and hold counter",
                "Rounds above the threshold, the rounds required before acting, and whether "
                "this round's trigger fired.",
                "none",
            )
            .with_target(query(f"pve_rebalancer_rounds_above_threshold{{{JOB}}}", "above"))
            .with_target(query(f"pve_rebalancer_hold_duration_rounds{{{JOB}}}", "required"))
            .with_target(query(f"pve_rebalancer_triggered{{{JOB}}}", "triggered"))
            .min(0)
            .span(8)
            .height(9)
        )
    )


def node_load_row(board: dash.Dashboard) -> dash.Dashboard:
    combined = f'pve_rebalancer_node_load_ratio{{{JOB}, {NODE}, resource="combined", view="raw"}}'
    return (
        board.with_row(dash.Row("Node load"))
        .with_panel(
            timeseries_panel(
                "Node combined load",
                "(cpu/maxcpu + mem/maxmem) / 2 per node, as the CRS counts it.",
                "percentunit",
            )
            .with_target(query(combined, "{{node}}"))
            .min(0)
            .span(12)
            .height(9)
        )
        .with_panel(
            timeseries_panel(
                "Node load spread",
                "Highest, average and lowest combined node load (recording rules).",
                "percentunit",
            )
            .with_target(query(node_load_spread("max"), "max"))
            .with_target(query(node_load_spread("avg"), "avg"))
            .with_target(query(node_load_spread("min"), "min"))
            .min(0)
            .span(12)
            .height(9)
        )
        .with_panel(
            statetimeline.Panel()
            .title("Node combined load timeline")
            .description("Each node's combined load over time, coloured by level.")
            .datasource(DATASOURCE)
            .with_target(query(combined, "{{node}}"))
            .unit("percentunit")
            .thresholds(thresholds(*LOAD_THRESHOLDS))
            .color_scheme(dash.FieldColor().mode(models.FieldColorModeId.THRESHOLDS))
            .show_value(common.VisibilityMode.NEVER)
            .merge_values(False)
            .span(12)
            .height(9)
        )
        .with_panel(
            heatmap.Panel()
            .title("Node load distribution")
            .description("How the nodes' combined loads spread over time (darker = more nodes).")
            .datasource(DATASOURCE)
            .with_target(query(combined, "{{node}}"))
            .calculate(True)
            .unit("percentunit")
            .span(12)
            .height(9)
        )
        .with_panel(
            timeseries_panel("Node CPU load", "CPU in use / maxcpu per node.", "percentunit")
            .with_target(
                query(
                    f'pve_rebalancer_node_load_ratio{{{JOB}, {NODE}, resource="cpu", view="raw"}}',
                    "{{node}}",
                )
            )
            .min(0)
            .span(12)
            .height(8)
        )
        .with_panel(
            timeseries_panel("Node memory load", "Memory in use / maxmem per node.", "percentunit")
            .with_target(
                query(
                    f'pve_rebalancer_node_load_ratio{{{JOB}, {NODE}, resource="memory", '
                    'view="raw"}',
                    "{{node}}",
                )
            )
            .min(0)
            .span(12)
            .height(8)
        )
    )


def moves_row(board: dash.Dashboard) -> dash.Dashboard:
    def move_metric(name: str) -> str:
        return with_guest_name(f"pve_rebalancer_recommended_move_{name}{{{JOB}}}")

    columns = ["rank", "sid", "name", "source", "target", "Value #B", "Value #C", "id", "job"]
    return (
        board.with_row(dash.Row("Recommended moves"))
        .with_panel(
            table_panel(
                "Recommended moves",
                "The current plan in execution order, with the estimated duration of each "
                "move and the imbalance expected once it and every earlier move is done. "
                "Guest names come from prometheus-pve-exporter when it is scraped.",
            )
            .with_target(query(move_metric("info"), instant=True))
            .with_target(query(move_metric("cost_seconds"), instant=True))
            .with_target(query(move_metric("imbalance_after_ratio"), instant=True))
            .transformations(
                merge_and_tidy(
                    {"Value #B": "Cost", "Value #C": "Imbalance after"}, columns, ("Value #A",)
                )
            )
            .override_by_name("Cost", [models.DynamicConfigValue("unit", "s")])
            .override_by_name("Imbalance after", [models.DynamicConfigValue("unit", "percentunit")])
            .sort_by([common_builders.TableSortByFieldState().display_name("rank")])
            .span(16)
            .height(9)
        )
        .with_panel(
            timeseries_panel(
                "Planned moves over time",
                "Planned moves over time (recording rule, or counted on the fly).",
                "none",
            )
            .with_target(
                query(
                    f"job:pve_rebalancer_recommended_move_info:count{{{JOB}}} or "
                    f"count by (job) (pve_rebalancer_recommended_move_info{{{JOB}}})",
                    "{{job}}",
                )
            )
            .min(0)
            .decimals(0)
            .span(8)
            .height(9)
        )
    )


def migrations_row(board: dash.Dashboard) -> dash.Dashboard:
    rates = timeseries_panel(
        "Migrations per minute",
        "Migrations the actuator started, and how they ended, by guest type.",
        "opm",
    )
    for outcome in MIGRATION_OUTCOMES:
        rates = rates.with_target(
            query(
                f"sum by (type) (rate(pve_rebalancer_migrations_{outcome}_total{{{JOB}}}[{RATE}]))"
                " * 60",
                f"{outcome} {{{{type}}}}",
            )
        )
    failed = f"sum(increase(pve_rebalancer_migrations_failed_total{{{JOB}}}[$__range]))"
    started = f"sum(increase(pve_rebalancer_migrations_started_total{{{JOB}}}[$__range]))"
    return (
        board.with_row(dash.Row("Migrations"))
        .with_panel(rates.min(0).span(16).height(8))
        .with_panel(
            stat_panel(
                "Failed migrations (time range)",
                "Failed migrations as a share of those started in the selected time range.",
                "percentunit",
            )
            .with_target(query(f"{failed} / {started}", "failed share"))
            .thresholds(thresholds((None, "green"), (0.01, "orange"), (0.2, "red")))
            .no_value("no migrations")
            .span(8)
            .height(8)
        )
    )


def rounds_row(board: dash.Dashboard) -> dash.Dashboard:
    buckets = (
        f"sum by (le, job) (rate(pve_rebalancer_round_duration_seconds_bucket{{{JOB}}}[{RATE}]))"
    )
    duration = timeseries_panel(
        "Round duration", "Quantiles of the wall time of a balancing round.", "s"
    )
    for quantile in ("0.5", "0.9", "0.99"):
        duration = duration.with_target(
            query(f"histogram_quantile({quantile}, {buckets})", f"p{quantile[2:]} {{{{job}}}}")
        )
    mean = (
        f"sum by (job) (rate(pve_rebalancer_round_duration_seconds_sum{{{JOB}}}[{RATE}])) / "
        f"sum by (job) (rate(pve_rebalancer_round_duration_seconds_count{{{JOB}}}[{RATE}]))"
    )
    return (
        board.with_row(dash.Row("Rounds"))
        .with_panel(duration.with_target(query(mean, "mean {{job}}")).min(0).span(8).height(8))
        .with_panel(
            timeseries_panel("Rounds per minute", "Rounds run, and rounds that failed.", "opm")
            .with_target(
                query(
                    f"sum by (job) (rate(pve_rebalancer_rounds_total{{{JOB}}}[{RATE}])) * 60",
                    "rounds {{job}}",
                )
            )
            .with_target(
                query(
                    f"sum by (job) (rate(pve_rebalancer_round_failures_total{{{JOB}}}[{RATE}]))"
                    " * 60",
                    "failures {{job}}",
                )
            )
            .min(0)
            .span(8)
            .height(8)
        )
        .with_panel(
            timeseries_panel(
                "Last successful round age",
                "Seconds since the last good round; grows while rounds fail or stop.",
                "s",
            )
            .with_target(
                query(
                    f"time() - pve_rebalancer_last_success_timestamp_seconds{{{JOB}}}",
                    "{{instance}}",
                )
            )
            .min(0)
            .span(8)
            .height(8)
        )
    )


def data_quality_row(board: dash.Dashboard) -> dash.Dashboard:
    by_kind = f"sum by (kind, severity) (pve_rebalancer_data_issues{{{JOB}}})"
    return (
        board.with_row(dash.Row("Data quality"))
        .with_panel(
            timeseries_panel(
                "Data-quality findings",
                "Findings in the last snapshot by kind and severity (bad RRD files, config "
                "lines the collector could not read, guests without data, ...).",
                "none",
            )
            .with_target(query(by_kind, "{{kind}} ({{severity}})"))
            .draw_style(common.GraphDrawStyle.BARS)
            .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
            .min(0)
            .decimals(0)
            .span(16)
            .height(8)
        )
        .with_panel(
            table_panel("Current findings", "Findings in the last snapshot.")
            .with_target(query(f"{by_kind} > 0", instant=True))
            .transformations(merge_and_tidy({"Value": "Findings"}, ["kind", "severity", "Value"]))
            .span(8)
            .height(8)
        )
    )


def build() -> models.Dashboard:
    return dashboard(
        TITLE,
        UID,
        "Cluster balance, the rebalancer's plan, migrations and its own health.",
        multi_node=True,
        rows=(
            status_row,
            imbalance_row,
            node_load_row,
            moves_row,
            migrations_row,
            rounds_row,
            data_quality_row,
        ),
    )
