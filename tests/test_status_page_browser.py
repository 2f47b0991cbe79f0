"""The status page in a real browser: headless Chromium renders it from a live server."""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporters.http import ExporterServer, ServerConfig
from exporters.state import RoundPublisher
from tests.test_exporter_support import FINISHED_AT, make_round

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chromium(user_data: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={user_data}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    publisher = RoundPublisher()
    publisher.publish(make_round())
    config = ServerConfig(host="127.0.0.1", port=0, poll_interval_s=0.02)
    with ExporterServer(publisher, config, clock=lambda: FINISHED_AT + 12) as server:
        yield server.url + "/"


def test_rendered_dom_shows_nodes_moves_and_imbalance(page_url: str, tmp_path: Path) -> None:
    dom = chromium(tmp_path / "profile", "--dump-dom", page_url).stdout.decode()
    for node in ("pve1", "pve2", "pve3", "pve4"):
        assert f"<td>{node}</td>" in dom
    assert '<span class="big" id="imbalance">0.400</span>' in dom
    assert "vm:100" in dom
    assert "ct:200" in dom
    assert "pve1 → pve2" in dom
    assert "web&lt;1&gt;" in dom
    assert "above threshold for 3 rounds" in dom


def test_screenshot_is_a_real_picture(page_url: str, tmp_path: Path) -> None:
    shot = tmp_path / "status.png"
    chromium(
        tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,900",
        "--hide-scrollbars", page_url,
    )  # fmt: skip
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 900)
    # A blank 1200x900 page compresses to a few kB; the rendered page is far richer.
    assert len(data) > 20_000
    keep = os.environ.get("STATUS_PAGE_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(data)
