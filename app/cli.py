"""Command line entry point: ``selftrain <command>``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selftrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("selfcheck", help="prove the installed stack works (imports, NMS, checkpoints)")
    run = sub.add_parser(
        "run",
        help="run the self-training flow with the parameters of a JSON file "
        "(the fields of flows.self_training.SelfTrainingParams)",
    )
    run.add_argument("params", help="JSON file of flow parameters")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override one field, e.g. --set teacher_iters=30 --set 'method=[\"st\"]'",
    )
    args = parser.parse_args(argv)
    if args.command == "selfcheck":
        from selftrain.selfcheck import main as selfcheck

        return selfcheck()
    if args.command == "run":
        return run_params(args.params, args.set)
    return 2


def run_params(path: str, overrides: list[str]) -> int:
    """Validate the parameters (every field, before any work), run the flow, print the report URI."""
    import json

    from pydantic import ValidationError

    from flows.self_training import SelfTrainingParams, run

    with open(path) as f:
        fields = json.load(f)
    for item in overrides:
        name, _, value = item.partition("=")
        try:
            fields[name] = json.loads(value)
        except json.JSONDecodeError:
            fields[name] = value  # a plain string
    try:
        params = SelfTrainingParams(**fields)
    except ValidationError as exc:
        print(f"invalid parameters in {path}:\n{exc}", file=sys.stderr)
        return 2
    print(f"report: {run(params)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
