"""Publishing while scraping: every scrape must describe exactly one round."""

from __future__ import annotations

import threading
from dataclasses import replace

from prometheus_client import generate_latest

from exporters.http import ExporterServer, ServerConfig
from exporters.metrics import make_registry
from exporters.state import PublishedRound, RoundPublisher
from model.plan import Move
from tests.test_exporter_support import make_result, make_snapshot, request, samples_by_name

P = "pve_rebalancer_"
SCRAPES_PER_THREAD = 30


def round_number(i: int) -> PublishedRound:
    """Round i: i % 6 moves, every value derived from i so that a mix-up shows."""
    imbalance = i / 100_000
    moves = [
        Move(rank, f"vm:{100 + rank}", "pve1", "pve2", imbalance_after=imbalance,
             cost_seconds=float(i))
        for rank in range(1, i % 6 + 1)
    ]  # fmt: skip
    snapshot = make_snapshot()
    snapshot.nodes[0] = replace(snapshot.nodes[0], cpu=float(i % 16))
    result = replace(make_result(), imbalance=imbalance, moves=moves, imbalance_after=imbalance)
    return PublishedRound.create(snapshot, result, finished_at=1e9 + i, duration_s=0.1)


def check_consistent(exposition: str) -> int:
    """Assert one round's values throughout; return that round's number."""
    s = samples_by_name(exposition)
    (((_, imbalance),),) = (s[P + "imbalance_ratio"],)
    i = round(imbalance * 100_000)
    info = s.get(P + "recommended_move_info", [])
    assert s[P + "recommended_moves"][0][1] == len(info) == i % 6
    assert [v for _, v in s.get(P + "recommended_move_imbalance_after_ratio", [])] == [
        imbalance
    ] * len(info)
    assert [v for _, v in s.get(P + "recommended_move_cost_seconds", [])] == [float(i)] * len(info)
    pve1_cpu = [
        v
        for lab, v in s[P + "node_load_ratio"]
        if lab["node"] == "pve1" and lab["resource"] == "cpu"
    ]
    assert pve1_cpu == [(i % 16) / 16]
    return i


def test_concurrent_publish_and_scrape_see_whole_rounds() -> None:
    publisher = RoundPublisher()
    publisher.publish(round_number(0))
    registry = make_registry(publisher)
    server = ExporterServer(publisher, ServerConfig(poll_interval_s=0.02, port=0))
    server.start()
    scrapers_done = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []
    seen_lock = threading.Lock()
    published = [0, 0]

    def publish_loop(worker: int) -> None:
        i = worker
        while not scrapers_done.is_set():
            i += 2
            publisher.publish(round_number(i))
            publisher.record_round(True, 0.1)
            published[worker] += 1

    def scrape_loop(over_http: bool) -> None:
        try:
            for _ in range(SCRAPES_PER_THREAD):
                if over_http:
                    status, _, body = request(server.port, path="/metrics")
                    assert status == 200
                    text = body.decode()
                else:
                    text = generate_latest(registry).decode()
                number = check_consistent(text)
                with seen_lock:
                    seen.append(number)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    publishers = [threading.Thread(target=publish_loop, args=(w,)) for w in (0, 1)]
    scrapers = [threading.Thread(target=scrape_loop, args=(w == 0,)) for w in range(3)]
    try:
        for thread in publishers + scrapers:
            thread.start()
        for thread in scrapers:
            thread.join()
    finally:
        scrapers_done.set()
        for thread in publishers:
            thread.join()
        server.stop()
    assert not errors, errors[0]
    assert len(seen) == 3 * SCRAPES_PER_THREAD
    assert len(set(seen)) > 1, "scrapes never overlapped a publish"
    view = publisher.view()
    assert view.generation == 1 + sum(published)
    assert publisher.round_stats.view().rounds_total == sum(published)
