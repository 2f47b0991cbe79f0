"""The metric catalogue: names, labels and values for a hand-made round."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import replace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporters.metrics import METRIC_NAMES, make_registry
from exporters.state import PublishedRound, RoundPublisher, guest_id, node_id
from model import Finding
from tests.test_exporter_support import (
    FINISHED_AT,
    GIB,
    make_result,
    make_round,
    make_snapshot,
    samples_by_name,
    single,
)

P = "pve_rebalancer_"


def scrape(publisher: RoundPublisher) -> dict[str, list[tuple[dict[str, str], float]]]:
    return samples_by_name(generate_latest(make_registry(publisher, "1.2.3")).decode())


@pytest.fixture
def published() -> RoundPublisher:
    publisher = RoundPublisher()
    publisher.publish(make_round())
    publisher.record_round(True, 1.25, FINISHED_AT)
    publisher.record_round(False, 0.07)
    publisher.record_round(True, 42.0, FINISHED_AT)
    publisher.record_migration("qemu", "started")
    publisher.record_migration("qemu", "started")
    publisher.record_migration("qemu", "succeeded")
    publisher.record_migration("lxc", "failed")
    return publisher


def test_ids_follow_prometheus_pve_exporter() -> None:
    assert node_id("pve1") == "node/pve1"
    assert guest_id("vm:100") == "qemu/100"
    assert guest_id("ct:200") == "lxc/200"
    assert guest_id("odd") == "odd"


def test_every_catalogue_metric_is_exposed(published: RoundPublisher) -> None:
    exposition = generate_latest(make_registry(published)).decode()
    families = {f.name: f.type for f in text_string_to_metric_families(exposition)}
    exposed = set()
    for name, kind in families.items():
        exposed.add(name + "_total" if kind == "counter" else name)
    # The parser names an info family without its _info suffix.
    exposed = {P + "build_info" if n == P + "build" else n for n in exposed}
    placement_only_when_asked = {P + "placement_score"}
    assert exposed == set(METRIC_NAMES) - placement_only_when_asked
    assert len(METRIC_NAMES) == 29
    assert families[P + "round_duration_seconds"] == "histogram"
    assert families[P + "rounds"] == "counter"


def test_round_gauges(published: RoundPublisher) -> None:
    s = scrape(published)
    assert single(s, P + "up") == 1.0
    assert single(s, P + "imbalance_ratio") == pytest.approx(0.4)
    assert single(s, P + "imbalance_cv") == pytest.approx(0.8)
    assert single(s, P + "imbalance_threshold_ratio") == pytest.approx(0.30)
    assert single(s, P + "imbalance_margin_ratio") == pytest.approx(0.10)
    assert single(s, P + "imbalance_after_plan_ratio") == pytest.approx(0.1)
    assert single(s, P + "rounds_above_threshold") == 3
    assert single(s, P + "hold_duration_rounds") == 3
    assert single(s, P + "triggered") == 1.0
    assert single(s, P + "automation_enabled") == 1.0
    ((labels, value),) = s[P + "build_info"]
    assert value == 1.0
    assert labels == {"version": "1.2.3", "python": platform.python_version()}


def test_node_metrics(published: RoundPublisher) -> None:
    s = scrape(published)
    loads = {
        (lab["node"], lab["resource"], lab["view"]): (lab["id"], v)
        for lab, v in s[P + "node_load_ratio"]
    }
    # pve1 raw: 12/16 cores, 48/64 GiB; smoothed: 8/16 cores, 32/64 GiB.
    assert loads[("pve1", "cpu", "raw")][0] == "node/pve1"
    assert loads[("pve1", "cpu", "raw")][1] == pytest.approx(0.75)
    assert loads[("pve1", "memory", "raw")][1] == pytest.approx(0.75)
    assert loads[("pve1", "combined", "raw")][1] == pytest.approx(0.75)
    assert loads[("pve1", "combined", "smoothed")][1] == pytest.approx(0.5)
    assert loads[("pve2", "combined", "raw")][1] == pytest.approx((2 / 8 + 8 / 32) / 2)
    assert loads[("pve3", "cpu", "raw")][1] == pytest.approx(0.5)
    assert loads[("pve3", "combined", "raw")][1] == pytest.approx(0.25)
    assert len(loads) == 4 * 3 * 2
    capacity = {lab["node"]: v for lab, v in s[P + "node_cpu_capacity_cores"]}
    assert capacity == {"pve1": 16, "pve2": 8, "pve3": 8, "pve4": 4}
    memory = {lab["id"]: v for lab, v in s[P + "node_memory_capacity_bytes"]}
    assert memory["node/pve2"] == 32 * GIB
    usable = {lab["node"]: v for lab, v in s[P + "node_usable"]}
    assert usable == {"pve1": 1.0, "pve2": 1.0, "pve3": 0.0, "pve4": 0.0}


def test_move_metrics(published: RoundPublisher) -> None:
    s = scrape(published)
    assert single(s, P + "recommended_moves") == 2
    info = s[P + "recommended_move_info"]
    assert [lab for lab, _ in info] == [
        {"rank": "1", "id": "qemu/100", "sid": "vm:100", "source": "pve1", "target": "pve2"},
        {"rank": "2", "id": "lxc/200", "sid": "ct:200", "source": "pve1", "target": "pve2"},
    ]
    assert all(v == 1.0 for _, v in info)
    after = {lab["sid"]: v for lab, v in s[P + "recommended_move_imbalance_after_ratio"]}
    assert after == {"vm:100": pytest.approx(0.2), "ct:200": pytest.approx(0.1)}
    cost = {lab["rank"]: v for lab, v in s[P + "recommended_move_cost_seconds"]}
    assert cost == {"1": 42.0, "2": 7.5}


def test_data_issues_counted_by_kind_and_severity(published: RoundPublisher) -> None:
    issues = {(lab["kind"], lab["severity"]): v for lab, v in scrape(published)[P + "data_issues"]}
    assert issues == {("rrd-missing", "warning"): 2.0, ("config-parse", "error"): 1.0}


def test_counters_and_histogram(published: RoundPublisher) -> None:
    s = scrape(published)
    assert single(s, P + "rounds_total") == 3
    assert single(s, P + "round_failures_total") == 1
    assert single(s, P + "round_duration_seconds_count") == 3
    assert single(s, P + "round_duration_seconds_sum") == pytest.approx(1.25 + 0.07 + 42.0)
    buckets = {float(lab["le"]): v for lab, v in s[P + "round_duration_seconds_bucket"]}
    assert buckets[0.05] == 0
    assert buckets[0.1] == 1
    assert buckets[1.0] == 1
    assert buckets[2.5] == 2
    assert buckets[30.0] == 2
    assert buckets[60.0] == 3
    assert buckets[float("inf")] == 3
    assert single(s, P + "last_success_timestamp_seconds") == FINISHED_AT
    for outcome, expected in (
        ("started", {"qemu": 2, "lxc": 0}),
        ("succeeded", {"qemu": 1, "lxc": 0}),
        ("failed", {"qemu": 0, "lxc": 1}),
    ):
        got = {lab["type"]: v for lab, v in s[f"{P}migrations_{outcome}_total"]}
        assert got == expected


def test_bad_migration_events_are_refused() -> None:
    publisher = RoundPublisher()
    with pytest.raises(ValueError, match="guest type"):
        publisher.record_migration("vm", "started")
    with pytest.raises(ValueError, match="outcome"):
        publisher.record_migration("qemu", "exploded")  # type: ignore[arg-type]


def test_nothing_published_yet_exports_only_status_and_counters() -> None:
    s = scrape(RoundPublisher())
    assert single(s, P + "up") == 0.0
    assert single(s, P + "rounds_total") == 0
    assert P + "imbalance_ratio" not in s
    assert P + "last_success_timestamp_seconds" not in s
    assert {lab["type"] for lab, _ in s[P + "migrations_started_total"]} == {"qemu", "lxc"}


def test_failed_round_keeps_last_plan_but_reports_down(published: RoundPublisher) -> None:
    failure = "collector: rrdcached socket missing"
    published.publish(
        PublishedRound.failed(finished_at=FINISHED_AT + 60, duration_s=0.5, error=failure)
    )
    s = scrape(published)
    assert single(s, P + "up") == 0.0
    assert single(s, P + "imbalance_ratio") == pytest.approx(0.4)
    assert single(s, P + "last_success_timestamp_seconds") == FINISHED_AT


def test_single_view_and_placement_scores() -> None:
    publisher = RoundPublisher()
    publisher.publish(
        PublishedRound.create(
            make_snapshot(usage_view="p95"),
            make_result(n_moves=0, imbalance=0.05),
            finished_at=FINISHED_AT,
            duration_s=0.2,
            placement_scores={"vm:300": {"pve2": 0.9, "pve1": 0.1}},
        )
    )
    s = scrape(publisher)
    assert {lab["view"] for lab, _ in s[P + "node_load_ratio"]} == {"smoothed"}
    assert single(s, P + "recommended_moves") == 0
    assert P + "recommended_move_info" not in s
    # No plan: the expected imbalance afterwards is today's.
    assert single(s, P + "imbalance_after_plan_ratio") == pytest.approx(0.05)
    assert single(s, P + "automation_enabled") == 0.0
    scores = {(lab["id"], lab["node"]): v for lab, v in s[P + "placement_score"]}
    assert scores == {("qemu/300", "pve1"): 0.1, ("qemu/300", "pve2"): 0.9}


def test_label_values_with_quotes_survive_the_exposition() -> None:
    snapshot = make_snapshot()
    snapshot.issues.append(Finding('kind "quoted"\\n', "x", "y", "info"))
    publisher = RoundPublisher()
    publisher.publish(
        PublishedRound.create(snapshot, make_result(), finished_at=FINISHED_AT, duration_s=1)
    )
    kinds = {lab["kind"] for lab, _ in scrape(publisher)[P + "data_issues"]}
    assert 'kind "quoted"\\n' in kinds


def test_malformed_round_still_exports_status_and_counters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = make_result()
    result.moves[0].imbalance_after = "not a number"  # type: ignore[assignment]
    publisher = RoundPublisher()
    publisher.publish(
        PublishedRound.create(make_snapshot(), result, finished_at=FINISHED_AT, duration_s=1)
    )
    publisher.record_round(True, 1.0)
    s = scrape(publisher)
    assert single(s, P + "up") == 1.0
    assert single(s, P + "rounds_total") == 1
    assert P + "recommended_move_info" not in s
    assert "cannot export the round" in caplog.text


def test_one_smoothed_snapshot_carries_both_views() -> None:
    snapshot = make_snapshot(usage_view="ewma")
    # The newest sample of pve1 is 4 cores / 16 GiB, of pve2 unknown (left out of raw).
    snapshot.nodes[0] = replace(snapshot.nodes[0], cpu_last=4.0, mem_last=16.0 * GIB)
    snapshot.nodes[2] = replace(snapshot.nodes[2], cpu_last=8.0, mem_last=0.0)
    snapshot.nodes[3] = replace(snapshot.nodes[3], cpu_last=0.0, mem_last=0.0)
    publisher = RoundPublisher()
    publisher.publish(
        PublishedRound.create(snapshot, make_result(), finished_at=FINISHED_AT, duration_s=1)
    )
    combined = {
        (lab["node"], lab["view"]): v
        for lab, v in scrape(publisher)[P + "node_load_ratio"]
        if lab["resource"] == "combined"
    }
    assert combined[("pve1", "raw")] == pytest.approx((4 / 16 + 16 / 64) / 2)
    assert combined[("pve1", "smoothed")] == pytest.approx(0.75)
    assert combined[("pve3", "raw")] == pytest.approx(0.5)
    assert ("pve2", "raw") not in combined
    assert combined[("pve2", "smoothed")] == pytest.approx(0.25)
    assert len(combined) == 4 + 3


def test_exposition_passes_promtool_lint(published: RoundPublisher) -> None:
    published.publish(make_round(placement_scores={"vm:300": {"pve2": 0.7}}))
    exposition = generate_latest(make_registry(published))
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == b""


def test_ha_recommend_only_gauge() -> None:
    publisher = RoundPublisher()
    publisher.publish(make_round())
    assert single(scrape(publisher), P + "ha_recommend_only") == 0.0
    publisher.publish(make_round(ha_recommend_only=True))
    assert single(scrape(publisher), P + "ha_recommend_only") == 1.0
