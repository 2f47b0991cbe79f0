"""The JSON endpoints: recommendations, snapshot and health, as (status, body) pairs.

Pure functions of a :class:`PublishedView` and the time, so the HTTP layer only routes and
writes bytes. The snapshot document can be large (every guest), so it is serialised once
per published round and reused until the next one (:class:`SnapshotJsonCache`).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict
from http import HTTPStatus
from typing import Any

from exporters.state import PublishedRound, PublishedView, guest_id
from model.plan import Move

NO_ROUND_YET = "no round has been published yet"


def json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, allow_nan=False).encode("utf-8") + b"\n"


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def move_json(move: Move) -> dict[str, Any]:
    """A move as the API shows it: the plan's fields plus the guest's exporter ``id``."""
    document = asdict(move)
    document["id"] = guest_id(move.sid)
    document["imbalance_after"] = _finite_or_none(move.imbalance_after)
    return document


def round_status(published: PublishedRound | None) -> dict[str, Any]:
    if published is None:
        return {"ok": False, "finished_at": None, "duration_s": None, "error": NO_ROUND_YET}
    return {
        "ok": published.ok,
        "finished_at": published.finished_at,
        "duration_s": published.duration_s,
        "error": published.error,
    }


def recommendations(view: PublishedView) -> tuple[HTTPStatus, dict[str, Any]]:
    """``/api/v1/recommendations``: the plan of the newest round with data.

    ``threshold`` and ``margin`` are ratios (0..1) like every imbalance here; the percent
    values PVE writes are kept as ``threshold_percent`` and ``margin_percent``.
    """
    shown = view.display
    if shown is None or shown.result is None:
        unavailable = {"error": NO_ROUND_YET, "last_round": round_status(view.latest)}
        return HTTPStatus.SERVICE_UNAVAILABLE, unavailable
    result = shown.result
    document = {
        "imbalance": _finite_or_none(result.imbalance),
        "imbalance_cv": _finite_or_none(result.imbalance_cv),
        "threshold": result.threshold / 100.0,
        "threshold_percent": result.threshold,
        "margin": result.margin / 100.0,
        "margin_percent": result.margin,
        "triggered": result.triggered,
        "reason": result.reason,
        "hold_count": result.hold_count,
        "mode": result.mode,
        "method": result.method,
        "automation_enabled": shown.automation_enabled,
        "imbalance_after": _finite_or_none(shown.imbalance_after_plan),
        "moves": [move_json(m) for m in result.moves],
        "top_moves": [move_json(m) for m in result.top_moves],
        "round": round_status(shown),
        "last_round": round_status(view.latest),
    }
    return HTTPStatus.OK, document


def health(view: PublishedView, now: float, max_age_s: float) -> tuple[HTTPStatus, dict[str, Any]]:
    """``/healthz``: 200 when the latest round succeeded less than ``max_age_s`` ago."""
    latest = view.latest
    if latest is None:
        return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "no-round", "detail": NO_ROUND_YET}
    age = now - latest.finished_at
    document: dict[str, Any] = {
        "last_round_ok": latest.ok,
        "last_round_at": latest.finished_at,
        "age_seconds": round(age, 3),
        "max_age_seconds": max_age_s,
    }
    if not latest.ok:
        document.update(status="failing", detail=latest.error or "the last round failed")
        return HTTPStatus.SERVICE_UNAVAILABLE, document
    if age > max_age_s:
        document.update(status="stale", detail="the last successful round is too old")
        return HTTPStatus.SERVICE_UNAVAILABLE, document
    document["status"] = "ok"
    return HTTPStatus.OK, document


class SnapshotJsonCache:
    """``/api/v1/snapshot``: the displayed round's snapshot, serialised once per round."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._round: PublishedRound | None = None
        self._body = b""

    def body(self, view: PublishedView) -> tuple[HTTPStatus, bytes]:
        shown = view.display
        if shown is None or shown.snapshot is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, json_bytes({"error": NO_ROUND_YET})
        with self._lock:
            if self._round is not shown:
                try:
                    text = shown.snapshot.dumps(indent=None)
                except ValueError as exc:
                    detail = f"snapshot is not valid JSON (non-finite number?): {exc}"
                    return HTTPStatus.INTERNAL_SERVER_ERROR, json_bytes({"error": detail})
                self._body = text.encode("utf-8") + b"\n"
                self._round = shown
            return HTTPStatus.OK, self._body
