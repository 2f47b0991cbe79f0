"""Cyclic garbage collection held off while a snapshot is built.

A cold collect allocates a few hundred thousand container objects (parsed configs, their
dicts, the snapshot's guests) and keeps nearly all of them. CPython's generational collector
reacts to that growth by scanning the young objects again and again and the whole heap
several times (two full collections and fourteen middle ones in a 10,000-guest cold
collect, about 0.2 s); none of it frees anything, since a build creates no reference
cycles worth collecting. Pausing the collector for the build lets the survivors be scanned
once afterwards instead. Reference counting frees everything as usual meanwhile.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector for the ``with`` body; re-enable it after, if it was.

    A caller that disabled it itself keeps it disabled.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
