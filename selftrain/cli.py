"""Command line entry point: ``selftrain <command>``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selftrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("selfcheck", help="prove the installed stack works (imports, NMS, checkpoints)")
    args = parser.parse_args(argv)
    if args.command == "selfcheck":
        from selftrain.selfcheck import main as selfcheck

        return selfcheck()
    return 2


if __name__ == "__main__":
    sys.exit(main())
