"""``pve-rebalancer run --config FILE``: the long-running service on a real cluster.

Wires the configuration (:mod:`cli.config`) to the layers: a collect function for the
configured source, the :class:`cli.service.RoundRunner` (used as is, extended by composition:
the daemon's collect wrapper sets the round's balancer options from datacenter.cfg when
``follow_crs`` is on, and its ``on_result`` hook persists the round), the exporter server and
the APScheduler schedule.

Persistence: the :class:`balancer.stability.BalancerState` is restored from the state store
at start and saved after every round together with its history row (one transaction), so a
restart resumes the hold count, cooldowns and moves in flight.

Signals: SIGTERM/SIGINT stop cleanly (scheduler shut down after the round in progress, server
stopped, state saved, exit 0). SIGHUP reloads the configuration: balancer options, the source
and the schedule interval take effect from the next round; a broken new file is logged
(every problem) and the running configuration kept. Listen address, TLS, auth, the state
directory and the actuator settings need a restart (a reload says so in the log).

The actuator (:mod:`exporters.actuator`, through :mod:`pveapi` with the ``[source.api]``
credentials) runs when ``[actuator]`` enables it or asks for a dry run; every migration it
starts is written to the state store, and moves it did not carry out (not started, failed)
are taken out of the balancer's in-flight set (a failed one still cools down).

``source.now = "latest"`` makes the files source take the newest point in the node RRD files
as "now": the right choice for a copy of a cluster's files or the simulator, whose clock is
not the wall clock. When datacenter.cfg has ``ha-auto-rebalance=1`` and
``actuator.allow_ha_when_crs_auto_rebalance`` is false, HA resources are only recommended
(PVE's own CRS moves them; the actuator's policy refuses them); :attr:`Daemon.ha_recommend_only`
holds that flag, the log says it once each time it turns on, and each published round
carries it (the ``pve_rebalancer_ha_recommend_only`` gauge and a line on the status page).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from cli.config import Config, ConfigError, SourceConfig, load_config
from cli.errors import CommandError
from model import Snapshot
from model.plan import Move, RoundResult

log = logging.getLogger("pve_rebalancer.run")

DEFAULT_CONFIG = Path("/etc/pve-rebalancer/pve-rebalancer.toml")
NODE_RRD_DIRS = ("pve-node-9.0", "pve2-node")

Collect = Callable[[], Snapshot]


@dataclass(frozen=True, slots=True)
class Acted:
    """What the actuator did not carry out of a plan."""

    not_started: list[Move] = field(default_factory=list)
    failed: list[Move] = field(default_factory=list)


ActOn = Callable[[Snapshot, RoundResult], Acted]
"""Carries a round's plan out (the actuator); returns the moves that did not happen."""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "run",
        help="run the service (rounds, exporter, state)",
        description="Run the rebalancer service as configured: rounds on a schedule, "
        "/metrics and the status page, persistent state. SIGHUP reloads, SIGTERM stops.",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TOML file")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="log exactly which API calls the actuator would make, and make none",
    )


def with_dry_run(config: Config) -> Config:
    """``config`` with the actuator in dry-run mode (``run --dry-run``, kept across reloads).

    A dry run plans real API calls, so it needs ``[source.api]`` like the actuator does.
    """
    api = config.source.api
    if not api.hosts or not api.token_id:
        raise CommandError(
            "--dry-run needs [source.api] hosts and token_id: the actuator's calls go to the API"
        )
    return replace(config, actuator=replace(config.actuator, dry_run=True))


# ----- the source --------------------------------------------------------------------


def newest_rrd_time(rrd_dir: Path) -> int | None:
    """The newest update time among the node RRD files under ``rrd_dir`` (None: no files)."""
    import rrdtool

    newest: int | None = None
    for sub in NODE_RRD_DIRS:
        folder = rrd_dir / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            try:
                last = int(rrdtool.last(str(path)))
            except rrdtool.OperationalError:
                continue
            newest = last if newest is None else max(newest, last)
    return newest


def build_collect(source: SourceConfig) -> Collect:
    """The collect function of a round for the configured source."""
    if source.type == "api":
        return _api_collect(source)
    return _files_collect(source)


def _files_collect(source: SourceConfig) -> Collect:
    from collector.pvecfg.guestcache import GuestConfigCache
    from collector.snapshot_builder import CollectOptions, HistoryCache, build_snapshot

    root, rrd_dir = Path(source.root), Path(source.rrd_dir)
    daemon = source.rrdcached or None
    if daemon and not daemon.startswith(("unix:", "/")) and ":" not in daemon:
        daemon = f"unix:{daemon}"
    cache = GuestConfigCache()
    history = HistoryCache()  # the forecast view re-reads its days of history every 15 min

    def collect() -> Snapshot:
        now: int | None
        if source.now == "latest":
            now = newest_rrd_time(rrd_dir)
            if now is None:
                raise RuntimeError(f"source.now = 'latest': no node RRD files under {rrd_dir}")
        else:
            now = None if source.now == "wall" else int(source.now)
        options = CollectOptions(
            window_s=int(source.window),
            usage=source.usage,  # type: ignore[arg-type]  # checked against VIEWS on load
            half_life_s=source.half_life,
            daemon=daemon,
            now=now,
            status_dump=Path(source.status_dump) if source.status_dump else None,
        )
        return build_snapshot(root, rrd_dir, options, cache=cache, history=history)

    return collect


def api_client(source: SourceConfig) -> Any:
    """The :class:`pveapi.PveApiClient` of ``[source.api]`` (the API source and the actuator)."""
    try:
        from pveapi import ApiToken, PveApiClient
    except ImportError as error:
        raise CommandError(f"the PVE API client is not available: {error}") from error
    api = source.api
    if api.token_secret is None:
        raise CommandError("[source.api] has no token secret (token_secret_env/_file)")
    user, _, name = api.token_id.partition("!")
    token = ApiToken(user, name, api.token_secret.reveal())
    try:
        return PveApiClient(
            api.hosts,
            token,
            verify_tls=api.verify_tls,
            ca_bundle=api.ca_file or None,
            timeout_s=api.timeout,
        )
    except ValueError as error:
        raise CommandError(f"[source.api]: {error}") from error


def _api_collect(source: SourceConfig) -> Collect:
    """The PVE API source (``collector.api_source``), imported only when configured.

    ``now = "latest"`` means the wall clock here (the API serves the live cluster).
    """
    try:
        api_source = importlib.import_module("collector.api_source")
    except ImportError as error:
        raise CommandError(
            "source.type = 'api' needs collector.api_source, which this installation lacks "
            f"({error}); use source.type = 'files' on a PVE node"
        ) from error
    from collector.snapshot_builder import CollectOptions

    client = api_client(source)
    options = CollectOptions(
        window_s=int(source.window),
        usage=source.usage,  # type: ignore[arg-type]  # checked against VIEWS on load
        half_life_s=source.half_life,
        now=source.now if isinstance(source.now, int) else None,
    )

    disk_cache = api_source.GuestDiskCache()  # guest configs are fetched again only on change

    def collect() -> Snapshot:
        snapshot: Snapshot = api_source.build_snapshot_from_api(client, options, cache=disk_cache)
        return snapshot

    return collect


# ----- the daemon ------------------------------------------------------------------------


def ha_recommend_only(snapshot: Snapshot, allow_ha: bool) -> bool:
    """True when PVE's CRS auto-rebalances HA resources itself and we must leave them alone."""
    return snapshot.crs.auto_rebalance and not allow_ha


@dataclass(slots=True)
class _HistoryMark:
    at: float
    key: tuple[object, ...]


def _decision_key(result: RoundResult) -> tuple[object, ...]:
    return (result.triggered, tuple((m.sid, m.target) for m in result.moves))


class Daemon:
    """The running service: one config, one store, one runner, one server, one schedule."""

    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        act_on: ActOn | None = None,
        clock: Callable[[], float] = time.time,
        force_dry_run: bool = False,
    ) -> None:
        from cli.service import RoundRunner
        from cli.state_store import StateStore
        from exporters.state import RoundPublisher

        self.config_path = config_path
        self.force_dry_run = force_dry_run
        """``run --dry-run``: reloaded configurations stay in dry-run mode too."""
        self.config = config
        self.clock = clock
        self.store = StateStore.in_dir(config.state.dir)
        self.publisher = RoundPublisher()
        self._source = build_collect(config.source)
        self._act_on = act_on if act_on is not None else make_actuator(self)
        self.ha_recommend_only = False
        """For the status page / metrics: HA resources are recommend-only this round."""
        self._history: _HistoryMark | None = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        state = self.store.load_state()
        log.info(
            "state restored from %s: hold count %d, %d move(s) in flight, %d cooldown(s)",
            self.store.path,
            state.hold_count,
            len(state.in_flight),
            len(state.cooldowns),
        )
        self.runner = RoundRunner(
            collect=self._collect,
            publisher=self.publisher,
            options=config.balancer.options,
            state=state,
            automation_enabled=config.actuator.enabled and not config.actuator.dry_run,
            clock=clock,
            on_result=self._after_round,
            ha_recommend_only=self._ha_recommend_only,
            freeze_gc_after_first_round=True,
        )
        self._server: Any = None
        self._scheduler: Any = None

    # --- one round (called in the scheduler thread, under the runner's lock) ---------------

    def _collect(self) -> Snapshot:
        config = self.config
        snapshot = self._source()
        self.runner.options = config.balancer.options_for(snapshot.crs)
        recommend_only = ha_recommend_only(
            snapshot, config.actuator.allow_ha_when_crs_auto_rebalance
        )
        if recommend_only and not self.ha_recommend_only:
            log.warning(
                "datacenter.cfg has ha-auto-rebalance=1: PVE's CRS balances HA resources "
                "itself; they are only recommended here, never acted on "
                "(actuator.allow_ha_when_crs_auto_rebalance = false)"
            )
        self.ha_recommend_only = recommend_only
        return snapshot

    def _ha_recommend_only(self, snapshot: Snapshot) -> bool:
        """The round's HA recommend-only flag, for the metrics and the status page."""
        return ha_recommend_only(snapshot, self.config.actuator.allow_ha_when_crs_auto_rebalance)

    def _after_round(self, snapshot: Snapshot, result: RoundResult) -> None:
        finished_at = self.clock()
        key = _decision_key(result)
        mark = self._history
        write = (
            mark is None
            or mark.key != key
            or finished_at - mark.at >= self.config.schedule.history_interval
        )
        self.store.save_round(result, self.runner.state, finished_at, history=write)
        if write:
            self._history = _HistoryMark(finished_at, key)
        if self._act_on is not None and result.moves:
            acted = self._act_on(snapshot, result)
            if self.runner.automation_enabled and (acted.not_started or acted.failed):
                self._forget(acted)
                self.store.save_state(self.runner.state)

    def _forget(self, acted: Acted) -> None:
        """Moves that did not happen are not in flight; those never started do not cool down."""
        state = self.runner.state
        for moves, cooled in ((acted.not_started, False), (acted.failed, True)):
            for move in moves:
                for sid in move.members or [move.sid]:
                    state.in_flight.pop(sid, None)
                    state.crs_in_flight.pop(sid, None)
                    state.crs_in_flight_rounds.pop(sid, None)
                    if not cooled:
                        state.cooldowns.pop(sid, None)

    def fresh_snapshot(self) -> Snapshot:
        """A snapshot from the current source (the actuator re-checks the cluster with it)."""
        return self._source()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the exporter server and the schedule (first round at once)."""
        from cli.service import start_schedule
        from exporters.http import ExporterServer

        self._server = ExporterServer(self.publisher, server_config(self.config))
        try:
            self._server.start()
        except OSError as error:
            raise CommandError(f"cannot serve on {self.config.exporter.listen}: {error}") from error
        self._scheduler = start_schedule(self.runner, self.config.schedule.interval)

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    def wait(self) -> None:
        """Serve until a stop is requested, reloading when asked (main thread)."""
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._reload.is_set() and not self._stop.is_set():
                self._reload.clear()
                self.reload()

    def stop(self) -> None:
        """Stop the schedule (after the round in progress), the server; save the state."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.store.save_state(self.runner.state)
        self.store.close()
        log.info("stopped; state saved (hold count %d)", self.runner.state.hold_count)

    def reload(self) -> bool:
        """Read the configuration again; keep the running one when the new one is broken."""
        try:
            new = load_config(self.config_path)
            if self.force_dry_run:
                new = with_dry_run(new)
        except (ConfigError, CommandError) as error:
            if isinstance(error, CommandError):
                log.error("reload refused: %s; keeping the running configuration", error)
                return False
            for problem in error.problems:
                log.error("reload refused: %s", problem.format(self.config_path))
            log.error("reload refused: keeping the running configuration")
            return False
        try:
            source = build_collect(new.source) if new.source != self.config.source else None
        except CommandError as error:
            log.error("reload refused: %s; keeping the running configuration", error)
            return False
        old, self.config = self.config, new
        if source is not None:
            self._source = source
        self.runner.options = new.balancer.options
        for section in ("exporter", "state", "actuator"):
            if getattr(old, section) != getattr(new, section):
                log.warning("reload: [%s] changes take effect after a restart", section)
        if new.schedule.interval != old.schedule.interval and self._scheduler is not None:
            self._scheduler.reschedule_job(
                "round", trigger="interval", seconds=new.schedule.interval
            )
        log.info(
            "configuration reloaded (threshold %s, interval %g s)",
            "from datacenter.cfg" if new.balancer.follow_crs else new.balancer.options.threshold,
            new.schedule.interval,
        )
        return True


def server_config(config: Config) -> Any:
    """The exporter server settings from ``[exporter]``."""
    from exporters.auth import BasicAuth
    from exporters.http import ServerConfig, TlsConfig

    exporter = config.exporter
    tls = None
    if exporter.tls_cert:
        tls = TlsConfig(Path(exporter.tls_cert), Path(exporter.tls_key))
    auth = None
    if exporter.auth_user:
        auth = BasicAuth.from_hash(exporter.auth_user, exporter.auth_password_hash)
    return ServerConfig(
        host=exporter.listen,
        port=exporter.port,
        tls=tls,
        auth=auth,
        health_max_age_s=max(exporter.health_max_age, 3 * config.schedule.interval),
    )


class MigrationLog:
    """The actuator's ``on_migration`` callback: every migration in the state store."""

    def __init__(self, store: Any, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._ids: dict[str, int] = {}

    def __call__(
        self,
        sid: str,
        source: str,
        target: str,
        upid: str | None,
        state: str,
        error: str | None,
    ) -> None:
        if state == "started":
            self._ids[sid] = self._store.record_migration(
                sid, source, target, self._clock(), upid=upid, state="running"
            )
            return
        ident = self._ids.pop(sid, None)
        if ident is None:
            ident = self._store.record_migration(sid, source, target, self._clock(), upid=upid)
        self._store.update_migration(
            ident, state, upid=upid, finished_at=self._clock(), error=error
        )


def make_actuator(daemon: Daemon) -> ActOn | None:
    """The actuator (:mod:`exporters.actuator`) when ``[actuator]`` enables it or a dry run."""
    settings = daemon.config.actuator
    if not settings.active:
        return None
    from exporters.actuator import Actuator
    from exporters.actuator import ActuatorConfig as Settings
    from exporters.actuator_pveapi import PveApiWriter

    try:
        actuator = Actuator(
            PveApiWriter(api_client(daemon.config.source)),
            daemon.fresh_snapshot,
            Settings(
                enabled=settings.enabled,
                dry_run=settings.dry_run,
                concurrency=settings.concurrency,
                windows=tuple(settings.windows),
                allow_containers=settings.allow_containers,
                allow_ha_when_crs_auto_rebalance=settings.allow_ha_when_crs_auto_rebalance,
                task_timeout_s=settings.task_timeout,
                poll_interval_s=settings.poll_interval,
            ),
            recorder=daemon.publisher,
            on_migration=MigrationLog(daemon.store, daemon.clock),
        )
    except ValueError as error:
        raise CommandError(f"[actuator]: {error}") from error

    def act(snapshot: Snapshot, result: RoundResult) -> Acted:
        report = actuator.execute(snapshot, result)
        failed = [o.move for o in report.outcomes if o.state == "failed"]
        planned = [o.move for o in report.outcomes if o.state == "planned"]  # dry run
        return Acted(not_started=list(report.not_started) + planned, failed=failed)

    return act


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    configure_logging()
    try:
        config = load_config(args.config)
    except ConfigError as error:
        raise CommandError(f"invalid configuration:\n{error}") from error
    if args.dry_run:
        config = with_dry_run(config)
    daemon = Daemon(args.config, config, force_dry_run=args.dry_run)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        daemon.request_stop()

    def on_reload(signum: int, frame: FrameType | None) -> None:
        daemon.request_reload()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    try:
        daemon.start()
        daemon.wait()
    finally:
        daemon.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cli.run_cmd --config FILE`` (the same as ``pve-rebalancer run``)."""
    parser = argparse.ArgumentParser(prog="pve-rebalancer run")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CommandError as error:
        print(f"pve-rebalancer run: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
