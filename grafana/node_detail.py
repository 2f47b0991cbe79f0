"""The node detail dashboard: one node's load (raw against smoothed), its capacity, and the
planned moves into and out of it.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import dashboard as models

from grafana.panels import (
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

UID = "pve-rebalancer-node"
TITLE = "PVE rebalancer / Node detail"
NODE_MATCH = f"{JOB}, {NODE}"
RESOURCES = (("cpu", "CPU"), ("memory", "Memory"), ("combined", "Combined"))


def load_expr(resource: str, view: str) -> str:
    return f'pve_rebalancer_node_load_ratio{{{NODE_MATCH}, resource="{resource}", view="{view}"}}'


def summary_row(board: dash.Dashboard) -> dash.Dashboard:
    usable = value_text({"0": ("NOT USABLE", "red"), "1": ("USABLE", "green")})
    return (
        board.with_row(dash.Row("$node"))
        .with_panel(
            stat_panel("Usable", "Online and not in maintenance: may receive guests.", "none")
            .with_target(query(f"pve_rebalancer_node_usable{{{NODE_MATCH}}}", "{{node}}"))
            .mappings(usable)
            .span(6)
            .height(4)
        )
        .with_panel(
            stat_panel("CPU cores", "maxcpu: the node's cores.", "none")
            .with_target(
                query(f"pve_rebalancer_node_cpu_capacity_cores{{{NODE_MATCH}}}", "{{node}}")
            )
            .span(6)
            .height(4)
        )
        .with_panel(
            stat_panel("Memory size", "maxmem: the node's memory.", "bytes")
            .with_target(
                query(f"pve_rebalancer_node_memory_capacity_bytes{{{NODE_MATCH}}}", "{{node}}")
            )
            .span(6)
            .height(4)
        )
        .with_panel(
            stat_panel("Combined load now", "Current combined load (smoothed).", "percentunit")
            .with_target(query(load_expr("combined", "smoothed"), "{{node}}"))
            .thresholds(thresholds(*LOAD_THRESHOLDS))
            .decimals(1)
            .span(6)
            .height(4)
        )
    )


def load_row(board: dash.Dashboard) -> dash.Dashboard:
    board = board.with_row(dash.Row("Load: raw against smoothed"))
    for resource, label in RESOURCES:
        board = board.with_panel(
            timeseries_panel(
                f"{label} load",
                f"The node's {resource} load as measured (raw) and as the balancer sees it "
                "(smoothed), against the cluster average.",
                "percentunit",
            )
            .with_target(query(load_expr(resource, "raw"), "raw {{node}}"))
            .with_target(query(load_expr(resource, "smoothed"), "smoothed {{node}}"))
            .with_target(query(node_load_spread("avg", resource), "cluster average"))
            .override_by_name(
                "cluster average",
                [
                    models.DynamicConfigValue(
                        "custom.lineStyle",
                        common_builders.LineStyle().fill("dash").dash([10, 10]).build(),
                    ),
                    models.DynamicConfigValue("custom.fillOpacity", 0),
                ],
            )
            .min(0)
            .span(8)
            .height(9)
        )
    return board


def capacity_row(board: dash.Dashboard) -> dash.Dashboard:
    return (
        board.with_row(dash.Row("Capacity"))
        .with_panel(
            timeseries_panel("CPU capacity", "maxcpu over time.", "none")
            .with_target(
                query(f"pve_rebalancer_node_cpu_capacity_cores{{{NODE_MATCH}}}", "{{node}}")
            )
            .min(0)
            .span(12)
            .height(7)
        )
        .with_panel(
            timeseries_panel("Memory capacity", "maxmem over time.", "bytes")
            .with_target(
                query(f"pve_rebalancer_node_memory_capacity_bytes{{{NODE_MATCH}}}", "{{node}}")
            )
            .min(0)
            .span(12)
            .height(7)
        )
    )


def moves_table(direction: str, title: str) -> table.Panel:
    """Planned moves whose ``direction`` label (source or target) is the selected node."""
    match = f'{JOB}, {direction}=~"$node"'

    def move_metric(name: str) -> str:
        return with_guest_name(f"pve_rebalancer_recommended_move_{name}{{{match}}}")

    columns = ["rank", "sid", "name", "source", "target", "Value #B", "Value #C", "id", "job"]
    return (
        table_panel(title, f"Planned moves with {direction} = the selected node.")
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
        .span(12)
        .height(8)
    )


def moves_row(board: dash.Dashboard) -> dash.Dashboard:
    def planned(direction: str) -> str:
        moves = f'pve_rebalancer_recommended_move_info{{{JOB}, {direction}=~"$node"}}'
        return f"count by (job) ({moves}) or sum by (job) (pve_rebalancer_up{{{JOB}}}) * 0"

    return (
        board.with_row(dash.Row("Planned moves"))
        .with_panel(moves_table("source", "Moves out of this node"))
        .with_panel(moves_table("target", "Moves into this node"))
        .with_panel(
            timeseries_panel(
                "Planned moves touching this node",
                "Moves in the plan leaving and entering the node, over time.",
                "none",
            )
            .with_target(query(planned("source"), "out of {{job}}"))
            .with_target(query(planned("target"), "into {{job}}"))
            .min(0)
            .decimals(0)
            .span(24)
            .height(7)
        )
    )


def build() -> models.Dashboard:
    return dashboard(
        TITLE,
        UID,
        "One node's load, capacity and planned moves.",
        multi_node=False,
        rows=(summary_row, load_row, capacity_row, moves_row),
    )
