"""The Prefect deployments of the `self-training` flow, on a process work pool (no Docker, no git).

    python -m deploy.deployments register [--pool selftrain-process]

registers (against PREFECT_API_URL):
- `self-training/demo`        detection on the bundled DeepForest tiles (prepared here first);
- `self-training/coco`        detection, RetinaNet R50-FPN, COCO under $SELFTRAIN_DATA/coco;
- `self-training/voc`         segmentation, DeepLabV3+ R101, VOC 2012 + SBD aug under $SELFTRAIN_DATA/voc;
- `self-training/cityscapes`  segmentation, DeepLabV3+ R101, Cityscapes under $SELFTRAIN_DATA/cityscapes.
- `self-training/relabel-demo` re-labeling only (retrain_student=False) of the demo data with
  the latest teacher trained on it (teacher='latest'; it never trains one), on a daily cron
  schedule and triggered by `selftrain.unlabeled.landed` events for the dataset: the run labels
  the prefix named in the event;
- `watch-unlabeled/demo`     every 10 minutes, lists the demo's unlabeled prefix and emits that
  event for images it has not seen (flows/watch_unlabeled.py).
Parameters are the flow's fields, so `prefect deployment run self-training/coco --param
score_threshold=0.4` or the UI's Run button changes one field and keeps the defaults below.
The flow is referenced by module path (flows.self_training.self_training): any worker with
this project installed runs it, on this machine or another one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from storage.settings import settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOL = "selftrain-process"

VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
CITYSCAPES_CLASSES = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]


DATA = "${SELFTRAIN_DATA}"  # resolved where the flow runs (the worker's environment), not at registration


def data_root() -> str:
    """Where a worker finds the coco / voc / cityscapes folders when SELFTRAIN_DATA is not set."""
    return settings().data


def store_root() -> str:
    return settings().store


def demo_parameters() -> dict:
    """The demo's detection run on the DeepForest tiles (prepared under runs/demo/data)."""
    from app.demo import DEMO_PARAMS
    from selftrain.datasets.deepforest import prepare

    data = prepare(os.path.join(REPO, "runs", "demo", "data", "deepforest"))
    return dict(
        DEMO_PARAMS,
        method="zoph",
        labeled=dict(ann_file=data.labeled_json, image_root=data.image_root),
        val=dict(ann_file=data.val_json, image_root=data.image_root),
        unlabeled=data.unlabeled_dir,
        unlabeled_gt=data.unlabeled_gt_json,
        store=os.path.join(REPO, "runs", "demo", "store"),
    )


def coco_parameters() -> dict:
    coco = f"{DATA}/coco"
    return dict(
        dataset="coco",
        task="detection",
        config="det/retinanet_r50_fpn_640_coco",
        method="zoph",
        labeled=dict(ann_file=f"{coco}/annotations/instances_train2017_labeled.json", image_root=f"{coco}/train2017"),
        val=dict(ann_file=f"{coco}/annotations/instances_val2017.json", image_root=f"{coco}/val2017"),
        unlabeled=f"{coco}/unlabeled2017",
        teacher_iters=90000,  # the zoph student trains as long, on a doubled batch (Zoph et al. 2020)
        k=3,
        tta_scales=[1.0],
        shard_size=512,
        aug="S1",
        store=store_root(),
    )


def voc_parameters() -> dict:
    voc = f"{DATA}/voc"
    return dict(
        dataset="voc",
        task="segmentation",
        config="seg/deeplabv3plus_r101_512_voc12aug",
        method=["st", "st++"],
        labeled=dict(img_dir=f"{voc}/labeled/img", ann_dir=f"{voc}/labeled/ann", classes=VOC_CLASSES),
        val=dict(img_dir=f"{voc}/val/img", ann_dir=f"{voc}/val/ann", classes=VOC_CLASSES),
        unlabeled=f"{voc}/aug/img",
        # the ST++ reference's PASCAL recipe: 80 epochs of the 1,464 labeled images at batch 16;
        # each student trains as many epochs over its own set (iterations derived per run)
        teacher_iters=7320,
        k=3,  # the ST++ reference keeps 3 checkpoints (epochs // 3, 2 epochs // 3, epochs)
        tta_scales=[0.5, 0.75, 1.0, 1.5, 2.0],
        shard_size=256,
        store=store_root(),
    )


def cityscapes_parameters() -> dict:
    cs = f"{DATA}/cityscapes"
    suffixes = dict(img_suffix="_leftImg8bit.png", seg_map_suffix="_gtFine_labelTrainIds.png")
    return dict(
        dataset="cityscapes",
        task="segmentation",
        config="seg/deeplabv3plus_r101_769_cityscapes",
        method=["st", "st++"],
        labeled=dict(
            img_dir=f"{cs}/labeled/leftImg8bit",
            ann_dir=f"{cs}/labeled/gtFine",
            classes=CITYSCAPES_CLASSES,
            **suffixes,
        ),
        val=dict(img_dir=f"{cs}/leftImg8bit/val", ann_dir=f"{cs}/gtFine/val", classes=CITYSCAPES_CLASSES, **suffixes),
        unlabeled=f"{cs}/leftImg8bit/train",
        # the ST++ reference's Cityscapes recipe: 240 epochs of 744 labeled images (1/4) at batch 8
        teacher_iters=22320,
        k=3,  # the ST++ reference keeps 3 checkpoints (epochs // 3, 2 epochs // 3, epochs)
        tta_scales=[0.5, 0.75, 1.0, 1.5, 2.0],
        shard_size=128,
        store=store_root(),
    )


DEPLOYMENTS = {
    "demo": (
        "Detection self-training on the bundled DeepForest tree-crown tiles (CPU, about 14 minutes).",
        demo_parameters,
    ),
    "coco": (
        "Detection (Zoph et al.) on COCO with RetinaNet R50-FPN. Expects, under $SELFTRAIN_DATA on the worker: "
        "coco/annotations/instances_train2017_labeled.json, coco/annotations/instances_val2017.json, "
        "coco/train2017/*.jpg, coco/val2017/*.jpg, coco/unlabeled2017/*.jpg.",
        coco_parameters,
    ),
    "voc": (
        "Segmentation (ST, ST++) on PASCAL VOC 2012 + SBD aug with DeepLabV3+ R101. Expects, under "
        "$SELFTRAIN_DATA on the worker: voc/labeled/img/*.jpg + voc/labeled/ann/*.png (class indices, 255 "
        "ignore), voc/val/img + voc/val/ann, voc/aug/img/*.jpg (unlabeled).",
        voc_parameters,
    ),
    "cityscapes": (
        "Segmentation (ST, ST++) on Cityscapes with DeepLabV3+ R101. Expects, under $SELFTRAIN_DATA on "
        "the worker: cityscapes/labeled/leftImg8bit/*_leftImg8bit.png + cityscapes/labeled/gtFine/"
        "*_gtFine_labelTrainIds.png, cityscapes/leftImg8bit/val + cityscapes/gtFine/val, "
        "cityscapes/leftImg8bit/train (unlabeled).",
        cityscapes_parameters,
    ),
}


RELABEL_CRON = "0 3 * * *"  # daily at 03:00: new images since the last run get labeled
WATCH_EVERY_S = 600


def relabel_trigger(dataset: str):
    """Run on every `selftrain.unlabeled.landed` event for ``dataset``, labeling the event's prefix."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.watch_unlabeled import EVENT

    return DeploymentEventTrigger(
        name=f"new unlabeled images for {dataset}",
        description=f"On every {EVENT} event whose resource is selftrain.unlabeled.{dataset} (emitted by "
        "watch-unlabeled), run this deployment on the prefix the event names (payload.prefix), into the "
        "store the watcher looked at (payload.store).",
        expect={EVENT},
        match={"prefect.resource.id": f"selftrain.unlabeled.{dataset}"},
        parameters={"unlabeled": "{{ event.payload.prefix }}", "store": "{{ event.payload.store }}"},
    )


@contextlib.contextmanager
def _data_variable():
    """SELFTRAIN_DATA set (to data_root()) while defaults are validated at registration."""
    old = os.environ.get("SELFTRAIN_DATA")
    os.environ["SELFTRAIN_DATA"] = data_root()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SELFTRAIN_DATA")
        else:
            os.environ["SELFTRAIN_DATA"] = old


def build(pool: str = POOL, schedules: bool = True) -> list:
    """RunnerDeployment objects for every deployment (parameters validated first)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron, Interval

    from flows.self_training import SelfTrainingParams, self_training
    from flows.watch_unlabeled import watch_unlabeled

    out = []
    for name, (description, parameters) in DEPLOYMENTS.items():
        params = parameters()
        with _data_variable():
            SelfTrainingParams(**params)  # a broken default fails here, not in a worker at 3 am
        out.append(
            self_training.to_deployment(
                name=name,
                description=description,
                parameters=params,
                work_pool_name=pool,
                entrypoint_type=EntrypointType.MODULE_PATH,
                tags=["selftrain", params.get("task", "detection")],
            )
        )
    relabel = dict(demo_parameters(), retrain_student=False, teacher="latest")
    SelfTrainingParams(**relabel)
    out.append(
        self_training.to_deployment(
            name="relabel-demo",
            description="Pseudo-label new unlabeled images of the demo dataset (no student "
            "training): daily, and on every selftrain.unlabeled.landed event for it (the event names the prefix).",
            parameters=relabel,
            work_pool_name=pool,
            entrypoint_type=EntrypointType.MODULE_PATH,
            schedules=[Cron(RELABEL_CRON, active=schedules)],
            triggers=[relabel_trigger(relabel["dataset"])],
            tags=["selftrain", "relabel"],
        )
    )
    out.append(
        watch_unlabeled.to_deployment(
            name="demo",
            description="Announce new images under the demo's unlabeled prefix as events.",
            parameters={"dataset": relabel["dataset"], "prefix": relabel["unlabeled"], "store": relabel["store"]},
            work_pool_name=pool,
            entrypoint_type=EntrypointType.MODULE_PATH,
            schedules=[Interval(WATCH_EVERY_S, active=schedules)],
            tags=["selftrain", "watch"],
        )
    )
    return out


def _timing(schedule) -> str:
    """What makes two schedules the same schedule: an interval's length (its anchor is the time
    it was registered), else the whole schedule (cron string, time zone, ...)."""
    interval = getattr(schedule, "interval", None)
    return f"every {interval}" if interval is not None else repr(schedule)


def register(pool: str = POOL, schedules: bool = True, reset_parameters: bool = False) -> tuple[list[str], list[str]]:
    """Create the process work pool if missing and register (or update) every deployment.

    A deployment that exists already keeps the parameters it has on the server (edited in the
    UI or with `prefect deployment ...`), unless ``reset_parameters``, and a schedule paused
    there stays paused: registering again (every `make serve`) never silently resets them.
    Returns (deployment ids, names whose edited parameters were kept)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    from flows.params import rename_deprecated

    deployments, kept = build(pool, schedules), []
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
        for d in deployments:
            try:
                existing = client.read_deployment_by_name(f"{d.flow_name}/{d.name}")
            except ObjectNotFound:
                continue
            if not reset_parameters and existing.parameters != d.parameters:
                d.parameters = dict(existing.parameters)
                if d.flow_name == "self-training":  # parameters saved under a deprecated name move to the new one
                    d.parameters = rename_deprecated(d.parameters, warn=print)
                kept.append(f"{d.flow_name}/{d.name}")
            # a schedule paused on the server stays paused (the same schedule, matched by its timing)
            paused = {_timing(s.schedule) for s in existing.schedules or [] if not s.active}
            for schedule in d.schedules or []:
                if _timing(schedule.schedule) in paused and schedule.active:
                    schedule.active = False
                    print(f"kept the schedule {schedule.schedule!r} of {d.flow_name}/{d.name} paused")
    # RunnerDeployment.apply registers one deployment; prefect.deploy() would also look for
    # online workers, a query this server version refuses (422 on offset/limit None).
    return [str(d.apply(work_pool_name=pool)) for d in deployments], kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["register"])
    parser.add_argument("--pool", default=POOL)
    parser.add_argument(
        "--paused-schedules", action="store_true", help="register the schedules inactive (switch them on in the UI)"
    )
    parser.add_argument(
        "--reset-parameters",
        action="store_true",
        help="replace parameters edited on the server by the defaults of this file",
    )
    args = parser.parse_args(argv)
    ids, kept = register(args.pool, schedules=not args.paused_schedules, reset_parameters=args.reset_parameters)
    names = [f"self-training/{n}" for n in DEPLOYMENTS] + ["self-training/relabel-demo", "watch-unlabeled/demo"]
    print(f"registered {len(ids)} deployments on work pool {args.pool}: " + ", ".join(names))
    if kept:
        print(
            "kept the parameters edited on the server for "
            + ", ".join(kept)
            + " (--reset-parameters restores the defaults)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
