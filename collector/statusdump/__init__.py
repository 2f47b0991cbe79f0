"""The live status dump of pmxcfs: its lines read into the frames the RRD reader gives.

:func:`parse_status_dump` is the entry point (:mod:`collector.statusdump.parse`); the C
scanner reads the well-formed lines and the polars parser the others.
"""

from collector.statusdump.parse import DumpRead, parse_status_dump

__all__ = ["DumpRead", "parse_status_dump"]
