"""Proxmox task ids (UPIDs) and task status, for polling a migration until it ends.

A UPID is ``UPID:node:pid:pstart:starttime:type:id:user:`` (pid, pstart and starttime in
upper-case hex). ``GET /nodes/{node}/tasks/{upid}/status`` answers ``status`` ``running`` or
``stopped``, and once stopped ``exitstatus`` (``OK`` or the error message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Upid:
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    def __str__(self) -> str:
        return (
            f"UPID:{self.node}:{self.pid:08X}:{self.pstart:08X}:{self.starttime:08X}:"
            f"{self.type}:{self.id}:{self.user}:"
        )


def parse_upid(text: str) -> Upid:
    """Split a UPID; ValueError when it is not one."""
    parts = text.split(":")
    if len(parts) < 9 or parts[0] != "UPID":
        raise ValueError(f"not a UPID: {text!r}")
    try:
        return Upid(
            node=parts[1],
            pid=int(parts[2], 16),
            pstart=int(parts[3], 16),
            starttime=int(parts[4], 16),
            type=parts[5],
            id=parts[6],
            user=":".join(parts[7:-1]),
        )
    except ValueError:
        raise ValueError(f"not a UPID: {text!r}") from None


@dataclass(frozen=True, slots=True)
class TaskStatus:
    upid: str
    status: str
    """``running`` or ``stopped``."""
    exitstatus: str | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def ok(self) -> bool:
        """Stopped with exit status ``OK``."""
        return self.status == "stopped" and self.exitstatus == "OK"

    @classmethod
    def from_json(cls, upid: str, data: dict[str, Any]) -> TaskStatus:
        exitstatus = data.get("exitstatus")
        return cls(upid, str(data.get("status", "unknown")), exitstatus and str(exitstatus))
