"""HTTP client for the Proxmox VE API, shared by the collector (reads) and the actuator (writes).

See :mod:`pveapi.client` for the transport (token auth, TLS, retries, failover) and
:mod:`pveapi.tasks` for UPIDs and task status polling.
"""

from pveapi.client import ApiToken, PveApiClient
from pveapi.errors import PveApiError, PveAuthError, PveConnectionError
from pveapi.tasks import TaskStatus, Upid, parse_upid

__all__ = [
    "ApiToken",
    "PveApiClient",
    "PveApiError",
    "PveAuthError",
    "PveConnectionError",
    "TaskStatus",
    "Upid",
    "parse_upid",
]
