"""``pve-rebalancer demo``: the service loop on a simulated cluster that keeps moving.

Every round the simulator advances (new RRD points, status dump, manager_status), the
collector reads the files back exactly as on a real node, the balancer decides and the
exporter serves the result on ``/metrics`` and the status page. With ``--apply-moves`` the
planned moves are carried out in the simulator (a stand-in for the PVE API actuator).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from balancer.options import BalancerOptions
from cli.service import RoundRunner, start_schedule
from collector.pvecfg.guestcache import GuestConfigCache
from collector.pvecfg.tree import read_tree
from collector.snapshot_builder import CollectOptions, build_snapshot
from exporters.http import ExporterServer, ServerConfig
from exporters.state import RoundPublisher
from model import Crs, Snapshot
from model.plan import RoundResult
from simulator.cluster import SimulatedCluster


def simulated_collector(
    cluster: SimulatedCluster, step_s: int, cache: GuestConfigCache | None = None
) -> Snapshot:
    """Advance the simulated cluster one step, then collect it from its files."""
    cluster.advance(step_s)
    return build_snapshot(
        cluster.etc_root,
        cluster.rrd_root,
        CollectOptions(now=cluster.now, status_dump=cluster.dump_path),
        cache=cache,
    )


def apply_in_simulator(cluster: SimulatedCluster, result: RoundResult) -> list[str]:
    """Start the planned moves in the simulator; returns what could not be started."""
    refused = []
    for move in result.moves:
        for sid in move.members or [move.sid]:
            try:
                cluster.migrate(int(sid.split(":")[1]), move.target)
            except ValueError as error:
                refused.append(f"{sid}: {error}")
    return refused


def serve_simulated(args: argparse.Namespace, cluster: SimulatedCluster) -> int:
    """Run the service loop on ``cluster`` until SIGTERM/SIGINT or ``args.rounds`` rounds."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    publisher = RoundPublisher()
    cache = GuestConfigCache()
    done = threading.Event()
    rounds = 0

    def after_round(snapshot: Snapshot, result: RoundResult) -> None:
        nonlocal rounds
        rounds += 1
        if args.apply_moves and result.moves:
            for problem in apply_in_simulator(cluster, result):
                print(f"  not applied: {problem}", flush=True)
        if args.rounds is not None and rounds >= args.rounds:
            done.set()

    runner = RoundRunner(
        collect=lambda: simulated_collector(cluster, args.sim_step, cache),
        publisher=publisher,
        options=BalancerOptions.from_crs(cluster_crs(cluster), method="greedy", scope="all"),
        automation_enabled=args.apply_moves,
        on_result=after_round,
        freeze_gc_after_first_round=True,
    )
    server = ExporterServer(publisher, ServerConfig(host=args.listen, port=args.port))
    server.start()
    print(f"serving {server.url}metrics and the status page at {server.url}", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    scheduler = start_schedule(runner, args.interval)
    try:
        done.wait()
    finally:
        scheduler.shutdown(wait=True)
        server.stop()
    return 0


def cluster_crs(cluster: SimulatedCluster) -> Crs:
    """The simulated cluster's datacenter.cfg CRS settings, read as on a real node."""
    return read_tree(cluster.etc_root).crs
