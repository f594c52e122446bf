"""`selftrain config show params.json --stage ...`: a stage's OpenMMLab config before a run.

The config is built by the same code a run uses (selftrain/mm/configs/ on the stage files
of model_configs/stages/), with the sets' paths as the parameters give them. A run differs in
paths only: it trains on the registered copies in its scratch folder, and a student's pseudo
set is written from the pseudo-label shards.
"""

from __future__ import annotations

from typing import Any

from storage.listing import read_url

TEACHER_CKPT = "<the teacher's last checkpoint>"
PSEUDO_SET = "<pseudo labels of the unlabeled images>"


def _detection_sources(p: Any) -> tuple[Any, Any, Any, int]:
    """The sets as registration normalises them (categories by id: label i is the i-th class),
    named by placeholders for the registered copies a run trains on: labeled, held-out, a
    student's pseudo set, and the number of labeled images."""
    from selftrain.mm.configs import CocoSource
    from tasks.register_dataset import normalise_coco

    coco, _ = normalise_coco(read_url(p.labeled.ann_file), p.labeled.ann_file)
    classes = tuple(c["name"] for c in coco["categories"])
    labeled = CocoSource(f"<registered copy of {p.labeled.ann_file}>", p.labeled.image_root, classes)
    val = CocoSource(f"<registered copy of {p.val.ann_file}>", p.val.image_root, classes)
    return labeled, val, CocoSource(PSEUDO_SET, "", classes), len(coco["images"])


def _segmentation_sources(p: Any) -> tuple[Any, Any, Any, int | None]:
    from selftrain.mm.configs import SegSource

    def pairs(s: Any) -> str:
        return f"<pair list of {s.img_dir}/*{s.img_suffix} + {s.ann_dir}/*{s.seg_map_suffix}>"

    import glob
    import os

    classes = tuple(p.labeled.classes)
    local = "://" not in p.labeled.img_dir and os.path.isdir(p.labeled.img_dir)
    count = len(glob.glob(os.path.join(p.labeled.img_dir, f"*{p.labeled.img_suffix}"))) if local else None
    return SegSource(pairs(p.labeled), classes), SegSource(pairs(p.val), classes), SegSource(PSEUDO_SET, classes), count


SOURCES = {"detection": _detection_sources, "segmentation": _segmentation_sources}  # by the kind's name


def preview_config(p: Any, stage: str, method: str | None = None, num_pseudo: int | None = None) -> str:
    """The resolved config of ``stage`` ('teacher', 'student', 'evaluate') for the flow
    parameters ``p`` (a flows.params.SelfTrainingParams), as mmengine's pretty text under a
    comment header. ``method``: the student's ('zoph' or 'st'; default: the first of the
    parameters', st++ training as st). ``num_pseudo``: pseudo-labeled images the student sees
    (default: as many as labeled images). Raises ValueError for a method the task lacks."""
    from selftrain.mm.configs import epoch_matched_iters

    kind = p.kind
    cfg = kind.load_config(p.config)
    labeled, val, pseudo, num_labeled = SOURCES[kind.name](p)
    num_labeled = num_labeled or 1
    header = [f"# selftrain config show: stage {stage}, task {kind.name}, model config {p.config}"]
    if stage == "evaluate":
        built = kind.test_config(cfg, "<work folder>", val)
    else:
        student = stage == "student"
        method = method or ("st" if p.methods[0] == "st++" else p.methods[0])
        if student and method not in kind.methods:
            raise ValueError(f"{kind.name} students train with {list(kind.methods)}, not {method!r}")
        pseudo_count = num_pseudo if num_pseudo is not None else num_labeled
        iters = p.teacher_iters
        if student and method == "zoph":
            iters = p.student_iters or p.teacher_iters  # as long as the teacher (Zoph et al.)
        elif student:  # the teacher's epochs over the student's own set (ST++)
            iters = p.student_iters or epoch_matched_iters(p.teacher_iters, num_labeled, pseudo_count, p.k)
        common: dict[str, Any] = dict(
            work_dir="<work folder>",
            iters=iters,
            k=p.k,
            seed=p.seed,
            aug=(p.aug if method == "zoph" else "weak") if student else p.teacher_aug,
            pretrained=p.pretrained,
            load_from=TEACHER_CKPT if student and method == "zoph" and p.init == "teacher" else None,
        )
        built = kind.train_config(
            cfg,
            labeled=labeled,
            val=val,
            pseudo=pseudo if student else None,
            method=method,
            alpha=p.alpha,
            num_pseudo=pseudo_count,
            num_labeled=num_labeled,
            zoph_batch=p.zoph_batch,
            normalize_loss=p.normalize_loss,
            strong_aug=p.strong_aug,
            **common,
        )
        if student:
            header.append(f"# student method {method}, {pseudo_count} pseudo-labeled images assumed (--num-pseudo)")
            if method == "st":
                header.append(f"# strong augmentation of the pseudo-labeled images: {p.strong_aug}")
    header.append("# image folders as the parameters give them; annotations: the registered, normalised copies")
    return "\n".join(header) + "\n" + built.pretty_text
