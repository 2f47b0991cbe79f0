"""The published round: what every output surface reads, swapped in as one reference.

A balancing round ends with the wiring layer building a :class:`PublishedRound` and handing
it to :meth:`RoundPublisher.publish`. Publishing replaces a single attribute (an atomic
reference assignment under the GIL), so a scrape or page render that reads
:meth:`RoundPublisher.view` once works on one round from start to end, never waits for a
round in progress and never sees half of one.

A published round is immutable by contract: its dataclass is frozen and the snapshot and
result it carries belong to the publisher from then on (they are not copied, which would
cost a full pass over every guest each round); callers must not mutate them afterwards.

Node loads come in two views, both with the CRS formula ``(cpu/maxcpu + mem/maxmem) / 2``:
``raw`` from the newest usage as collected and ``smoothed`` from a smoothed usage view
(``ewma``, ``p95``, ...). A snapshot whose ``usage_view`` is ``last`` is raw usage and has
no smoothed view; any other snapshot is the smoothed view and carries the raw one in the
nodes' ``cpu_last``/``mem_last``. Only what exists is published: a node without
``cpu_last``/``mem_last`` has no raw load in a smoothed snapshot, and nothing is ever
copied from one view into the other.

Round and migration counters live next to the published reference (see
:mod:`exporters.round_stats` and :mod:`exporters.actuator_metrics`); the wiring layer
increments them with :meth:`RoundPublisher.record_round` and
:meth:`RoundPublisher.record_migration`. Publishing does not count a round by itself.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from exporters.actuator_metrics import MigrationCounters, MigrationOutcome
from exporters.round_stats import RoundStats
from model import Snapshot
from model.plan import NodeLoad, RoundResult

RAW_USAGE_VIEW = "last"

GUEST_TYPE_BY_SID_PREFIX = {"vm": "qemu", "ct": "lxc"}


def node_id(name: str) -> str:
    """The prometheus-pve-exporter id of a node: ``node/<name>``."""
    return f"node/{name}"


def guest_id(sid: str) -> str:
    """The prometheus-pve-exporter id of a guest from its HA sid (``vm:100`` -> ``qemu/100``).

    A sid that does not follow the ``vm:``/``ct:`` form is returned unchanged rather than
    rejected: a label with an odd value is more useful than a failed scrape.
    """
    prefix, sep, vmid = sid.partition(":")
    guest_type = GUEST_TYPE_BY_SID_PREFIX.get(prefix)
    if not sep or guest_type is None:
        return sid
    return f"{guest_type}/{vmid}"


def node_loads_from(snapshot: Snapshot, *, newest: bool = False) -> tuple[NodeLoad, ...]:
    """Each node's CRS load, in snapshot node order.

    Usage is the snapshot's usage view (``cpu``/``mem``), or with ``newest`` the newest
    measurement (``cpu_last``/``mem_last``; nodes lacking either are left out). A node with
    no known capacity (maxcpu or maxmem 0) contributes 0 for that resource.
    """
    nodes = snapshot.nodes
    if newest:
        cpu_values = [n.cpu_last for n in nodes]
        mem_values = [n.mem_last for n in nodes]
    else:
        cpu_values = [n.cpu for n in nodes]
        mem_values = [n.mem for n in nodes]
    cpu = np.array([np.nan if v is None else v for v in cpu_values], dtype=np.float64)
    mem = np.array([np.nan if v is None else v for v in mem_values], dtype=np.float64)
    known = np.array([c is not None and m is not None for c, m in zip(cpu_values, mem_values,
                                                                       strict=True)])  # fmt: skip
    maxcpu = np.array([n.maxcpu for n in nodes], dtype=np.float64)
    maxmem = np.array([n.maxmem for n in nodes], dtype=np.float64)
    cpu_share = np.divide(cpu, maxcpu, out=np.zeros_like(cpu), where=maxcpu > 0)
    mem_share = np.divide(mem, maxmem, out=np.zeros_like(mem), where=maxmem > 0)
    load = (cpu_share + mem_share) / 2.0
    return tuple(
        NodeLoad(
            name=n.name,
            cpu=float(cpu[i]),
            mem=float(mem[i]),
            maxcpu=float(maxcpu[i]),
            maxmem=float(maxmem[i]),
            load=float(load[i]),
            usable=n.online and not n.maintenance,
        )
        for i, n in enumerate(nodes)
        if known[i]
    )


def raw_node_loads(snapshot: Snapshot) -> tuple[NodeLoad, ...]:
    """Loads from the newest measured usage, whatever the snapshot's usage view."""
    return node_loads_from(snapshot, newest=snapshot.usage_view != RAW_USAGE_VIEW)


def cpu_ratio(load: NodeLoad) -> float:
    """Share of the node's cores in use, 0 when the capacity is unknown."""
    return load.cpu / load.maxcpu if load.maxcpu > 0 else 0.0


def mem_ratio(load: NodeLoad) -> float:
    """Share of the node's memory in use, 0 when the capacity is unknown."""
    return load.mem / load.maxmem if load.maxmem > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PlacementScore:
    """A start-placement score: how well ``node`` suits starting guest ``sid``."""

    sid: str
    node: str
    score: float


@dataclass(frozen=True, slots=True)
class PublishedRound:
    """One finished round as the exporters show it. Build it with :meth:`create`."""

    finished_at: float
    """Unix seconds when the round ended."""
    duration_s: float
    ok: bool
    snapshot: Snapshot | None = None
    result: RoundResult | None = None
    raw_node_loads: tuple[NodeLoad, ...] | None = None
    smoothed_node_loads: tuple[NodeLoad, ...] | None = None
    issue_counts: tuple[tuple[str, str, int], ...] = ()
    """(kind, severity, count) of the snapshot's findings, sorted."""
    automation_enabled: bool = False
    """Whether the actuator may carry out the plan's moves."""
    ha_recommend_only: bool = False
    """HA resources are only recommended: datacenter.cfg has ``ha-auto-rebalance=1`` (the
    built-in CRS moves them itself) and the actuator is not allowed to act on them."""
    placement_scores: tuple[PlacementScore, ...] = ()
    error: str | None = None
    """Why the round failed (ok False); never contains secrets."""

    @classmethod
    def create(
        cls,
        snapshot: Snapshot | None,
        result: RoundResult | None,
        *,
        finished_at: float,
        duration_s: float,
        ok: bool = True,
        raw_usage: Snapshot | None = None,
        smoothed_usage: Snapshot | None = None,
        automation_enabled: bool = False,
        ha_recommend_only: bool = False,
        placement_scores: Mapping[str, Mapping[str, float]] | None = None,
        error: str | None = None,
    ) -> PublishedRound:
        """Build a round, deriving node loads and finding counts once, here.

        Raw loads come from ``raw_usage`` if given, else from ``snapshot`` (its usage when
        its view is ``last``, its ``cpu_last``/``mem_last`` otherwise). Smoothed loads come
        from ``smoothed_usage`` if given, else from ``snapshot`` when its view is not
        ``last``. ``placement_scores`` maps a guest sid to ``{node: score}``.
        """
        raw_source = raw_usage if raw_usage is not None else snapshot
        smoothed_source = smoothed_usage
        if smoothed_source is None and snapshot is not None:
            smoothed_source = None if snapshot.usage_view == RAW_USAGE_VIEW else snapshot
        issues = Counter((f.kind, f.severity) for f in (snapshot.issues if snapshot else ()))
        scores = tuple(
            PlacementScore(sid=sid, node=node, score=float(score))
            for sid, per_node in sorted((placement_scores or {}).items())
            for node, score in sorted(per_node.items())
        )
        return cls(
            finished_at=float(finished_at),
            duration_s=float(duration_s),
            ok=ok,
            snapshot=snapshot,
            result=result,
            raw_node_loads=None if raw_source is None else raw_node_loads(raw_source) or None,
            smoothed_node_loads=(
                None if smoothed_source is None else node_loads_from(smoothed_source)
            ),
            issue_counts=tuple((k, s, n) for (k, s), n in sorted(issues.items())),
            automation_enabled=automation_enabled,
            ha_recommend_only=ha_recommend_only,
            placement_scores=scores,
            error=error,
        )

    @classmethod
    def failed(cls, *, finished_at: float, duration_s: float, error: str) -> PublishedRound:
        """A round that produced nothing (collection or balancing raised)."""
        return cls(float(finished_at), float(duration_s), ok=False, error=error)

    @property
    def imbalance_after_plan(self) -> float | None:
        """Expected imbalance once the plan is done; the current one when nothing moves."""
        result = self.result
        if result is None:
            return None
        if result.imbalance_after is not None:
            return result.imbalance_after
        if result.moves:
            return result.moves[-1].imbalance_after
        return result.imbalance

    @property
    def issue_total(self) -> int:
        return sum(n for _, _, n in self.issue_counts)

    def node_load_views(self) -> dict[str, tuple[NodeLoad, ...]]:
        """The node-load views this round has, keyed ``raw`` / ``smoothed``."""
        views: dict[str, tuple[NodeLoad, ...]] = {}
        if self.raw_node_loads is not None:
            views["raw"] = self.raw_node_loads
        if self.smoothed_node_loads is not None:
            views["smoothed"] = self.smoothed_node_loads
        return views


@dataclass(frozen=True, slots=True)
class PublishedView:
    """What a reader sees: the latest round and the latest successful one, read together."""

    latest: PublishedRound | None = None
    last_good: PublishedRound | None = None
    """The newest round with ok True; its plan stays on show while later rounds fail."""
    generation: int = 0
    """How many rounds have been published; identifies this view for caches."""

    @property
    def display(self) -> PublishedRound | None:
        """The round whose data to show: the latest if it has data, else the last good one."""
        latest = self.latest
        if latest is not None and latest.result is not None:
            return latest
        return self.last_good or latest


@dataclass(slots=True)
class RoundPublisher:
    """Holds the published view and the counters; safe to call from any thread."""

    round_stats: RoundStats = field(default_factory=RoundStats)
    migrations: MigrationCounters = field(default_factory=MigrationCounters)
    _view: PublishedView = field(default_factory=PublishedView)
    _write_lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, published: PublishedRound) -> None:
        """Make ``published`` the round every reader sees next (one reference swap).

        Writers serialise on a lock; readers never take it.
        """
        if not math.isfinite(published.finished_at):
            raise ValueError("finished_at must be a finite unix time")
        with self._write_lock:
            current = self._view
            last_good = published if published.ok else current.last_good
            self._view = PublishedView(published, last_good, current.generation + 1)

    def view(self) -> PublishedView:
        """The current view; read it once per scrape/render and use only that object."""
        return self._view

    def latest(self) -> PublishedRound | None:
        return self._view.latest

    def record_round(self, ok: bool, duration_s: float, finished_at: float | None = None) -> None:
        """Count one round and observe its wall time (for the counters and the histogram)."""
        self.round_stats.record(ok, duration_s, finished_at)

    def record_migration(self, guest_type: str, outcome: MigrationOutcome) -> None:
        """Count an actuator migration event (type ``qemu``/``lxc``; started/succeeded/failed)."""
        self.migrations.record(guest_type, outcome)
