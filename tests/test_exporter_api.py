"""The JSON documents behind the API, without a server."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from http import HTTPStatus

from exporters.api import SnapshotJsonCache, health, recommendations
from exporters.state import PublishedRound, RoundPublisher
from model import Rule, Storage
from tests.test_exporter_support import FINISHED_AT, make_result, make_round, make_snapshot


def test_fast_snapshot_serialisation_matches_dataclasses_asdict() -> None:
    snapshot = make_snapshot()
    snapshot.guests[1] = replace(snapshot.guests[1], ha=None, cpu=None, tags=["a", "b"])
    snapshot.rules = [
        Rule("keep-db", "node-affinity", ["vm:100"], nodes={"pve2": 2, "pve3": 1}, strict=True),
        Rule("apart", "resource-affinity", ["vm:100", "ct:200"], affinity="negative"),
    ]
    snapshot.storages = [Storage("pve1", "local", 100.0, None)]
    expected = asdict(snapshot)
    expected["crs"] = snapshot.crs.to_json()
    assert snapshot.to_json() == expected


def test_snapshot_cache_serialises_once_per_round() -> None:
    publisher = RoundPublisher()
    cache = SnapshotJsonCache()
    assert cache.body(publisher.view())[0] == HTTPStatus.SERVICE_UNAVAILABLE
    publisher.publish(make_round())
    status, first = cache.body(publisher.view())
    assert status == HTTPStatus.OK
    assert cache.body(publisher.view())[1] is first
    publisher.publish(make_round(finished_at=FINISHED_AT + 60))
    assert cache.body(publisher.view())[1] is not first


def test_non_finite_snapshot_gives_a_clear_error_not_a_crash() -> None:
    snapshot = make_snapshot()
    snapshot.nodes[0] = replace(snapshot.nodes[0], cpu=float("nan"))
    publisher = RoundPublisher()
    publisher.publish(
        PublishedRound.create(snapshot, make_result(), finished_at=FINISHED_AT, duration_s=1)
    )
    status, body = SnapshotJsonCache().body(publisher.view())
    assert status == HTTPStatus.INTERNAL_SERVER_ERROR
    assert "non-finite" in json.loads(body)["error"]


def test_recommendations_replace_nan_by_null() -> None:
    publisher = RoundPublisher()
    result = replace(make_result(), imbalance=float("nan"))
    publisher.publish(
        PublishedRound.create(make_snapshot(), result, finished_at=FINISHED_AT, duration_s=1)
    )
    status, document = recommendations(publisher.view())
    assert status == HTTPStatus.OK
    assert document["imbalance"] is None
    json.dumps(document, allow_nan=False)


def test_recommendations_while_rounds_fail() -> None:
    publisher = RoundPublisher()
    publisher.publish(PublishedRound.failed(finished_at=FINISHED_AT, duration_s=1, error="x"))
    status, document = recommendations(publisher.view())
    assert status == HTTPStatus.SERVICE_UNAVAILABLE
    assert document["last_round"]["error"] == "x"
    publisher.publish(make_round())
    publisher.publish(PublishedRound.failed(finished_at=FINISHED_AT + 9, duration_s=1, error="y"))
    status, document = recommendations(publisher.view())
    assert status == HTTPStatus.OK
    assert document["round"]["finished_at"] == FINISHED_AT
    assert document["last_round"] == {
        "ok": False,
        "finished_at": FINISHED_AT + 9,
        "duration_s": 1.0,
        "error": "y",
    }


def test_health_boundary() -> None:
    publisher = RoundPublisher()
    publisher.publish(make_round())
    assert health(publisher.view(), FINISHED_AT + 300, 300)[0] == HTTPStatus.OK
    status, document = health(publisher.view(), FINISHED_AT + 300.5, 300)
    assert status == HTTPStatus.SERVICE_UNAVAILABLE
    assert document["age_seconds"] == 300.5
