"""Command line entry point: ``selftrain <command>``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.local_prefect import use_local_defaults

STORED_THRESHOLDED = (
    "note: {n} masks were stored by an earlier version with its threshold applied (no confidence kept): "
    "thresholds do not change them"
)

THRESHOLD_HELP = (
    "one score / confidence threshold for every class (0: every stored label); default: the thresholds "
    "the report's run applied (its first method's student)"
)


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
    labels = sub.add_parser(
        "labels",
        help="a run's pseudo labels as one table: per-class counts, the score histogram, images without a "
        "label (streamed from the stored shards)",
    )
    labels.add_argument("report", help="a report: its folder (e.g. runs/demo/report) or its URI in the store")
    labels.add_argument("--threshold", type=float, help=THRESHOLD_HELP)
    export = sub.add_parser(
        "export",
        help="write a run's pseudo labels, or a selection, as COCO JSON with scores or Label Studio tasks "
        "(boxes), or PNG label maps (masks)",
    )
    export.add_argument("report", help="a report: its folder (e.g. runs/demo/report) or its URI in the store")
    export.add_argument("--format", required=True, choices=["coco", "label-studio", "png"])
    export.add_argument("--out", required=True, help="the file to write (a folder for png)")
    export.add_argument("--images", choices=["reliable", "unreliable"], help="the ST++ ranking's half (st++ runs)")
    export.add_argument("--lowest", type=int, help="only the N images with the lowest mean score / confidence")
    export.add_argument("--class", dest="class_name", help="only images with a box of this class, and those boxes")
    export.add_argument(
        "--image-url-prefix", help="label-studio: image URLs as PREFIX/<image id> (default: each image's own URI)"
    )
    export.add_argument("--threshold", type=float, help=THRESHOLD_HELP)
    imports = sub.add_parser(
        "import-labels",
        help="merge a reviewed export of a run's pseudo labels with its labeled set for the next run: COCO or "
        "Label Studio JSON into one COCO file (boxes), a folder of PNG label maps into a set with a split file (masks)",
    )
    imports.add_argument("report", help="the report of the run that was exported: its folder or its URI")
    imports.add_argument(
        "--corrections", required=True, help="the reviewed file (COCO JSON or Label Studio export), or folder (png)"
    )
    imports.add_argument("--format", required=True, choices=["coco", "label-studio", "png"])
    imports.add_argument(
        "--out", required=True, help="the merged COCO file to write, or a new folder for the merged label maps (png)"
    )
    args = parser.parse_args(argv)
    if getattr(args, "threshold", None) is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be a score in [0, 1], got {args.threshold}")
    if args.command == "labels":
        return label_table(args.report, args.threshold)
    if args.command == "export":
        return export_report_labels(args)
    if args.command == "import-labels":
        return import_report_labels(args)
    if args.command == "config":
        return show_config(args.source, args.stage, args.method, args.num_pseudo)
    if args.command == "selfcheck":
        from selftrain.selfcheck import main as selfcheck

        return selfcheck()
    if args.command == "run":
        use_local_defaults()
        return run_params(args.params, args.set)
    return 2


class ReportNotFound(Exception):
    """A folder or URI that holds no usable report (the message says why)."""


def open_report(report: str) -> tuple[dict, Any, list, dict, Any]:
    """A report's JSON, its store, its pseudo-label shards, the labeled set's manifest meta
    and the ranking (or None), from a report folder or its URI in the store. Raises
    ReportNotFound."""
    import json
    import os

    from selftrain.stage import get_store
    from storage.store import StoreError

    try:
        if "://" not in report and os.path.isfile(os.path.join(report, "report.json")):
            data = json.load(open(os.path.join(report, "report.json")))  # a report folder (runs/demo/report)
        else:  # its URI in the store: <store>/<dataset>/report/<key>
            parts = report.rstrip("/").rsplit("/", 3)
            if len(parts) != 4 or parts[2] != "report":
                raise ValueError("neither a report folder (with report.json) nor a URI <store>/<dataset>/report/<key>")
            root, dataset, stage, key = parts
            data = get_store(root).read_json(get_store(root).ref(dataset, stage, key), "report.json")
    except (OSError, ValueError, KeyError, StoreError) as exc:
        raise ReportNotFound(f"no report at {report}: {exc}") from exc
    shards = data.get("pseudo_shards")
    if not shards:
        raise ReportNotFound(f"{report} does not list its pseudo-label shards (written before they were listed)")
    store = get_store(shards[0].rsplit("/", 3)[0])
    refs = [store.ref(*uri.rsplit("/", 3)[1:]) for uri in shards]
    meta = store.manifest(store.ref(*data["artifacts"]["labeled"].rsplit("/", 3)[1:])).meta
    ranking_uri = (data.get("ranking") or {}).get("uri")
    ranking = store.ref(*ranking_uri.rsplit("/", 3)[1:]) if ranking_uri else None
    return data, store, refs, meta, ranking


def report_thresholds(data: dict, threshold: float | None):
    """The thresholds to show a report's labels with: ``threshold`` for every class when given,
    else those the report recorded (its first method's student), else every stored label."""
    from selftrain.pseudo_labels import Thresholds

    if threshold is not None:
        return Thresholds(default=threshold)
    return Thresholds.from_json(data["thresholds"]) if data.get("thresholds") else None


def label_table(report: str, threshold: float | None = None) -> int:
    """Print the pseudo labels of a report's run as one table, read from the store where the
    shards lie (local or S3): per-class counts kept and below the thresholds (the report's,
    or ``threshold``), a text histogram of the scores (confidences for masks) and the images
    without a label. Exit code 2 with a one-line error for a folder or URI that holds no
    report, or a report written before it listed its shards."""
    from selftrain.kinds import KINDS

    try:
        data, store, refs, meta, _ = open_report(report)
    except ReportNotFound as exc:
        print(f"selftrain labels: {exc}", file=sys.stderr)
        return 2
    chosen = report_thresholds(data, threshold)
    labels = KINDS[data["task"]].open_pseudo(store, refs, meta, chosen)
    stats = labels.label_stats(meta)
    labels.close()
    unit = stats.get("unit", "boxes")
    print(f"{data['dataset']}: pseudo labels of {len(refs)} shards ({store.url})")
    print(f"thresholds: {chosen.describe() if chosen else 'none (every stored label)'}")
    width = max(len(n) for n in stats["per_class"])
    below = stats.get("below_threshold") or {}
    for name, n in stats["per_class"].items():
        print(
            f"  {name:<{width}}  {n:>10} {unit}" + (f"  ({below[name]} below the threshold)" if name in below else "")
        )
    h = stats["histogram"]
    peak = max(h["counts"]) or 1
    print(f"{h['of']}:")
    for lo, hi, n in zip(h["edges"][:-1], h["edges"][1:], h["counts"], strict=True):
        print(f"  {lo:4.2f}-{hi:4.2f} {n:>8} {'#' * round(40 * n / peak)}")
    if stats.get("stored_thresholded"):
        print(STORED_THRESHOLDED.format(n=stats["stored_thresholded"]))
    sample = ", ".join(stats["images_without_labels_sample"][:5])
    print(f"images without a pseudo label: {stats['images_without_labels']}" + (f" (e.g. {sample})" if sample else ""))
    return 0


def export_report_labels(args: argparse.Namespace) -> int:
    """`selftrain export`: write a report's pseudo labels (or a selection) in a tool's format."""
    from selftrain.export import ExportError, export_labels
    from selftrain.kinds import KINDS

    try:
        data, store, refs, meta, ranking = open_report(args.report)
        labels = KINDS[data["task"]].open_pseudo(store, refs, meta, report_thresholds(data, args.threshold))
        try:
            written = export_labels(
                store,
                labels,
                meta,
                args.format,
                args.out,
                ranking=ranking,
                group=args.images,
                lowest=args.lowest,
                class_name=args.class_name,
                image_url_prefix=args.image_url_prefix,
            )
        finally:
            labels.close()
    except (ReportNotFound, ExportError) as exc:
        print(f"selftrain export: {exc}", file=sys.stderr)
        return 2
    print(f"exported {written['labels']} pseudo labels of {written['images']} images as {args.format}: {args.out}")
    if written.get("stored_thresholded"):
        print(STORED_THRESHOLDED.format(n=written["stored_thresholded"]))
    return 0


def import_report_labels(args: argparse.Namespace) -> int:
    """`selftrain import-labels`: the labeled set plus a reviewed export, for the next run."""
    import json

    from selftrain.corrections import CorrectionError
    from selftrain.kinds import kind_of

    try:
        data, store, refs, meta, _ = open_report(args.report)
        ref = {name: store.ref(*data["artifacts"][name].rsplit("/", 3)[1:]) for name in ("labeled", "unlabeled")}
        kind = kind_of(ref["labeled"])
        done = kind.import_corrections(
            store,
            ref["labeled"],
            ref["unlabeled"],
            args.corrections,
            args.format,
            args.out,
            # the labels as exported (the report's thresholds): to count those nobody changed
            pseudo=lambda: kind.open_pseudo(store, refs, meta, report_thresholds(data, None)),
        )
    except (ReportNotFound, CorrectionError) as exc:
        print(f"selftrain import-labels: {exc}", file=sys.stderr)
        return 2
    what = f"{done['added_boxes']} boxes" if "added_boxes" in done else "label maps"
    print(
        f"imported {done['added_images']} reviewed images ({what}) into the labeled set: "
        f"{done['labeled_images']} + {done['added_images']} = {done['images']} images"
        + (f"; {done['unreviewed']} tasks without an annotation left out" if done.get("unreviewed") else "")
    )
    if done.get("boxes_with_scores"):
        print(
            f"note: {done['boxes_with_scores']} of {done['added_boxes']} imported boxes still carry the export's "
            "score: make sure the file is the reviewed one (a reviewed box needs no score)"
        )
    if done.get("unchanged"):
        print(
            f"note: {done['unchanged']} of {done['added_images']} imported label maps equal the pseudo masks as "
            "exported at the report's thresholds: make sure the folder is the reviewed one (they are imported as "
            "they are)"
        )
    for note in done["notes"]:
        print(f"note: {note}")
    labeled = json.dumps(done["next_labeled"])
    print(f"next run: labeled={labeled} (its unlabeled images that are now labeled are not pseudo-labeled)")
    return 0


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

    from app.local_prefect import EarlyServer
    from flows.params import SelfTrainingParams

    try:
        with open(path) as f:
            fields = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cannot read the parameters file {path}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(fields, dict):
        print(f"{path} must hold a JSON object of the flow's fields, not a {type(fields).__name__}", file=sys.stderr)
        return 2
    for item in overrides:
        name, _, value = item.partition("=")
        try:
            fields[name] = json.loads(value)
        except json.JSONDecodeError:
            fields[name] = value  # a plain string
    server = EarlyServer()  # boots while the parameters are checked and the flow is imported
    try:
        with server.stopped_on_signal():  # Ctrl-C / SIGTERM: the server stopped, exit 130 / 143
            params = SelfTrainingParams(**fields)
            from flows.self_training import run

            server.wait()
    except ValidationError as exc:
        server.stop()
        print(f"invalid parameters in {path}:\n{exc}", file=sys.stderr)
        return 2
    except BaseException:  # an import error...: no flow will use the server
        server.stop()
        raise
    print(f"report: {run(params)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
