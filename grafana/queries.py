"""Every PromQL expression the dashboards run, with the template variables filled in.

For checks outside Grafana: parsing the expressions with promtool, or running them against a
live Prometheus that scrapes the service (the lead's integration test). Reads the committed
dashboard JSON, so it checks what Grafana will actually load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana.generate import DASHBOARD_DIR

DEFAULT_VALUES: Mapping[str, str] = {
    "datasource": "prometheus",
    "job": ".+",
    "node": ".+",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
}
"""Concrete values for the dashboards' variables and the Grafana built-ins they use."""

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


@dataclass(frozen=True, slots=True)
class PanelQuery:
    dashboard: str
    """The dashboard's uid."""
    panel: str
    """The panel's title."""
    ref_id: str
    expr: str
    """The PromQL with every variable substituted."""


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace ``$name`` and ``${name}`` by ``values[name]``; unknown names raise KeyError."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(
    dashboard: Mapping[str, Any], values: Mapping[str, str] = DEFAULT_VALUES
) -> list[PanelQuery]:
    """The queries of one dashboard (parsed JSON), variables substituted by ``values``."""
    return [
        PanelQuery(
            dashboard=str(dashboard["uid"]),
            panel=str(panel.get("title", "")),
            ref_id=str(target.get("refId", "")),
            expr=substitute(str(target["expr"]), values),
        )
        for panel in _panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def panel_queries(
    *,
    job: str = DEFAULT_VALUES["job"],
    node: str = DEFAULT_VALUES["node"],
    datasource: str = DEFAULT_VALUES["datasource"],
    rate_interval: str = DEFAULT_VALUES["__rate_interval"],
    directory: Path = DASHBOARD_DIR,
) -> list[PanelQuery]:
    """Every (dashboard, panel title, expr) of the committed dashboards, ready to run.

    ``job`` and ``node`` are regular expressions (the dashboards match them with ``=~``).
    """
    values = {
        **DEFAULT_VALUES,
        "datasource": datasource,
        "job": job,
        "node": node,
        "__rate_interval": rate_interval,
    }
    queries: list[PanelQuery] = []
    for path in sorted(directory.glob("*.json")):
        queries.extend(dashboard_queries(json.loads(path.read_text(encoding="utf-8")), values))
    return queries
