"""``pve-rebalancer simulate``: the closed-loop proof on a fresh simulated cluster.

Writes a seeded cluster with one day of history into a temporary directory, then runs the
round loop over simulated time as fast as possible (see :mod:`cli.closed_loop`), with or
without carrying the moves out, and reports how the cluster fared: imbalance over time,
migrations and GiB moved, rule / headroom violations and ping-pong found by independent
checks, and whether the node put into maintenance was evacuated. ``--plot`` draws it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

STEP_UNIT = 60


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "simulate",
        help="run the round loop on a simulated cluster over simulated time and audit it",
        description="Closed loop on a fresh simulated cluster: advance, collect, decide and "
        "(with --actuate) migrate, every --step simulated seconds, with seeded scenario "
        "events (guests stop/start, a node in maintenance from 40% to 70% of the run).",
    )
    parser.add_argument("--hours", type=float, default=4.0, help="simulated hours to run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--guests", type=int, default=60)
    parser.add_argument(
        "--actuate", action="store_true", help="carry the planned moves out in the simulator"
    )
    parser.add_argument(
        "--step", type=int, default=60, help="simulated seconds per round (whole minutes)"
    )
    parser.add_argument("--format", choices=("json", "table"), default="table")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="write a PNG chart")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cli.errors import CommandError

    if args.hours <= 0 or args.step < STEP_UNIT or args.step % STEP_UNIT:
        raise CommandError("--hours must be > 0 and --step a positive multiple of 60")
    if args.nodes < 2 or args.guests < 1:
        raise CommandError("--nodes must be >= 2 and --guests >= 1")
    report = simulate(
        nodes=args.nodes,
        guests=args.guests,
        seed=args.seed,
        hours=args.hours,
        step_s=args.step,
        actuate=args.actuate,
        progress_to=sys.stderr,
    )
    if args.plot is not None:
        plot_report(report, args.plot)
    if args.format == "json":
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        print(report_table(report))
    return 0


def simulate(
    *,
    nodes: int,
    guests: int,
    seed: int,
    hours: float,
    step_s: int,
    actuate: bool,
    progress_to: TextIO | None = None,
) -> dict[str, Any]:
    """Run the whole closed loop in a temporary directory; return the report."""
    from balancer.options import BalancerOptions
    from cli.closed_loop import ClosedLoop, plan_scenario, round_count
    from cli.demo_service import cluster_crs
    from simulator.cluster import simulate_cluster

    rounds = round_count(hours, step_s)
    with tempfile.TemporaryDirectory(prefix="pve-rebalancer-simulate-") as tmp:
        cluster = simulate_cluster(Path(tmp), nodes, guests, days=1, seed=seed)
        options = BalancerOptions.from_crs(cluster_crs(cluster), method="greedy", scope="all")
        loop = ClosedLoop(
            cluster,
            options,
            step_s=step_s,
            actuate=actuate,
            events=plan_scenario(cluster, rounds, seed),
        )
        bar = ProgressBar(rounds, progress_to)
        try:
            loop.run(0, rounds, bar.update)
        finally:
            bar.close()
        report = loop.auditor.report(options.threshold)
    report["scenario"] = {
        "nodes": nodes,
        "guests": guests,
        "seed": seed,
        "hours": hours,
        "step_s": step_s,
        "actuate": actuate,
        "threshold_percent": options.threshold,
        "cooldown_s": options.cooldown_seconds,
        "mem_headroom": options.mem_headroom,
    }
    return report


class ProgressBar:
    """A one-line progress bar on a terminal stream; silent when it is not a TTY."""

    def __init__(self, total: int, stream: TextIO | None, width: int = 30) -> None:
        self.total, self.width = max(total, 1), width
        self.stream = stream if stream is not None and stream.isatty() else None

    def update(self, done: int) -> None:
        if self.stream is None:
            return
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{self.total} rounds")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()


def _clock(time: int | None, start: int) -> str:
    if time is None:
        return "-"
    seconds = time - start
    return f"+{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def report_table(report: dict[str, Any]) -> str:
    """The report as text: a summary, findings, then one line per round."""
    from cli.tables import table

    timeline = report["timeline"]
    start = timeline[0]["time"] if timeline else 0
    maint = report["maintenance"]
    scenario = report["scenario"]
    evacuated = (
        f"yes, at {_clock(maint['evacuated_at'], start)}"
        if maint["evacuated"]
        else f"no ({maint['running_guests_left']} running guest(s) left)"
    )
    summary = [
        ("scenario", f"{scenario['nodes']} nodes, {scenario['guests']} guests, "
         f"seed {scenario['seed']}, {scenario['hours']:g} h at {scenario['step_s']} s, "
         f"{'actuating' if scenario['actuate'] else 'recommend only'}"),
        ("rounds", f"{report['rounds']} ({report['failed_rounds']} failed)"),
        ("threshold", f"{scenario['threshold_percent']:g}%"),
        ("rounds under threshold", _percent(report["rounds_under_threshold"])),
        ("... after the first plan", _percent(report["rounds_under_threshold_after_first_plan"])),
        ("migrations", f"{report['migrations']} ({report['gib_moved']:.1f} GiB moved)"),
        ("guests seen changing node", str(report["observed_relocations"])),
        ("rule violations", str(len(report["rule_violations"]))),
        ("memory-headroom violations", str(len(report["headroom_violations"]))),
        ("ping-pong moves", str(len(report["ping_pong"]))),
        ("maintenance", f"{maint['node'] or '-'} from {_clock(maint['entered'], start)} "
         f"to {_clock(maint['left'], start)}"),
        ("maintenance evacuated", evacuated if maint["node"] else "-"),
    ]  # fmt: skip
    parts = [table(("", ""), summary)]
    findings = [
        (_clock(f["time"], start), f["kind"], f["subject"], f["detail"])
        for key in ("rule_violations", "headroom_violations", "ping_pong")
        for f in report[key]
    ]
    if findings:
        parts.append(table(("time", "finding", "subject", "detail"), findings))
    events = [
        (_clock(e["time"], start), e["action"], e["subject"], e["outcome"])
        for e in report["events"]
    ]
    if events:
        parts.append(table(("time", "event", "subject", "outcome"), events))
    rows = [
        (
            _clock(r["time"], start),
            round(r["imbalance"] * 100.0, 2) if r["ok"] else "failed",
            "yes" if r["triggered"] else "no",
            len(r["moves"]),
            ", ".join(r["moves"]) or "-",
        )
        for r in timeline
    ]
    parts.append(table(("time", "imbalance %", "triggered", "moves", "planned"), rows))
    return "\n\n".join(parts)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def plot_report(report: dict[str, Any], path: Path) -> None:
    """PNG: imbalance with the threshold and the migrations, and the node loads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = [r for r in report["timeline"] if r["ok"]]
    start = timeline[0]["time"] if timeline else 0
    hours = [(r["time"] - start) / 3600 for r in timeline]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    top.plot(hours, [r["imbalance"] * 100 for r in timeline], label="imbalance")
    top.axhline(report["scenario"]["threshold_percent"], color="red", ls="--", label="threshold")
    moved = [(h, r["imbalance"] * 100) for h, r in zip(hours, timeline, strict=True) if r["moves"]]
    if moved:
        top.scatter(*zip(*moved, strict=True), marker="v", color="black", label="migrations")
    maint = report["maintenance"]
    if maint["entered"] is not None:
        left = maint["left"] if maint["left"] is not None else timeline[-1]["time"]
        span = ((maint["entered"] - start) / 3600, (left - start) / 3600)
        top.axvspan(*span, alpha=0.15, label=f"{maint['node']} in maintenance")
        bottom.axvspan(*span, alpha=0.15)
    top.set_ylabel("imbalance (%)")
    top.legend(loc="upper right")
    for node in sorted({n for r in timeline for n in r["node_loads"]}):
        loads = [r["node_loads"].get(node, float("nan")) * 100 for r in timeline]
        bottom.plot(hours, loads, label=node)
    bottom.set_ylabel("node load (%)")
    bottom.set_xlabel("simulated hours")
    bottom.legend(loc="upper right", ncol=2, fontsize="small")
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
