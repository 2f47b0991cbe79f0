"""The HTML status page served at ``/``: one self-contained document, no script, no assets.

Everything an operator checks at a glance: imbalance against the threshold (a bar with a
threshold marker), whether the trigger fired and why, node loads as bars, the planned and
the best manual moves, data-quality findings by kind, and when the last round ran. The
page refreshes itself with a meta refresh. Every piece of cluster-provided text goes
through :func:`html.escape`; numbers are formatted here, never interpolated raw.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence

from exporters.state import PublishedRound, PublishedView, cpu_ratio, mem_ratio
from model.plan import Move, NodeLoad

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2430;background:#f6f7f9}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:.2rem 0 .6rem}
.meta{color:#5a6473;font-size:.9rem}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:.8rem 1rem;
margin-bottom:1rem}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eceef2}
th{color:#5a6473;font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums}
.legend{font-size:.8rem;color:#5a6473;margin-top:.3rem}
.key{display:inline-block;width:2px;height:.8rem;vertical-align:middle;background:#1d2430;
margin:0 .3rem 0 .8rem}.key.after{background:#2e9e5b}
.track{position:relative;background:#e8ebf0;height:1rem;border-radius:3px;min-width:8rem}
.fill{position:absolute;left:0;top:0;bottom:0;border-radius:3px;background:#3b7dd8}
.fill.hot{background:#d9534f}.fill.cpu{background:#6f9fd8}.fill.mem{background:#8a6fd8}
.marker{position:absolute;top:-.25rem;bottom:-.25rem;width:2px;background:#1d2430}
.marker.after{background:#2e9e5b}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:3px;font-size:.85rem;
font-weight:600}
.ok{background:#dff3e6;color:#1f6b3d}.warn{background:#fff1d6;color:#7a5300}
.bad{background:#fbe0df;color:#8c2420}.muted{color:#8a93a1}
.big{font-size:1.6rem;font-weight:600}
"""

REFRESH_SECONDS = 30


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(ratio: float) -> float:
    """A ratio as a bar width in percent, clamped to the bar."""
    return min(max(ratio * 100.0, 0.0), 100.0)


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _bar(ratio: float, css: str = "", markers: Iterable[tuple[float, str, str]] = ()) -> str:
    parts = [f'<div class="track"><div class="fill {css}" style="width:{_pct(ratio):.1f}%"></div>']
    for position, marker_css, title in markers:
        parts.append(
            f'<div class="marker {marker_css}" style="left:{_pct(position):.1f}%" '
            f'title="{_e(title)}"></div>'
        )
    parts.append("</div>")
    return "".join(parts)


def _badge(text: str, css: str) -> str:
    return f'<span class="badge {css}">{_e(text)}</span>'


def _imbalance_section(shown: PublishedRound) -> str:
    result = shown.result
    assert result is not None
    threshold = result.threshold / 100.0
    after = shown.imbalance_after_plan
    hold_needed = shown.snapshot.crs.hold_duration if shown.snapshot else None
    if result.triggered:
        trigger = _badge("triggered", "bad")
    elif result.imbalance > threshold:
        needed = f"/{hold_needed}" if hold_needed is not None else ""
        trigger = _badge(f"above threshold, holding {result.hold_count}{needed}", "warn")
    else:
        trigger = _badge("below threshold", "ok")
    markers = [(threshold, "", f"threshold {threshold:.3f}")]
    if after is not None and result.moves:
        markers.append((after, "after", f"after plan {after:.3f}"))
    hot = "hot" if result.imbalance > threshold else ""
    legend = '<div class="legend"><span class="key"></span>threshold'
    if len(markers) > 1:
        legend += '<span class="key after"></span>expected after the plan'
    legend += "</div>"
    after_text = f"{after:.3f}" if after is not None else "n/a"
    return (
        "<section><h2>Cluster imbalance</h2>"
        f'<div><span class="big" id="imbalance">{result.imbalance:.3f}</span> '
        f'<span class="meta">threshold {threshold:.3f} · margin {result.margin:.0f}% · '
        f"after plan {_e(after_text)} · CV {result.imbalance_cv:.3f} · "
        f"mode {_e(result.mode)}/{_e(result.method)}</span></div>"
        f"{_bar(result.imbalance, hot, markers)}{legend}"
        f'<p>Trigger: {trigger} <span id="reason">{_e(result.reason)}</span></p>'
        f"<p class=meta>Automation: "
        f"{'enabled' if shown.automation_enabled else 'disabled (recommendations only)'}</p>"
        f"{_ha_line(shown)}"
        "</section>"
    )


HA_RECOMMEND_ONLY_TEXT = (
    "HA resources: recommend only -- the built-in CRS auto-rebalances (ha-auto-rebalance=1)"
)


def _ha_line(shown: PublishedRound) -> str:
    """The HA recommend-only notice, or nothing when HA resources may be acted on."""
    if not shown.ha_recommend_only:
        return ""
    return f'<p class=meta id="ha-recommend-only">{_badge(HA_RECOMMEND_ONLY_TEXT, "warn")}</p>'


def _node_state(load: NodeLoad, shown: PublishedRound) -> str:
    node = shown.snapshot.node(load.name) if shown.snapshot else None
    if node is not None and not node.online:
        return _badge("offline", "bad")
    if node is not None and node.maintenance:
        return _badge("maintenance", "warn")
    if not load.usable:
        return _badge("not usable", "warn")
    return _badge("online", "ok")


def _nodes_section(shown: PublishedRound) -> str:
    views = shown.node_load_views()
    if not views:
        return "<section><h2>Nodes</h2><p class=muted>No node loads.</p></section>"
    view_name = "smoothed" if "smoothed" in views else "raw"
    rows = []
    for load in views[view_name]:
        cells = [
            f"<td>{_e(load.name)}</td><td>{_node_state(load, shown)}</td>",
            *(
                f'<td>{_bar(ratio, css)}</td><td class="num">{ratio * 100:.1f}%</td>'
                for ratio, css in (
                    (cpu_ratio(load), "cpu"),
                    (mem_ratio(load), "mem"),
                    (load.load, ""),
                )
            ),
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<section><h2>Nodes <span class=meta>({_e(view_name)} usage)</span></h2><table>"
        "<tr><th>Node</th><th>State</th><th colspan=2>CPU</th><th colspan=2>Memory</th>"
        "<th colspan=2>Combined</th></tr>" + "".join(rows) + "</table></section>"
    )


def _guest_label(sid: str, shown: PublishedRound) -> str:
    guest = shown.snapshot.guest(sid) if shown.snapshot else None
    if guest is None or not guest.name:
        return _e(sid)
    return f"{_e(sid)} <span class=muted>{_e(guest.name)}</span>"


def _moves_table(title: str, moves: Sequence[Move], shown: PublishedRound, css_id: str) -> str:
    if not moves:
        return f'<section id="{css_id}"><h2>{_e(title)}</h2><p class=muted>None.</p></section>'
    rows = []
    for move in moves:
        members = [m for m in move.members if m != move.sid]
        extra = f" <span class=muted>+ {_e(', '.join(members))}</span>" if members else ""
        rows.append(
            f'<tr><td class="num">{move.rank}</td><td>{_guest_label(move.sid, shown)}{extra}</td>'
            f"<td>{_e(move.source)} → {_e(move.target)}</td>"
            f'<td class="num">{move.imbalance_after:.3f}</td>'
            f'<td class="num">{move.cost_seconds:.0f} s</td><td>{_e(move.reason)}</td></tr>'
        )
    return (
        f'<section id="{css_id}"><h2>{_e(title)}</h2><table>'
        '<tr><th class="num">#</th><th>Guest</th><th>Source → target</th>'
        '<th class="num">Imbalance after</th><th class="num">Cost</th><th>Why</th></tr>'
        + "".join(rows)
        + "</table></section>"
    )


def _findings_section(shown: PublishedRound) -> str:
    if not shown.issue_counts:
        return "<section><h2>Data quality</h2><p class=muted>No findings.</p></section>"
    rows = "".join(
        f"<tr><td>{_e(kind)}</td><td>{_badge(severity, _severity_css(severity))}</td>"
        f'<td class="num">{count}</td></tr>'
        for kind, severity, count in shown.issue_counts
    )
    return (
        f"<section><h2>Data quality <span class=meta>({shown.issue_total} findings)</span></h2>"
        f'<table><tr><th>Kind</th><th>Severity</th><th class="num">Count</th></tr>{rows}'
        "</table></section>"
    )


def _severity_css(severity: str) -> str:
    return {"error": "bad", "warning": "warn"}.get(severity, "ok")


def _round_line(view: PublishedView, now: float) -> str:
    latest = view.latest
    if latest is None:
        return "No round has run yet."
    state = _badge("ok", "ok") if latest.ok else _badge("failed", "bad")
    text = (
        f"Last round {state} at {_e(_utc(latest.finished_at))} "
        f"({max(now - latest.finished_at, 0.0):.0f} s ago, took {latest.duration_s:.2f} s)"
    )
    if not latest.ok:
        text += f": {_e(latest.error or 'unknown error')}"
        if view.last_good is not None:
            text += f"; showing the round of {_e(_utc(view.last_good.finished_at))}"
    return text


def render_status_page(
    view: PublishedView, *, now: float, refresh_seconds: int = REFRESH_SECONDS
) -> str:
    """The whole page for ``view`` as seen at unix time ``now``."""
    shown = view.display
    cluster = shown.snapshot.cluster if shown and shown.snapshot else None
    title = f"pve-rebalancer · {cluster}" if cluster else "pve-rebalancer"
    body = [f"<h1>{_e(title)}</h1>", f'<p class=meta id="round">{_round_line(view, now)}</p>']
    if shown is not None and shown.result is not None:
        body += [
            _imbalance_section(shown),
            _nodes_section(shown),
            _moves_table("Recommended moves", shown.result.moves, shown, "moves"),
            _moves_table("Top manual moves", shown.result.top_moves, shown, "top-moves"),
            _findings_section(shown),
        ]
    body.append(
        '<p class=meta><a href="/metrics">metrics</a> · '
        '<a href="/api/v1/recommendations">recommendations</a> · '
        '<a href="/api/v1/snapshot">snapshot</a> · <a href="/healthz">health</a></p>'
    )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
