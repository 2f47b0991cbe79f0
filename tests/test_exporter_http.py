"""The HTTP surfaces: routes, JSON shapes, health transitions, read-only policy, auth, TLS."""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from exporters.auth import BasicAuth
from exporters.http import ExporterServer, ServerConfig, TlsConfig
from exporters.state import PublishedRound, RoundPublisher
from model import Snapshot
from model.snapshot import SCHEMA_PATH
from tests.test_exporter_support import (
    FINISHED_AT,
    make_round,
    make_snapshot,
    request,
    samples_by_name,
)

PATHS = ("/", "/metrics", "/api/v1/recommendations", "/api/v1/snapshot", "/healthz", "/nope")
USER, PASSWORD = "monitor", "s3cret-pa55"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(FINISHED_AT + 10)


@pytest.fixture
def publisher() -> RoundPublisher:
    return RoundPublisher()


@pytest.fixture
def server(publisher: RoundPublisher, clock: Clock) -> Iterator[ExporterServer]:
    config = ServerConfig(host="127.0.0.1", poll_interval_s=0.02, port=0, health_max_age_s=300)
    with ExporterServer(publisher, config, clock=clock) as running:
        yield running


def get_json(port: int, path: str, **kwargs: object) -> tuple[int, dict[str, object]]:
    status, headers, body = request(port, "GET", path, **kwargs)  # type: ignore[arg-type]
    assert headers["Content-Type"].startswith("application/json")
    return status, json.loads(body)


def test_port_zero_binds_a_real_port(server: ExporterServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_metrics_endpoint(server: ExporterServer, publisher: RoundPublisher) -> None:
    publisher.publish(make_round())
    status, headers, body = request(server.port, path="/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST
    samples = samples_by_name(body.decode())
    assert samples["pve_rebalancer_imbalance_ratio"][0][1] == pytest.approx(0.4)
    status, headers, body = request(server.port, "HEAD", "/metrics")
    assert status == 200
    assert body == b""
    assert int(headers["Content-Length"]) > 1000


def test_unknown_path_is_404_and_query_strings_are_ignored(server: ExporterServer) -> None:
    assert request(server.port, path="/nope")[0] == 404
    assert request(server.port, path="/metrics?name[]=x")[0] == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "MIGRATE"])
def test_every_other_method_is_refused_on_every_path(server: ExporterServer, method: str) -> None:
    for path in PATHS:
        status, headers, _ = request(server.port, method, path)
        assert status == 405, (method, path)
        assert headers["Allow"] == "GET, HEAD"


def test_recommendations_shape(server: ExporterServer, publisher: RoundPublisher) -> None:
    status, document = get_json(server.port, "/api/v1/recommendations")
    assert status == 503
    assert "error" in document
    publisher.publish(make_round())
    status, document = get_json(server.port, "/api/v1/recommendations")
    assert status == 200
    for key in ("imbalance", "threshold", "triggered", "reason", "moves", "top_moves",
                "imbalance_after"):  # fmt: skip
        assert key in document
    assert document["imbalance"] == pytest.approx(0.4)
    assert document["threshold"] == pytest.approx(0.3)
    assert document["threshold_percent"] == 30.0
    assert document["triggered"] is True
    assert document["reason"] == "above threshold for 3 rounds"
    assert document["imbalance_after"] == pytest.approx(0.1)
    moves = document["moves"]
    assert isinstance(moves, list)
    assert [(m["rank"], m["id"], m["sid"], m["source"], m["target"]) for m in moves] == [
        (1, "qemu/100", "vm:100", "pve1", "pve2"),
        (2, "lxc/200", "ct:200", "pve1", "pve2"),
    ]
    assert moves[0]["cost_seconds"] == 42.0
    top_moves = document["top_moves"]
    assert isinstance(top_moves, list)
    assert len(top_moves) == 1


def test_snapshot_endpoint_round_trips(server: ExporterServer, publisher: RoundPublisher) -> None:
    assert request(server.port, path="/api/v1/snapshot")[0] == 503
    publisher.publish(make_round())
    status, document = get_json(server.port, "/api/v1/snapshot")
    assert status == 200
    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))
    assert Snapshot.from_json(document) == make_snapshot()
    # A new round replaces the cached body.
    newer = make_snapshot()
    newer.cluster = "renamed"
    publisher.publish(
        PublishedRound.create(newer, make_round().result, finished_at=FINISHED_AT, duration_s=1)
    )
    assert get_json(server.port, "/api/v1/snapshot")[1]["cluster"] == "renamed"


def test_healthz_transitions(
    server: ExporterServer, publisher: RoundPublisher, clock: Clock
) -> None:
    status, document = get_json(server.port, "/healthz")
    assert (status, document["status"]) == (503, "no-round")
    publisher.publish(make_round())
    status, document = get_json(server.port, "/healthz")
    assert (status, document["status"]) == (200, "ok")
    assert document["age_seconds"] == pytest.approx(10)
    clock.now = FINISHED_AT + 301
    status, document = get_json(server.port, "/healthz")
    assert (status, document["status"]) == (503, "stale")
    publisher.publish(PublishedRound.failed(finished_at=clock.now, duration_s=2, error="boom"))
    status, document = get_json(server.port, "/healthz")
    assert (status, document["status"], document["detail"]) == (503, "failing", "boom")
    publisher.publish(make_round(finished_at=clock.now))
    status, document = get_json(server.port, "/healthz")
    assert (status, document["status"]) == (200, "ok")


def test_status_page_served(server: ExporterServer, publisher: RoundPublisher) -> None:
    status, headers, body = request(server.port, path="/")
    assert status == 200
    assert "No round has run yet" in body.decode()
    publisher.publish(make_round())
    status, headers, body = request(server.port, path="/")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "web&lt;1&gt;" in body.decode()


def test_stop_releases_the_port(publisher: RoundPublisher) -> None:
    server = ExporterServer(publisher, ServerConfig(poll_interval_s=0.02, port=0))
    server.start()
    port = server.port
    server.stop()
    with pytest.raises(RuntimeError):
        _ = server.port
    with pytest.raises(ConnectionRefusedError):
        request(port, path="/healthz")
    server.stop()  # a second stop is harmless


# --- basic auth ------------------------------------------------------------------------


@pytest.fixture(params=["password", "sha256"])
def auth_server(
    request: pytest.FixtureRequest, publisher: RoundPublisher, clock: Clock
) -> Iterator[int]:
    if request.param == "password":
        auth = BasicAuth.from_password(USER, PASSWORD)
    else:
        digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
        auth = BasicAuth.from_hash(USER, f"sha256:{digest}")
    publisher.publish(make_round())
    with ExporterServer(
        publisher, ServerConfig(poll_interval_s=0.02, port=0, auth=auth), clock=clock
    ) as running:
        yield running.port


@pytest.mark.parametrize("path", PATHS[:5])
def test_auth_required_on_every_path(auth_server: int, path: str) -> None:
    status, headers, body = request(auth_server, path=path)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    assert request(auth_server, path=path, auth=(USER, PASSWORD))[0] == 200
    assert request(auth_server, path=path, auth=(USER, "wrong"))[0] == 401
    assert request(auth_server, path=path, auth=("admin", PASSWORD))[0] == 401
    assert PASSWORD.encode() not in body


def test_auth_header_parsing() -> None:
    auth = BasicAuth.from_password(USER, PASSWORD)
    assert auth.check(USER, PASSWORD)
    assert not auth.check(USER, PASSWORD + "x")
    for header in (None, "", "Bearer abc", "Basic !!!", "Basic bm9jb2xvbg==", "Basic"):
        assert not auth.check_header(header)
    assert PASSWORD not in repr(auth)


def test_bad_auth_configuration_is_reported() -> None:
    with pytest.raises(ValueError, match="64 hex"):
        BasicAuth.from_hash(USER, "sha256:abc")
    with pytest.raises(ValueError, match="unknown password hash"):
        BasicAuth.from_hash(USER, "md5:abc")
    with pytest.raises(ValueError, match="non-empty"):
        BasicAuth.from_password("", PASSWORD)


# --- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> TlsConfig:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key),
         "-out", str(cert), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return TlsConfig(cert_file=cert, key_file=key)


def test_tls_with_verified_client(
    certificate: TlsConfig, publisher: RoundPublisher, clock: Clock
) -> None:
    publisher.publish(make_round())
    auth = BasicAuth.from_password(USER, PASSWORD)
    client = ssl.create_default_context(cafile=str(certificate.cert_file))
    config = ServerConfig(poll_interval_s=0.02, port=0, tls=certificate, auth=auth)
    with ExporterServer(publisher, config, clock=clock) as running:
        assert running.url.startswith("https://127.0.0.1:")
        status, _, body = request(
            running.port, path="/metrics", tls_context=client, auth=(USER, PASSWORD)
        )
        assert status == 200
        assert b"pve_rebalancer_imbalance_ratio 0.4" in body
        assert request(running.port, path="/", tls_context=client)[0] == 401
        # A client that does not trust the certificate refuses the connection.
        with pytest.raises(ssl.SSLCertVerificationError):
            request(running.port, path="/healthz", tls_context=ssl.create_default_context())
        # Plain HTTP to the TLS port gets no HTTP answer, and the server keeps serving.
        with pytest.raises(http.client.RemoteDisconnected):
            request(running.port, path="/healthz")
        assert request(running.port, path="/healthz", tls_context=client,
                       auth=(USER, PASSWORD))[0] == 200  # fmt: skip


def test_bad_tls_files_fail_at_start(tmp_path: Path, publisher: RoundPublisher) -> None:
    missing = TlsConfig(tmp_path / "none.pem", tmp_path / "none.key")
    with pytest.raises(FileNotFoundError):
        ExporterServer(publisher, ServerConfig(poll_interval_s=0.02, port=0, tls=missing)).start()
