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
    config = sub.add_parser("config", help="print the OpenMMLab config of a stage")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser(
        "show",
        help="a trained model's stored config (its URI: <store>/<dataset>/train/<key>), or a preview of "
        "a stage's config for the parameters of a JSON file",
    )
    show.add_argument("source", help="a trained model's URI, or a JSON file of flow parameters")
    show.add_argument("--stage", choices=["teacher", "student", "evaluate"], default="teacher")
    show.add_argument(
        "--method", choices=["zoph", "st"], help="the student's method (default: the first of the parameters')"
    )
    show.add_argument(
        "--num-pseudo", type=int, help="preview: pseudo-labeled images a student sees (default: as many as labeled)"
    )
    args = parser.parse_args(argv)
    if args.command == "config":
        return show_config(args.source, args.stage, args.method, args.num_pseudo)
    if args.command == "selfcheck":
        from selftrain.selfcheck import main as selfcheck

        return selfcheck()
    if args.command == "run":
        return run_params(args.params, args.set)
    return 2


def show_config(source: str, stage: str, method: str | None, num_pseudo: int | None) -> int:
    """Print a stage's resolved OpenMMLab config (mmengine's pretty text, loadable by Config.fromfile)."""
    import json
    import os

    from pydantic import ValidationError

    if source.endswith(".json"):
        from app.config_preview import preview_config
        from flows.params import SelfTrainingParams

        if not os.path.isfile(source):
            print(f"no parameters file {source}", file=sys.stderr)
            return 2
        try:
            with open(source) as f:
                fields = json.load(f)
            params = SelfTrainingParams(**fields)
        except ValidationError as exc:
            print(f"invalid parameters in {source}:\n{exc}", file=sys.stderr)
            return 2
        except json.JSONDecodeError as exc:
            print(f"{source} is not JSON: {exc}", file=sys.stderr)
            return 2
        try:
            print(preview_config(params, stage, method, num_pseudo))
        except Exception as exc:  # noqa: BLE001 - one line naming the problem, not a traceback
            print(f"cannot preview stage {stage} for {source}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        return 0
    from selftrain.stage import get_store
    from storage.store import StoreError

    root, sep, rest = source.rpartition("/train/")
    dataset = root.rstrip("/").rsplit("/", 1)[-1]
    store_root = root.rstrip("/")[: -len(dataset)].rstrip("/") if sep else ""
    if not sep or not dataset or not store_root:
        print(
            f"{source!r} is neither a JSON file of parameters nor a trained model's URI "
            "(<store>/<dataset>/train/<key>)",
            file=sys.stderr,
        )
        return 2
    if stage != "teacher" or method or num_pseudo is not None:
        print(
            "note: --stage, --method and --num-pseudo preview a parameters file; a stored model's config is "
            "shown as it ran",
            file=sys.stderr,
        )
    try:
        store = get_store(store_root)
        ref = store.ref(dataset, "train", rest.strip("/"))
        print(store.read(ref, "config.py").decode())
    except (StoreError, ValueError) as exc:
        print(
            f"no stored config for {source}: {exc} (models trained before configs were stored have none)",
            file=sys.stderr,
        )
        return 1
    return 0


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
