"""A small Proxmox VE API client on top of proxmoxer: token auth, TLS, retries, failover.

Why proxmoxer: it already speaks the API's conventions (``/api2/json`` base, the
``PVEAPIToken=USER@REALM!TOKENID=SECRET`` header, ``{"data": ...}`` unwrapping, form-encoded
POST bodies) and works with a token and a custom port. What it lacks is added here:

- several hosts: a request goes to the host that answered last; when it cannot be reached
  (connection refused, timeout, TLS failure) or answers 5xx, the next host is tried;
- retries: when every host failed, the whole round is retried after ``backoff_s * 2**n``.
  GET is retried on connection errors and 5xx (not when TLS verification failed: that
  would fail again). POST (not idempotent: it may start a
  migration) is retried only when the connection could not be made, never after a 5xx or a
  read timeout, so a request that may have reached the server is never sent twice;
- TLS is verified by default against the system CA store, or ``ca_bundle`` (a PEM file,
  e.g. the cluster's ``/etc/pve/pve-root-ca.pem``). ``verify_tls=False`` must be asked for
  and logs a warning;
- errors are :class:`pveapi.errors.PveApiError` and name the host and the path. The secret
  is redacted from every message, no library exception is chained (its text or locals could
  hold request headers), and neither the client's nor the token's repr shows it.

proxmoxer logs the method and URL (and POST data) at INFO, urllib3 the request line at
DEBUG: neither includes headers, so the token never reaches a log record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import requests
import urllib3
from proxmoxer import ProxmoxAPI, ResourceException

from pveapi.errors import PveApiError, PveAuthError, PveConnectionError, redact
from pveapi.tasks import TaskStatus, parse_upid

log = logging.getLogger(__name__)

DEFAULT_PORT = 8006


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token: ``user`` (``root@pam``), ``token_id`` and the ``secret`` (never shown)."""

    user: str
    token_id: str
    secret: str = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> ApiToken:
        """From ``USER@REALM!TOKENID=SECRET`` (the form PVE shows when creating a token)."""
        ident, sep, secret = text.strip().partition("=")
        user, bang, token_id = ident.partition("!")
        if not sep or not bang or "@" not in user or not token_id or not secret:
            raise ValueError("API token must look like USER@REALM!TOKENID=SECRET")
        return cls(user, token_id, secret)

    @property
    def ident(self) -> str:
        """``USER@REALM!TOKENID``: safe to show."""
        return f"{self.user}!{self.token_id}"

    def __str__(self) -> str:
        return f"{self.ident}=***"


@dataclass(frozen=True, slots=True)
class _Host:
    name: str
    """``host:port`` as shown in errors."""
    api: Any
    """The proxmoxer ProxmoxAPI of this host."""


class PveApiClient:
    """GET/POST against one cluster reachable through one or more hosts."""

    def __init__(
        self,
        hosts: Sequence[str],
        token: ApiToken,
        *,
        port: int = DEFAULT_PORT,
        verify_tls: bool = True,
        ca_bundle: Path | str | None = None,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``hosts``: names or addresses, each optionally ``host:port`` (default ``port``)."""
        if not hosts:
            raise ValueError("at least one host is needed")
        if retries < 0 or backoff_s < 0 or timeout_s <= 0:
            raise ValueError("retries and backoff must be >= 0 and the timeout > 0")
        self.token = token
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        verify: bool | str = str(ca_bundle) if ca_bundle is not None else verify_tls
        if verify is False:
            log.warning("TLS certificate verification is OFF for %s", ", ".join(hosts))
        self._hosts = [self._connect(host, port, token, verify, timeout_s) for host in hosts]
        self._preferred = 0

    @staticmethod
    def _connect(
        host: str, port: int, token: ApiToken, verify: bool | str, timeout_s: float
    ) -> _Host:
        name, _, port_text = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        host_port = int(port_text) if port_text else port
        api = ProxmoxAPI(
            name,
            port=host_port,
            user=token.user,
            token_name=token.token_id,
            token_value=token.secret,
            verify_ssl=verify,
            timeout=timeout_s,
        )
        return _Host(f"{name}:{host_port}", api)

    def __repr__(self) -> str:
        hosts = ", ".join(h.name for h in self._hosts)
        return f"PveApiClient(hosts=[{hosts}], token={self.token.ident}=***)"

    @property
    def hosts(self) -> list[str]:
        return [h.name for h in self._hosts]

    def get(self, path: str, **params: Any) -> Any:
        """The ``data`` of ``GET path`` (e.g. ``/cluster/resources``)."""
        return self._call("GET", path, params)

    def post(self, path: str, **data: Any) -> Any:
        """The ``data`` of ``POST path`` with a form body (booleans sent as 0/1)."""
        body = {k: int(v) if isinstance(v, bool) else v for k, v in data.items()}
        return self._call("POST", path, body)

    def migrate_guest(self, node: str, kind: Literal["qemu", "lxc"], vmid: int, target: str) -> str:
        """Migrate a guest that is not HA-managed; returns the task's UPID.

        VMs move live (``online=1``), containers by restart (``restart=1``).
        """
        options = {"online": True} if kind == "qemu" else {"restart": True}
        upid = self.post(f"/nodes/{node}/{kind}/{vmid}/migrate", target=target, **options)
        return str(upid)

    def ha_migrate(self, sid: str, target: str, *, relocate: bool = False) -> str | None:
        """Ask the HA manager to move ``sid`` (``relocate``: stop, move, start).

        Real PVE queues a CRM command and answers null (None here): follow the move in
        ``/cluster/ha/status/manager_status``. The simulator answers a UPID.
        """
        action = "relocate" if relocate else "migrate"
        upid = self.post(f"/cluster/ha/resources/{sid}/{action}", node=target)
        return None if upid is None else str(upid)

    def task_status(self, upid: str) -> TaskStatus:
        """Status of a task, asked from the node that runs it."""
        node = parse_upid(upid).node
        return TaskStatus.from_json(upid, self.get(f"/nodes/{node}/tasks/{upid}/status"))

    def wait_task(self, upid: str, *, timeout_s: float = 600.0, poll_s: float = 2.0) -> TaskStatus:
        """Poll until the task stopped (or ``timeout_s`` passed: the last status is returned)."""
        deadline = time.monotonic() + timeout_s
        status = self.task_status(upid)
        while status.running and time.monotonic() < deadline:
            self._sleep(poll_s)
            status = self.task_status(upid)
        return status

    # ----- transport -------------------------------------------------------------------

    def _call(self, method: str, path: str, args: dict[str, Any]) -> Any:
        path = "/" + path.strip("/")
        last: _Failure | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            retryable = False
            for offset in range(len(self._hosts)):
                index = (self._preferred + offset) % len(self._hosts)
                host = self._hosts[index]
                outcome = self._once(host, method, path, args)
                if not isinstance(outcome, _Failure):
                    self._preferred = index
                    return outcome.data
                if outcome.final:
                    raise outcome.error  # raised here, outside any handler: no chained context
                last = outcome
                retryable = retryable or outcome.retryable
                log.info("%s %s on %s failed: %s", method, path, host.name, outcome.error)
            if not retryable:
                break
        assert last is not None
        raise last.error

    def _once(
        self, host: _Host, method: str, path: str, args: dict[str, Any]
    ) -> _Success | _Failure:
        """One request to one host; library exceptions become redacted PveApiErrors."""
        secrets = (self.token.secret,)
        resource = host.api(path.lstrip("/"))
        try:
            if method == "GET":
                return _Success(resource.get(**args))
            return _Success(resource.post(**args))
        except ResourceException as error:
            status = int(error.status_code)
            message = redact(str(error), secrets)
            if status in (401, 403):
                return _Failure(PveAuthError(host.name, path, message, status), final=True)
            failed = PveApiError(host.name, path, message, status)
            if status >= 500:
                return _Failure(failed, retryable=method == "GET")
            return _Failure(failed, final=True)
        except requests.exceptions.SSLError as error:
            message = redact(f"TLS verification failed: {error}", secrets)
            return _Failure(PveConnectionError(host.name, path, message))
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            message = redact(f"{type(error).__name__}: {error}", secrets)
            failed = PveConnectionError(host.name, path, message)
            return _Failure(failed, retryable=method == "GET" or _not_sent(error))
        except requests.exceptions.RequestException as error:
            message = redact(f"{type(error).__name__}: {error}", secrets)
            return _Failure(PveApiError(host.name, path, message), final=True)


def _not_sent(error: requests.exceptions.RequestException) -> bool:
    """The connection could not even be made, so the request never reached the server."""
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    reason = error.args[0] if error.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, urllib3.exceptions.NewConnectionError | ConnectionRefusedError)


@dataclass(frozen=True, slots=True)
class _Success:
    data: Any


@dataclass(frozen=True, slots=True)
class _Failure:
    """This host failed: ``final`` = no other host or retry can help (4xx, auth)."""

    error: PveApiError
    retryable: bool = False
    final: bool = False
