"""Shared test set-up: every test starts with no objects frozen out of garbage collection.

The service freezes what exists after its first round (``RoundRunner``); tests that run
daemon or demo rounds would otherwise leave this process's objects frozen for later tests.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _nothing_frozen() -> Iterator[None]:
    yield
    gc.unfreeze()
