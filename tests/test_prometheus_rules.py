"""The generated Prometheus rules: current with the thresholds file, accepted by promtool, and
every alert proven to fire and to stay quiet by promtool unit tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from prometheus import generate
from prometheus.queries import alert_names, recorded_names, rule_expressions
from prometheus.rules import alert_rules, rule_groups
from prometheus.thresholds import THRESHOLDS_PATH, ThresholdsError, load, parse

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "prometheus"
UNIT_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTS_DOC = ROOT / "docs" / "alerts.md"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def thresholds_data() -> dict[str, object]:
    data = yaml.safe_load(THRESHOLDS_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_committed_rules_match_the_thresholds_file():
    assert generate.is_current()
    assert generate.main(["--check"]) == 0


def test_check_reports_a_stale_rules_file(tmp_path, capsys):
    stale = tmp_path / "rules.yml"
    stale.write_text(generate.render().replace("> 0.9", "> 0.5"), encoding="utf-8")
    assert generate.main(["--check", "--out", str(stale)]) == 1
    assert str(stale) in capsys.readouterr().err
    assert generate.main(["--out", str(stale)]) == 0
    assert generate.main(["--check", "--out", str(stale)]) == 0


def test_promtool_accepts_the_rules_file():
    result = promtool("check", "rules", generate.RULES_PATH)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    assert UNIT_TESTS, "no promtool unit tests under prometheus/tests"
    result = promtool("test", "rules", *UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_non_firing_case():
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert "../rules/pve-rebalancer.rules.yml" in document["rule_files"]
        for group in document["tests"]:
            for case in group.get("alert_rule_test", []):
                expected = case.get("exp_alerts") or []
                (firing if expected else quiet).add(case["alertname"])
                for alert in expected:
                    assert alert["exp_labels"]["severity"] in {"info", "warning", "critical"}
                    assert set(alert["exp_annotations"]) == {
                        "summary",
                        "description",
                        "runbook_url",
                    }
    alerts = set(alert_names())
    assert len(alerts) == 8
    assert alerts - firing == set(), "alerts without a firing test case"
    assert alerts - quiet == set(), "alerts without a non-firing test case"
    assert firing | quiet <= alerts, "tests name alerts the rules file does not define"


def test_unit_tests_catch_a_changed_threshold(tmp_path):
    """The promtool tests are sensitive: a higher overload threshold makes them fail."""
    data = thresholds_data()
    data["node_overload_ratio"] = 0.97
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    thresholds = tmp_path / "thresholds.yml"
    thresholds.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert (
        generate.main(
            [
                "--thresholds",
                str(thresholds),
                "--out",
                str(tmp_path / "rules" / generate.RULES_PATH.name),
            ]
        )
        == 0
    )
    for path in UNIT_TESTS:
        shutil.copy(path, tmp_path / "tests" / path.name)
    result = promtool("test", "rules", *sorted((tmp_path / "tests").glob("*.yml")))
    assert result.returncode != 0
    assert "PveRebalancerNodeOverloaded" in result.stdout + result.stderr


def test_alerts_carry_severity_annotations_and_a_runbook_anchor():
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", ALERTS_DOC.read_text(encoding="utf-8"), re.M)
    }
    alerts = rule_groups(load())["groups"][1]["rules"]
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in alerts}
    assert severities["PveRebalancerImbalanceHigh"] == "warning"
    assert severities["PveRebalancerImbalanceCritical"] == "critical"
    for rule in alerts:
        annotations = rule["annotations"]
        assert annotations["summary"]
        assert annotations["description"]
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url == "docs/alerts.md"
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in docs/alerts.md"


def test_recording_rules_are_the_ones_the_dashboards_read():
    assert sorted(recorded_names()) == [
        "job:pve_rebalancer_recommended_move_info:count",
        "job_resource_view:pve_rebalancer_node_load_ratio:avg",
        "job_resource_view:pve_rebalancer_node_load_ratio:max",
        "job_resource_view:pve_rebalancer_node_load_ratio:min",
    ]
    kinds = {rule.kind for rule in rule_expressions()}
    assert kinds == {"alert", "record"}


def test_thresholds_flow_into_the_rules():
    data = thresholds_data()
    data.update(
        node_overload_ratio=0.8,
        imbalance_critical_factor=1.5,
        round_interval_seconds=30,
        stale_after_rounds=4,
        job="rebalancer-lab",
        migration_failure_window="2h",
    )
    rules = {rule.alert: rule for rule in alert_rules(parse(data))}
    assert rules["PveRebalancerNodeOverloaded"].expr.endswith("> 0.8")
    assert "80%" in rules["PveRebalancerNodeOverloaded"].description
    assert "> 1.5 * pve_rebalancer_imbalance_threshold_ratio" in (
        rules["PveRebalancerImbalanceCritical"].expr
    )
    assert rules["PveRebalancerStale"].expr.endswith("> 120")
    assert rules["PveRebalancerAbsent"].expr == 'absent(pve_rebalancer_up{job="rebalancer-lab"})'
    assert "[2h]" in rules["PveRebalancerMigrationsFailing"].expr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node_overload_for": "ten minutes"}, "node_overload_for: 'ten minutes' is not a"),
        ({"node_overload_ratio": 1.5}, "node_overload_ratio: is a load ratio"),
        ({"stale_after_rounds": 0}, "stale_after_rounds: must be at least 1"),
        ({"migration_failures_allowed": -1}, "migration_failures_allowed: must be a whole"),
        ({"imbalance_critical_factor": "2"}, "imbalance_critical_factor: must be a number"),
        ({"job": "pve rebalancer"}, "job: 'pve rebalancer' is not a plain job name"),
        ({"typo_for": "5m"}, "unknown key(s) typo_for"),
    ],
)
def test_bad_thresholds_are_reported_by_key(change, message):
    data = thresholds_data()
    data.update(change)
    with pytest.raises(ThresholdsError) as error:
        parse(data, "thresholds.yml")
    assert str(error.value).startswith("thresholds.yml: ")
    assert message in str(error.value)


def test_missing_key_and_unreadable_files_are_reported(tmp_path, capsys):
    data = thresholds_data()
    del data["down_for"]
    with pytest.raises(ThresholdsError, match="missing key 'down_for'"):
        parse(data)
    with pytest.raises(ThresholdsError, match="cannot read"):
        load(tmp_path / "absent.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("job: [unclosed\n", encoding="utf-8")
    with pytest.raises(ThresholdsError, match="not valid YAML"):
        load(broken)
    assert generate.main(["--thresholds", str(broken), "--out", str(tmp_path / "r.yml")]) == 2
    assert str(broken) in capsys.readouterr().err
    assert not (tmp_path / "r.yml").exists()


def test_example_prometheus_config_is_valid():
    result = promtool("check", "config", PROMETHEUS_DIR / "prometheus.example.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.example.yml").read_text("utf-8"))
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert load().job in jobs
