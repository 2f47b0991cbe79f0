"""Write the dashboards as JSON for Grafana file provisioning, or check the committed JSON is
current.

    python -m grafana.generate          # rewrite grafana/dashboards/*.json
    python -m grafana.generate --check  # exit 1 if a committed file differs from the code
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana import node_detail, overview

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"

BUILDERS: dict[str, Callable[[], Dashboard]] = {
    f"{overview.UID}.json": overview.build,
    f"{node_detail.UID}.json": node_detail.build,
}


def render(build: Callable[[], Dashboard]) -> str:
    """The dashboard as stable JSON text: sorted keys, two-space indent, final newline."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build()) + "\n"


def rendered_dashboards() -> dict[str, str]:
    """File name -> JSON text, for every dashboard the code defines."""
    return {file_name: render(build) for file_name, build in BUILDERS.items()}


def stale_files(directory: Path = DASHBOARD_DIR) -> list[str]:
    """Names of dashboard files that are missing or differ from what the code generates."""
    stale = []
    for file_name, text in rendered_dashboards().items():
        path = directory / file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(file_name)
    return stale


def write_all(directory: Path = DASHBOARD_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in rendered_dashboards().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed JSON is stale")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="dashboard directory")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for file_name in stale:
            print(
                f"{args.out / file_name}: differs from grafana/ code; "
                "run `python -m grafana.generate`",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in write_all(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
