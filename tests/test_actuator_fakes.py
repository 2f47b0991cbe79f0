"""Test doubles for the actuator tests (no tests here): API writer, clock, snapshots."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from model.plan import Move, RoundResult
from model.snapshot import Crs, Guest, HaConfig, Node, Rule, Snapshot

NODES = ("pve1", "pve2", "pve3")


def make_node(name: str, *, online: bool = True, maintenance: bool = False) -> Node:
    return Node(name, online, maintenance, 8.0, 32e9, 2.0, 8e9, ha_state="online")


def make_guest(
    vmid: int,
    node: str,
    *,
    type_: str = "qemu",
    ha: str | None = None,
    status: str = "running",
) -> Guest:
    prefix = "vm" if type_ == "qemu" else "ct"
    ha_config = None if ha is None else HaConfig(ha, service_state="started")
    return Guest(
        vmid, f"{prefix}:{vmid}", type_, f"guest{vmid}", node, status, ha_config,  # type: ignore[arg-type]
        2.0, 4e9, 0.5, 2e9,
    )  # fmt: skip


def with_service_state(guest: Guest, state: str) -> Guest:
    """``guest`` as the HA manager reports it in ``state`` (migrate, error, ...)."""
    assert guest.ha is not None
    return replace(guest, ha=replace(guest.ha, service_state=state))


def make_snapshot(
    guests: list[Guest],
    *,
    nodes: list[Node] | None = None,
    rules: list[Rule] | None = None,
    auto_rebalance: bool = False,
) -> Snapshot:
    return Snapshot(
        timestamp=1_700_000_000,
        nodes=nodes if nodes is not None else [make_node(n) for n in NODES],
        guests=guests,
        rules=rules or [],
        crs=Crs(ha="dynamic", auto_rebalance=auto_rebalance),
    )


def make_move(rank: int, sid: str, source: str, target: str, **kwargs: Any) -> Move:
    kwargs.setdefault("imbalance_after", 0.4 - rank * 0.05)
    kwargs.setdefault("reason", f"relieve {source}")
    return Move(rank=rank, sid=sid, source=source, target=target, **kwargs)


def make_result(moves: list[Move]) -> RoundResult:
    return RoundResult(
        imbalance=0.4,
        imbalance_cv=0.8,
        triggered=True,
        reason="above threshold",
        threshold=30.0,
        margin=10.0,
        moves=moves,
    )


@dataclass
class FakeTime:
    """Monotonic time that only moves when the code under test sleeps."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class FakeWriter:
    """Records every call; tasks end after ``polls_to_finish`` polls with ``exitstatus``.

    ``exitstatus`` maps a path to the exit status of its task (default ``OK``; ``None``:
    the task never ends). ``post_errors`` maps a path to an exception ``post`` raises.
    ``on_post`` lets a test change the cluster when a request arrives.
    """

    polls_to_finish: int = 1
    exitstatus: dict[str, str | None] = field(default_factory=dict)
    post_errors: dict[str, Exception] = field(default_factory=dict)
    return_upid: bool = True
    on_post: Callable[[str, Mapping[str, Any]], None] | None = None
    events: list[tuple[str, ...]] = field(default_factory=list)
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _tasks: dict[str, tuple[str, int]] = field(default_factory=dict)

    def post(self, path: str, data: Mapping[str, Any]) -> str | None:
        self.posts.append((path, dict(data)))
        self.events.append(("post", path))
        if path in self.post_errors:
            raise self.post_errors[path]
        if self.on_post is not None:
            self.on_post(path, data)
        if not self.return_upid:
            return None
        node = path.split("/")[2] if path.startswith("/nodes/") else "pve1"
        upid = f"UPID:{node}:0000ABCD:00001234:65000000:migrate:{len(self.posts)}:root@pam:"
        self._tasks[upid] = (path, 0)
        return upid

    def task_status(self, node: str, upid: str) -> Mapping[str, Any]:
        path, polls = self._tasks[upid]
        polls += 1
        self._tasks[upid] = (path, polls)
        self.events.append(("poll", path))
        exitstatus = self.exitstatus.get(path, "OK")
        if exitstatus is None or polls < self.polls_to_finish:
            return {"status": "running", "upid": upid, "node": node}
        return {"status": "stopped", "exitstatus": exitstatus, "upid": upid, "node": node}


@dataclass
class Recorder:
    """Stands in for RoundPublisher.record_migration."""

    events: list[tuple[str, str]] = field(default_factory=list)

    def record_migration(self, guest_type: str, outcome: str) -> None:
        self.events.append((guest_type, outcome))
