"""The exporter's HTTP server: /metrics, the status page, the JSON API and /healthz.

Built on the standard library's ``ThreadingHTTPServer`` rather than prometheus-client's
WSGI app in a ``wsgiref`` server: the routes, the GET/HEAD-only policy, basic auth and TLS
all sit in one small handler with no extra dependency, and ``wsgiref`` is single-threaded,
so one slow client would stall every scrape. The metrics body still comes from
prometheus-client (``generate_latest`` on the dedicated registry) with its content type.

Read-only by construction: only GET and HEAD are served; every other method gets 405
before routing or authentication, and no route can change state, so nothing reachable
over HTTP can start a migration. TLS and basic auth are off unless configured. Request
logging goes to the ``logging`` module at debug level and never includes headers, so
credentials are not written anywhere. The server runs in a daemon thread between
:meth:`ExporterServer.start` and :meth:`ExporterServer.stop`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from exporters import api
from exporters.auth import BasicAuth
from exporters.metrics import make_registry
from exporters.state import RoundPublisher
from exporters.status_page import REFRESH_SECONDS, render_status_page

LOG = logging.getLogger("pve_rebalancer.exporters.http")

ALLOWED_METHODS = ("GET", "HEAD")
JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
AUTH_REALM = 'Basic realm="pve-rebalancer", charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: Path
    key_file: Path

    def context(self) -> ssl.SSLContext:
        """A server context (TLS 1.2 or newer) holding the certificate chain and key."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile=str(self.cert_file), keyfile=str(self.key_file))
        return context


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9878
    """0 picks a free port; read the bound one from :attr:`ExporterServer.port`."""
    tls: TlsConfig | None = None
    auth: BasicAuth | None = None
    health_max_age_s: float = 300.0
    """/healthz fails when the last successful round is older than this."""
    refresh_seconds: int = REFRESH_SECONDS
    request_timeout_s: float = 30.0
    """Idle limit per connection, so stalled clients cannot pin handler threads."""
    poll_interval_s: float = 0.5
    """How often the accept loop checks for :meth:`ExporterServer.stop` (its worst delay)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, config: ServerConfig, app: ExporterServer) -> None:
        host = config.host
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = app
        tls_context = config.tls.context() if config.tls is not None else None
        super().__init__((host.strip("[]"), config.port), _Handler)
        if tls_context is not None:
            # The handshake is deferred to the handler thread (first read), so a slow or
            # silent client cannot block the accept loop.
            self.socket = tls_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def handle_error(self, request: Any, client_address: Any) -> None:
        LOG.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "pve-rebalancer"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    ROUTES: ClassVar[dict[str, str]] = {
        "/": "_status_page",
        "/metrics": "_metrics",
        "/api/v1/recommendations": "_recommendations",
        "/api/v1/snapshot": "_snapshot",
        "/healthz": "_healthz",
    }

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.app.config.request_timeout_s)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler looks up do_<METHOD>; every method but GET/HEAD lands here.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self.close_connection = True
        self._reply(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"method not allowed: this server is read-only (GET, HEAD)\n",
            TEXT_TYPE,
            send_body=True,
            extra_headers={"Allow": ", ".join(ALLOWED_METHODS)},
        )

    def _serve(self, *, send_body: bool) -> None:
        app = self.server.app
        auth = app.config.auth
        if auth is not None and not auth.check_header(self.headers.get("Authorization")):
            self._reply(
                HTTPStatus.UNAUTHORIZED,
                b"authentication required\n",
                TEXT_TYPE,
                send_body=send_body,
                extra_headers={"WWW-Authenticate": AUTH_REALM},
            )
            return
        route = self.ROUTES.get(urlsplit(self.path).path)
        if route is None:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", TEXT_TYPE, send_body=send_body)
            return
        try:
            status, body, content_type = getattr(self, route)(app)
        except Exception:
            LOG.exception("error while serving %s", route)
            status, body, content_type = (
                HTTPStatus.INTERNAL_SERVER_ERROR,
                b"internal error\n",
                TEXT_TYPE,
            )
        self._reply(status, body, content_type, send_body=send_body)

    def _status_page(self, app: ExporterServer) -> tuple[HTTPStatus, bytes, str]:
        page = render_status_page(
            app.publisher.view(), now=app.clock(), refresh_seconds=app.config.refresh_seconds
        )
        return HTTPStatus.OK, page.encode("utf-8"), HTML_TYPE

    def _metrics(self, app: ExporterServer) -> tuple[HTTPStatus, bytes, str]:
        return HTTPStatus.OK, generate_latest(app.registry), CONTENT_TYPE_LATEST

    def _recommendations(self, app: ExporterServer) -> tuple[HTTPStatus, bytes, str]:
        status, document = api.recommendations(app.publisher.view())
        return status, api.json_bytes(document), JSON_TYPE

    def _snapshot(self, app: ExporterServer) -> tuple[HTTPStatus, bytes, str]:
        status, body = app.snapshot_cache.body(app.publisher.view())
        return status, body, JSON_TYPE

    def _healthz(self, app: ExporterServer) -> tuple[HTTPStatus, bytes, str]:
        status, document = api.health(
            app.publisher.view(), app.clock(), app.config.health_max_age_s
        )
        return status, api.json_bytes(document), JSON_TYPE

    def _reply(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        *,
        send_body: bool,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s %s", self.address_string(), format % args)


class ExporterServer:
    """The HTTP server around a :class:`RoundPublisher`, run in a background thread."""

    def __init__(
        self,
        publisher: RoundPublisher,
        config: ServerConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.publisher = publisher
        self.config = config or ServerConfig()
        self.registry = registry if registry is not None else make_registry(publisher)
        self.clock = clock
        self.snapshot_cache = api.SnapshotJsonCache()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); only valid after :meth:`start`."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls is not None else "http"
        host = self.config.host
        host = f"[{host.strip('[]')}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises OSError/ssl.SSLError on bad config."""
        if self._server is not None:
            raise RuntimeError("the server is already running")
        server = _Server(self.config, self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self.config.poll_interval_s},
            name="pve-rebalancer-http",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        LOG.info("serving on %s", self.url)

    def stop(self) -> None:
        """Stop accepting, close the socket and wait for the serving thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> ExporterServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
