"""The status page HTML, rendered without a server: content, escaping, states."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser

from exporters.state import PublishedRound, PublishedView, RoundPublisher
from exporters.status_page import render_status_page
from tests.test_exporter_support import FINISHED_AT, make_result, make_round, make_snapshot


class TagCollector(HTMLParser):
    """Collects tags and text to check structure and that no script slipped in."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.links.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def render(published: PublishedRound | None, now: float = FINISHED_AT + 5) -> str:
    publisher = RoundPublisher()
    if published is not None:
        publisher.publish(published)
    return render_status_page(publisher.view(), now=now)


def parse(page: str) -> TagCollector:
    parser = TagCollector()
    parser.feed(page)
    return parser


def test_page_shows_the_round() -> None:
    page = render(make_round())
    text = " ".join(parse(page).text)
    for node in ("pve1", "pve2", "pve3", "pve4"):
        assert node in text
    assert "0.400" in text  # imbalance
    assert "threshold 0.300" in text
    assert "triggered" in text
    assert "above threshold for 3 rounds" in text
    assert "vm:100" in text
    assert "pve1 → pve2" in text
    assert "42 s" in text
    assert "3 findings" in text
    assert "maintenance" in text
    assert "offline" in text
    assert "smoothed usage" in text
    assert "2026-05-28 20:26:40 UTC" in text  # 1 780 000 000 s after the epoch
    assert '<meta http-equiv="refresh" content="30">' in page


def test_threshold_marker_and_bar_widths() -> None:
    page = render(make_round())
    assert 'class="marker " style="left:30.0%"' in page
    assert 'class="marker after" style="left:10.0%"' in page
    assert 'class="fill hot" style="width:40.0%"' in page
    # pve1 smoothed: 8/16 cores -> 50 %.
    assert '<td class="num">50.0%</td>' in page


def test_everything_from_the_cluster_is_escaped() -> None:
    snapshot = make_snapshot()
    hostile = "<script>alert('x')</script>"
    snapshot.guests[0] = replace(snapshot.guests[0], name=hostile)
    snapshot.cluster = '"><img src=x>'
    result = make_result()
    result.reason = "<b>loud</b>"
    page = render(PublishedRound.create(snapshot, result, finished_at=FINISHED_AT, duration_s=1))
    parsed = parse(page)
    assert "script" not in parsed.tags
    assert "img" not in parsed.tags
    assert "b" not in parsed.tags
    assert hostile in " ".join(parsed.text)
    assert "&lt;script&gt;" in page
    # No external asset: every link is a relative path on this server.
    assert all(link.startswith("/") for link in parsed.links)


def test_failed_round_keeps_the_last_plan_on_show() -> None:
    publisher = RoundPublisher()
    publisher.publish(make_round())
    publisher.publish(
        PublishedRound.failed(finished_at=FINISHED_AT + 60, duration_s=3, error="rrd <gone>")
    )
    page = render_status_page(publisher.view(), now=FINISHED_AT + 65)
    text = " ".join(parse(page).text)
    assert "failed" in text
    assert "rrd <gone>" in text
    assert "showing the round of" in text
    assert "vm:100" in text


def test_no_round_and_quiet_round() -> None:
    assert "No round has run yet." in render(None)
    assert render_status_page(PublishedView(), now=0).count("<section") == 0
    quiet = PublishedRound.create(
        make_snapshot(), make_result(n_moves=0, imbalance=0.1), finished_at=FINISHED_AT,
        duration_s=1,
    )  # fmt: skip
    quiet.result.triggered = False  # type: ignore[union-attr]
    page = render(quiet)
    assert "below threshold" in page
    assert len(re.findall(r"<p class=muted>None.</p>", page)) == 1  # no planned moves


HA_LINE = "HA resources: recommend only -- the built-in CRS auto-rebalances (ha-auto-rebalance=1)"


def test_ha_recommend_only_line_shown_only_when_set() -> None:
    assert HA_LINE not in " ".join(parse(render(make_round())).text)
    assert HA_LINE in " ".join(parse(render(make_round(ha_recommend_only=True))).text)
