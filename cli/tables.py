"""Plain-text tables for the terminal: snapshots, plans and placement rankings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from model import Snapshot
from model.plan import RoundResult

GIB = 2**30


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned text columns, numbers right-aligned, one header rule."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(isinstance(row[i], int | float) for row in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "-" if value is None else str(value)


def snapshot_table(snapshot: Snapshot) -> str:
    guests_on = Counter(g.node for g in snapshot.guests)
    running_on = Counter(g.node for g in snapshot.guests if g.status == "running")
    rows = [
        (
            n.name,
            "maintenance" if n.maintenance else ("online" if n.online else "offline"),
            n.maxcpu,
            n.cpu,
            round(n.maxmem / GIB, 1),
            round(n.mem / GIB, 1),
            guests_on[n.name],
            running_on[n.name],
        )
        for n in snapshot.nodes
    ]
    out = [
        f"cluster {snapshot.cluster or '-'} at {snapshot.timestamp}, usage view "
        f"{snapshot.usage_view}, CRS ha={snapshot.crs.ha} "
        f"threshold={snapshot.crs.threshold:g}% margin={snapshot.crs.margin:g}%",
        "",
        table(
            ("node", "state", "cores", "cpu used", "mem GiB", "mem used", "guests", "running"),
            rows,
        ),
        "",
        f"{len(snapshot.guests)} guests "
        f"({sum(g.ha is not None for g in snapshot.guests)} HA), {len(snapshot.rules)} rules, "
        f"{len(snapshot.issues)} findings",
    ]
    if snapshot.issues:
        by_kind = Counter((f.severity, f.kind) for f in snapshot.issues)
        out += [
            "",
            table(
                ("severity", "finding", "count"),
                [(s, k, c) for (s, k), c in sorted(by_kind.items())],
            ),
        ]
        out += [f"  {f.severity}: {f.where}: {f.message}" for f in snapshot.issues[:10]]
        if len(snapshot.issues) > 10:
            out.append(f"  ... {len(snapshot.issues) - 10} more (use --format json)")
    return "\n".join(out)


def result_table(result: RoundResult) -> str:
    out = [
        f"imbalance {result.imbalance:.4f} (CV {result.imbalance_cv:.4f}), threshold "
        f"{result.threshold:g}%, margin {result.margin:g}%, mode {result.mode}, "
        f"method {result.method}",
        f"triggered: {'yes' if result.triggered else 'no'} ({result.reason})",
    ]
    if result.moves:
        out += [
            "",
            "planned moves:",
            table(
                ("#", "guest", "from", "to", "imbalance after", "cost s", "GiB"),
                [
                    (
                        m.rank,
                        m.sid,
                        m.source,
                        m.target,
                        round(m.imbalance_after, 4),
                        m.cost_seconds,
                        m.gib_moved,
                    )
                    for m in result.moves
                ],
            ),
        ]
        if result.imbalance_after is not None:
            out.append(f"expected imbalance after the plan: {result.imbalance_after:.4f}")
    else:
        out.append("no moves")
    if result.top_moves:
        out += [
            "",
            "best single moves (manual action):",
            table(
                ("#", "guest", "from", "to", "imbalance after", "cost s"),
                [
                    (m.rank, m.sid, m.source, m.target, round(m.imbalance_after, 4), m.cost_seconds)
                    for m in result.top_moves
                ],
            ),
        ]
    out += [f"{f.severity}: {f.where}: {f.message}" for f in result.findings]
    out += [f"note: {note}" for note in result.notes]
    if result.timings:
        out.append("timings ms: " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
    return "\n".join(out)
