"""The PVE API write calls the actuator makes, and the small interface it makes them through.

Which call moves a guest (PVE 9 API):

- HA resource, VM: ``POST /cluster/ha/resources/vm:<id>/migrate`` with ``node=<target>``
  (live migration, carried out by the HA manager);
- HA resource, CT: ``POST /cluster/ha/resources/ct:<id>/relocate`` with ``node=<target>``
  (stop, move, start: containers cannot migrate live);
- other VM: ``POST /nodes/<source>/qemu/<id>/migrate`` with ``target=<target>``, ``online=1``;
- other CT: ``POST /nodes/<source>/lxc/<id>/migrate`` with ``target=<target>``, ``restart=1``.

A resource whose HA state is ``ignored`` is not managed by the HA stack and is moved with
the direct call. A positive-affinity bundle of HA resources is moved with ONE request for
the bundle's lead: PVE 9's HA manager co-migrates the resources that must stay together.

The actuator only depends on :class:`ApiWriter` (a ``post`` returning the task's UPID and a
``task_status``), so that it stays testable without a cluster and independent of the HTTP
client (``pveapi``) that the wiring layer hands it. A real HA request returns no UPID (the
request is queued for the HA manager); ``post`` then returns ``None`` and the actuator
follows the move in fresh snapshots instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from model.snapshot import Guest

BodyValue = str | int


class ApiWriter(Protocol):
    """What the actuator needs from a PVE API client."""

    def post(self, path: str, data: Mapping[str, BodyValue]) -> str | None:
        """POST ``data`` (form fields) to ``path``; the UPID of the task started, if any."""
        ...

    def task_status(self, node: str, upid: str) -> Mapping[str, Any]:
        """``GET /nodes/{node}/tasks/{upid}/status``'s data (``status``, ``exitstatus``)."""
        ...


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One API request: method, path and form body."""

    method: str
    path: str
    body: Mapping[str, BodyValue] = field(default_factory=dict)

    def describe(self) -> str:
        """``POST /path key=value ...``, for logs and dry runs (never holds secrets)."""
        fields = " ".join(f"{k}={v}" for k, v in self.body.items())
        return f"{self.method} {self.path} {fields}".rstrip()


def is_ha_managed(guest: Guest) -> bool:
    """Whether moves of ``guest`` go through the HA manager (an HA resource not ignored)."""
    return guest.ha is not None and guest.ha.state != "ignored"


def move_call(guest: Guest, source: str, target: str) -> ApiCall:
    """The request that moves ``guest`` from ``source`` to ``target``."""
    if is_ha_managed(guest):
        action = "migrate" if guest.type == "qemu" else "relocate"
        return ApiCall("POST", f"/cluster/ha/resources/{guest.sid}/{action}", {"node": target})
    if guest.type == "qemu":
        return ApiCall(
            "POST", f"/nodes/{source}/qemu/{guest.vmid}/migrate", {"target": target, "online": 1}
        )
    return ApiCall(
        "POST", f"/nodes/{source}/lxc/{guest.vmid}/migrate", {"target": target, "restart": 1}
    )


def task_node(upid: str, default: str) -> str:
    """The node a task runs on, from its UPID (``UPID:node:pid:...``), else ``default``."""
    parts = upid.split(":")
    if len(parts) > 2 and parts[0] == "UPID" and parts[1]:
        return parts[1]
    return default
