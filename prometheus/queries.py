"""Every expression in the committed rules file, for checks outside promtool (e.g. running them
against a live Prometheus that scrapes the service)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from prometheus.generate import RULES_PATH


@dataclass(frozen=True, slots=True)
class RuleExpression:
    group: str
    name: str
    """The alert name, or the recorded series name."""
    kind: Literal["alert", "record"]
    expr: str


def rule_expressions(path: Path = RULES_PATH) -> list[RuleExpression]:
    """(group, rule name, kind, expr) for every rule in the rules file at ``path``."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    expressions = []
    for group in document["groups"]:
        for rule in group["rules"]:
            kind: Literal["alert", "record"] = "alert" if "alert" in rule else "record"
            expressions.append(
                RuleExpression(
                    group=str(group["name"]),
                    name=str(rule[kind]),
                    kind=kind,
                    expr=str(rule["expr"]),
                )
            )
    return expressions


def alert_names(path: Path = RULES_PATH) -> list[str]:
    return [rule.name for rule in rule_expressions(path) if rule.kind == "alert"]


def recorded_names(path: Path = RULES_PATH) -> list[str]:
    return [rule.name for rule in rule_expressions(path) if rule.kind == "record"]
