"""``pve-rebalancer check-config FILE``: validate a configuration file without running anything.

Prints ``ok`` (exit 0) or every problem as ``FILE:LINE: key: problem`` (exit 2), the format
editors and CI jump to. It reads the token secret exactly as ``run`` would (so a
group-readable secret file or an unset environment variable is reported) but never prints it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "check-config",
        help="validate a configuration file",
        description="Check a pve-rebalancer TOML configuration: prints ok or every problem "
        "as FILE:LINE: key: problem.",
    )
    parser.add_argument("file", type=Path, help="the TOML configuration file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cli.config import ConfigError, load_config

    try:
        load_config(args.file)
    except ConfigError as error:
        for problem in error.problems:
            print(problem.format(args.file), file=sys.stdout)
        return 2
    print("ok")
    return 0
