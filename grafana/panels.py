"""Building blocks shared by the pve-rebalancer dashboards.

Wraps grafana-foundation-sdk builders so every panel and query points at the ``$datasource``
variable, every query gets a stable refId, and the PromQL idioms (job/node filters, the optional
name join with prometheus-pve-exporter) are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE_VARIABLE = "datasource"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${" + DATASOURCE_VARIABLE + "}")

JOB = 'job=~"$job"'
"""Label matcher every expression carries; ``$job`` is multi-valued, so always a regex."""
NODE = 'node=~"$node"'

MOVE_MATCH_LABELS = "job, instance, rank, id"
"""Labels that identify one planned move; used to de-duplicate the optional name join."""


ALL_SELECTED = models.VariableOption(selected=True, text="All", value="$__all")


def datasource_variable() -> dash.DatasourceVariable:
    return dash.DatasourceVariable(DATASOURCE_VARIABLE).label("Data source").type("prometheus")


def job_variable() -> dash.QueryVariable:
    return (
        dash.QueryVariable("job")
        .label("Job")
        .datasource(DATASOURCE)
        .query("label_values(pve_rebalancer_up, job)")
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .current(ALL_SELECTED)
    )


def node_variable(*, multi: bool) -> dash.QueryVariable:
    variable = (
        dash.QueryVariable("node")
        .label("Node")
        .datasource(DATASOURCE)
        .query(f"label_values(pve_rebalancer_node_load_ratio{{{JOB}}}, node)")
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.NATURAL_ASC)
        .multi(multi)
        .include_all(multi)
    )
    return variable.all_value(".+").current(ALL_SELECTED) if multi else variable


def query(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        target = target.legend_format(legend)
    if instant:
        target = target.instant().format(PromQueryFormat.TABLE)
    return target


def with_guest_name(expr: str) -> str:
    """Add prometheus-pve-exporter's guest ``name`` label when it is scraped, else keep ``expr``.

    ``max by (id, name)`` collapses duplicates when several pve-exporter instances scrape the
    same cluster; the ``or on(...)`` keeps moves whose guest has no info series (or every move,
    when the pve-exporter is not there at all) without listing a joined move twice.
    """
    named = f"{expr} * on(id) group_left(name) max by (id, name) (pve_guest_info)"
    return f"({named}) or on({MOVE_MATCH_LABELS}) {expr}"


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=color) for value, color in steps])
    )


LOAD_THRESHOLDS = ((None, "green"), (0.7, "yellow"), (0.85, "orange"), (0.95, "red"))


def legend_table() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max", "mean"])
    )


def timeseries_panel(title: str, description: str, unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .legend(legend_table())
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )


def stat_panel(title: str, description: str, unit: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )


def value_text(mapping: dict[str, tuple[str, str]]) -> list[models.ValueMapping]:
    """Value mappings ``{"1": ("UP", "green")}`` for stat and state-timeline panels."""
    options = {
        value: models.ValueMappingResult(text=text, color=color, index=index)
        for index, (value, (text, color)) in enumerate(mapping.items())
    }
    return [models.ValueMap(options=options)]


def table_panel(title: str, description: str) -> table.Panel:
    return (
        table.Panel().title(title).description(description).datasource(DATASOURCE).show_header(True)
    )


def merge_and_tidy(
    renames: dict[str, str], order: list[str], hide: tuple[str, ...] = ()
) -> list[models.DataTransformerConfig]:
    """Merge instant table queries on their shared labels, hide plumbing, rename value columns."""
    hidden = dict.fromkeys(("Time", "__name__", "instance", *hide), True)
    return [
        models.DataTransformerConfig(id_val="merge", options={}),
        models.DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": hidden,
                "renameByName": renames,
                "indexByName": {name: index for index, name in enumerate(order)},
            },
        ),
    ]


def assign_ids(built: models.Dashboard) -> models.Dashboard:
    """Give every panel a stable id (1, 2, ...) and every query a refId (A, B, ...)."""
    for panel_id, panel in enumerate(built.panels or [], start=1):
        panel.id_val = panel_id
        if isinstance(panel, models.Panel):
            for index, target in enumerate(panel.targets or []):
                if isinstance(target, prometheus_models.Dataquery):
                    target.ref_id = chr(ord("A") + index)
    return built


def dashboard(
    title: str,
    uid: str,
    description: str,
    *,
    multi_node: bool,
    rows: Sequence[Callable[[dash.Dashboard], dash.Dashboard]],
) -> models.Dashboard:
    """A pve-rebalancer dashboard: common header and variables, then ``rows`` in order."""
    board = (
        dash.Dashboard(title)
        .uid(uid)
        .tags(["pve-rebalancer", "proxmox"])
        .description(description)
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
        .with_variable(job_variable())
        .with_variable(node_variable(multi=multi_node))
    )
    for add_row in rows:
        board = add_row(board)
    return assign_ids(board.build())


def node_load_spread(aggregate: str, resource: str = "combined") -> str:
    """Recorded max/min/avg node load per job, or the same aggregation computed on the fly."""
    selector = f'{JOB}, resource="{resource}", view="raw"'
    recorded = f"job_resource_view:pve_rebalancer_node_load_ratio:{aggregate}{{{selector}}}"
    raw = f"{aggregate} by (job, resource, view) (pve_rebalancer_node_load_ratio{{{selector}}})"
    return f"{recorded} or {raw}"
