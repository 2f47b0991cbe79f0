"""The exceptions of the PVE API client: they name the host and the path, never the secret.

Every message passes through :func:`redact` before it is stored, so even text coming from
a library (requests, proxmoxer, the server's reply) cannot carry the token secret out.
"""

from __future__ import annotations

from collections.abc import Iterable


class PveApiError(Exception):
    """A request failed: ``host`` and ``path`` say where, ``status`` is the HTTP status if any."""

    def __init__(self, host: str, path: str, message: str, status: int | None = None) -> None:
        self.host = host
        self.path = path
        self.status = status
        self.message = message
        code = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"PVE API {host}: {path}{code}: {message}")


class PveAuthError(PveApiError):
    """The server refused the token (HTTP 401) or its rights (HTTP 403)."""


class PveConnectionError(PveApiError):
    """No host could be reached (connection refused, timeout, TLS verification failed)."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
