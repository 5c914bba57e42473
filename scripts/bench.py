"""Dispatch for ./scripts/bench: ``bench.py [SUITE] [--json]``.

A suite is a module ``scripts/bench_SUITE.py`` with ``run() -> dict[str, float]`` whose
keys are the figures (with their floors and ratios) and ``describe(results) -> str``
for the human-readable table. ``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

SUITES = (
    "core",
    "node",
    "node_replication",
    "network",
    "client",
    "sessions",
    "bot",
    "gateway",
    "rooms",
    "load",
    "scale",
)


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench")
    parser.add_argument("suite", nargs="?", default="core", choices=SUITES)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        module = importlib.import_module(f"bench_{args.suite}")
    except ModuleNotFoundError:
        print(f"bench: suite {args.suite!r} is not written yet", file=sys.stderr)
        return 2
    results = module.run()
    if args.json:
        print(json.dumps({"suite": args.suite, **results}, sort_keys=True))
    else:
        print(module.describe(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
