"""The generated Grafana dashboards: current with the code, wired to the template variables,
every expression valid PromQL naming only catalogue metrics, and the optional name join with
prometheus-pve-exporter proven (with promtool) to work with and without that exporter."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana import generate
from grafana.catalogue import EXTERNAL_METRICS, METRICS, exposed_series_names
from grafana.queries import DEFAULT_VALUES, dashboard_queries, panel_queries, substitute
from prometheus.queries import recorded_names

DASHBOARDS = {
    path.name: json.loads(path.read_text(encoding="utf-8"))
    for path in sorted(generate.DASHBOARD_DIR.glob("*.json"))
}
OVERVIEW = DASHBOARDS["pve-rebalancer-overview.json"]
NODE_DETAIL = DASHBOARDS["pve-rebalancer-node.json"]
RULES_FILE = (
    Path(generate.__file__).resolve().parents[1] / "prometheus/rules/pve-rebalancer.rules.yml"
)
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC_NAME = re.compile(r"\b(pve_[a-z0-9_]+|[a-z_]+:[a-z0-9_]+:[a-z0-9_]+)\b")


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    (found,) = [p for p in data_panels(dashboard) if p["title"] == title]
    return found


def test_committed_json_matches_the_generator():
    assert set(DASHBOARDS) == set(generate.BUILDERS)
    assert generate.stale_files() == []
    assert generate.main(["--check"]) == 0


def test_check_reports_stale_and_missing_files(tmp_path, capsys):
    assert generate.main(["--out", str(tmp_path)]) == 0
    overview = tmp_path / "pve-rebalancer-overview.json"
    overview.write_text(overview.read_text().replace("Imbalance", "Imbalanse"))
    (tmp_path / "pve-rebalancer-node.json").unlink()
    assert sorted(generate.stale_files(tmp_path)) == sorted(generate.BUILDERS)
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1
    assert "pve-rebalancer-overview.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name):
    dashboard = DASHBOARDS[name]
    assert dashboard["uid"] == name.removesuffix(".json")
    assert dashboard["title"].startswith("PVE rebalancer / ")
    ids = [p["id"] for p in dashboard["panels"]]
    titles = [p["title"] for p in data_panels(dashboard)]
    assert len(titles) == len(set(titles)), "panel titles must be unique"
    assert ids == list(range(1, len(ids) + 1))
    for p in data_panels(dashboard):
        assert p["title"], f"{name}: panel {p['id']} has no title"
        assert p["targets"], f"{name}: {p['title']} has no query"
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        ref_ids = [t["refId"] for t in p["targets"]]
        assert ref_ids == [chr(ord("A") + i) for i in range(len(ref_ids))]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_and_query_uses_the_datasource_variable(name):
    for p in data_panels(DASHBOARDS[name]):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for target in p["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", p["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_template_variables(name):
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "node"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for query_variable in ("job", "node"):
        assert variables[query_variable]["type"] == "query"
        assert variables[query_variable]["datasource"]["uid"] == "${datasource}"
    assert variables["job"]["query"] == "label_values(pve_rebalancer_up, job)"
    assert (
        variables["node"]["query"]
        == 'label_values(pve_rebalancer_node_load_ratio{job=~"$job"}, node)'
    )


def test_node_variable_is_single_choice_on_the_node_dashboard():
    variables = {v["name"]: v for v in NODE_DETAIL["templating"]["list"]}
    assert variables["node"]["multi"] is False
    assert variables["node"]["includeAll"] is False


def test_every_query_filters_on_the_job_variable():
    for dashboard in DASHBOARDS.values():
        for p in data_panels(dashboard):
            for target in p["targets"]:
                assert 'job=~"$job"' in target["expr"], (p["title"], target["expr"])


def test_overview_has_the_required_views():
    types = {p["type"] for p in data_panels(OVERVIEW)}
    assert {"timeseries", "heatmap", "state-timeline", "table", "stat"} <= types
    exprs = " ".join(t["expr"] for p in data_panels(OVERVIEW) for t in p["targets"])
    for needle in (
        "pve_rebalancer_imbalance_threshold_ratio",
        "histogram_quantile(0.99",
        "rate(pve_rebalancer_migrations_failed_total",
        "time() - pve_rebalancer_last_success_timestamp_seconds",
        "pve_rebalancer_data_issues",
        "pve_rebalancer_up",
    ):
        assert needle in exprs
    moves = panel(OVERVIEW, "Recommended moves")
    assert moves["type"] == "table"
    move_metrics = [
        "pve_rebalancer_recommended_move_info",
        "pve_rebalancer_recommended_move_cost_seconds",
        "pve_rebalancer_recommended_move_imbalance_after_ratio",
    ]
    for target, metric in zip(moves["targets"], move_metrics, strict=True):
        assert target["expr"].startswith(f"({metric}{{")
        assert target["instant"] is True
        assert target["format"] == "table"
    assert [t["id"] for t in moves["transformations"]] == ["merge", "organize"]


def test_node_detail_shows_raw_and_smoothed_load_per_resource():
    for title, resource in (("CPU load", "cpu"), ("Memory load", "memory")):
        exprs = [t["expr"] for t in panel(NODE_DETAIL, title)["targets"]]
        for view in ("raw", "smoothed"):
            assert any(f'resource="{resource}", view="{view}"' in e for e in exprs)
        assert all('node=~"$node"' in e for e in exprs[:2])
    directions = {
        "Moves out of this node": 'source=~"$node"',
        "Moves into this node": 'target=~"$node"',
    }
    for title, matcher in directions.items():
        assert all(matcher in t["expr"] for t in panel(NODE_DETAIL, title)["targets"])


def test_every_referenced_metric_exists():
    known = exposed_series_names() | EXTERNAL_METRICS | set(recorded_names())
    referenced: set[str] = set()
    for query in panel_queries():
        names = set(_METRIC_NAME.findall(_STRING_LITERAL.sub('""', query.expr)))
        assert names, f"{query.panel}: no metric found in {query.expr!r}"
        unknown = names - known
        assert not unknown, f"{query.dashboard} / {query.panel}: unknown metric(s) {unknown}"
        referenced |= names
    catalogue = {metric.name for metric in METRICS}
    assert len(catalogue & referenced) >= 20
    assert "pve_guest_info" in referenced


def test_every_expression_parses_with_promtool(tmp_path):
    queries = panel_queries()
    assert len(queries) > 40
    rules = [
        {"record": f"dashboard:query_{index}:expr", "expr": query.expr}
        for index, query in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_parse_check_rejects_a_broken_expression(tmp_path):
    path = tmp_path / "broken.yml"
    rule = {"record": "dashboard:broken:expr", "expr": "sum by (job (pve_rebalancer_up)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": [rule]}]}))
    assert promtool("check", "rules", path).returncode != 0


def test_substitution():
    assert substitute('x{job=~"$job", node=~"${node}"}[$__rate_interval]', DEFAULT_VALUES) == (
        'x{job=~".+", node=~".+"}[5m]'
    )
    with pytest.raises(KeyError, match=r"\$cluster"):
        substitute('x{cluster="$cluster"}', DEFAULT_VALUES)
    for query in panel_queries():
        assert "$" not in query.expr, query
    for query in panel_queries(job="pve-rebalancer", node="pve1", rate_interval="2m"):
        assert 'job=~"pve-rebalancer"' in query.expr
        assert "$" not in query.expr
    node_queries = dashboard_queries(NODE_DETAIL, {**DEFAULT_VALUES, "node": "pve1"})
    assert {q.dashboard for q in node_queries} == {"pve-rebalancer-node"}
    assert sum('node=~"pve1"' in q.expr for q in node_queries) >= 8


def _eval_with_promtool(
    tmp_path: Path, series: list[dict[str, str]], cases: list[dict[str, object]]
):
    shutil.copy(RULES_FILE, tmp_path / "rules.yml")
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": cases}],
    }
    path = tmp_path / "queries.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return promtool("test", "rules", path)


MOVE = 'job="pve-rebalancer", instance="rb:9878"'
MOVE_SERIES = [
    {
        "series": f'pve_rebalancer_recommended_move_cost_seconds{{{MOVE}, rank="1", id="qemu/100", '
        'sid="vm:100", source="pve1", target="pve2"}',
        "values": "42x10",
    },
    {
        "series": f'pve_rebalancer_recommended_move_cost_seconds{{{MOVE}, rank="2", id="lxc/200", '
        'sid="ct:200", source="pve1", target="pve3"}',
        "values": "7x10",
    },
]
MOVE_LABELS = [
    'rank="1", id="qemu/100", sid="vm:100", source="pve1", target="pve2"',
    'rank="2", id="lxc/200", sid="ct:200", source="pve1", target="pve3"',
]


def _cost_query() -> str:
    (target,) = [
        t["expr"]
        for t in panel(OVERVIEW, "Recommended moves")["targets"]
        if "cost_seconds" in t["expr"]
    ]
    return substitute(target, DEFAULT_VALUES)


def test_move_table_adds_guest_names_when_pve_exporter_is_scraped(tmp_path):
    guest_info = [
        # Two pve-exporter instances report the same guest: the join must not duplicate it.
        {
            "series": f'pve_guest_info{{job="pve", instance="{host}", id="qemu/100", name="db1", '
            'node="pve1", type="qemu"}',
            "values": "1x10",
        }
        for host in ("pve1", "pve2")
    ]
    expected = [
        {"labels": f'{{{MOVE}, {MOVE_LABELS[0]}, name="db1"}}', "value": 42},
        # lxc/200 has no info series: it is still listed, without a name.
        {
            "labels": f"pve_rebalancer_recommended_move_cost_seconds{{{MOVE}, {MOVE_LABELS[1]}}}",
            "value": 7,
        },
    ]
    result = _eval_with_promtool(
        tmp_path,
        MOVE_SERIES + guest_info,
        [{"expr": _cost_query(), "eval_time": "5m", "exp_samples": expected}],
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_move_table_works_without_pve_exporter(tmp_path):
    expected = [
        {"labels": f"pve_rebalancer_recommended_move_cost_seconds{{{MOVE}, {labels}}}", "value": v}
        for labels, v in zip(MOVE_LABELS, (42, 7), strict=True)
    ]
    result = _eval_with_promtool(
        tmp_path, MOVE_SERIES, [{"expr": _cost_query(), "eval_time": "5m", "exp_samples": expected}]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_load_spread_reads_recorded_series_or_falls_back(tmp_path):
    (spread_max, *_rest) = [
        substitute(t["expr"], DEFAULT_VALUES)
        for t in panel(OVERVIEW, "Node load spread")["targets"]
    ]
    series = [
        {
            "series": f'pve_rebalancer_node_load_ratio{{{MOVE}, id="node/{node}", node="{node}", '
            'resource="combined", view="raw"}',
            "values": f"{load}x10",
        }
        for node, load in (("pve1", 0.8), ("pve2", 0.2))
    ]
    labels = '{job="pve-rebalancer", resource="combined", view="raw"}'
    recorded = f"job_resource_view:pve_rebalancer_node_load_ratio:max{labels}"
    # With the rules loaded the recorded series answers; without them the raw aggregation,
    # which has the same labels but no metric name. Either way exactly one series, 0.8.
    with_rules = _eval_with_promtool(
        tmp_path,
        series,
        [
            {
                "expr": spread_max,
                "eval_time": "5m",
                "exp_samples": [{"labels": recorded, "value": 0.8}],
            }
        ],
    )
    assert with_rules.returncode == 0, with_rules.stdout + with_rules.stderr
    raw_part = spread_max.split(" or ", 1)[1]
    without_rules = _eval_with_promtool(
        tmp_path,
        series,
        [
            {
                "expr": raw_part,
                "eval_time": "5m",
                "exp_samples": [
                    {
                        "labels": '{job="pve-rebalancer", resource="combined", view="raw"}',
                        "value": 0.8,
                    }
                ],
            }
        ],
    )
    assert without_rules.returncode == 0, without_rules.stdout + without_rules.stderr


def test_metrics_reference_documents_the_whole_catalogue():
    docs = (Path(generate.__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    for metric in METRICS:
        assert f"| `{metric.name}` | {metric.type}" in docs, metric.name
    for name in recorded_names():
        assert f"`{name}`" in docs, name
