"""Adapts :class:`pveapi.PveApiClient` to the actuator's :class:`ApiWriter` interface.

The client answers a POST with the call's ``data``: a UPID string for the migrate endpoints,
``null`` (or, on PVE 9, an object naming co-migrated resources) for the HA endpoints, which
only queue a request for the HA manager. Anything that is not a UPID becomes ``None``, and
the actuator then follows the move in fresh snapshots. Task status is asked from the node
the actuator names (the node in the UPID). Errors pass through unchanged: the client's
errors name host and path and never the token secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporters.actuator_calls import BodyValue
from pveapi import PveApiClient


class PveApiWriter:
    """The :class:`~exporters.actuator_calls.ApiWriter` of a real (or simulated) cluster."""

    def __init__(self, client: PveApiClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"PveApiWriter({self._client!r})"

    def post(self, path: str, data: Mapping[str, BodyValue]) -> str | None:
        """POST the form ``data``; the task's UPID, or None when no task was started."""
        answer = self._client.post(path, **dict(data))
        return answer if isinstance(answer, str) and answer.startswith("UPID:") else None

    def task_status(self, node: str, upid: str) -> Mapping[str, Any]:
        """The ``data`` of ``GET /nodes/{node}/tasks/{upid}/status``."""
        status = self._client.get(f"/nodes/{node}/tasks/{upid}/status")
        if not isinstance(status, Mapping):
            raise TypeError(f"task status of {upid} is not an object")
        return status
