"""Datasets of a stage: a registered set's local copy put into a stage template's dataset dict."""

from __future__ import annotations

import json
from dataclasses import dataclass

from selftrain.mm.configs.files import stage_template


@dataclass(frozen=True)
class CocoSource:
    """A COCO-format detection set on local disk: annotations and the image root."""

    ann_file: str
    image_root: str
    classes: tuple[str, ...]


@dataclass(frozen=True)
class SegSource:
    """A segmentation set on local disk: a JSON list of {img_path, seg_map_path} (see
    selftrain.mm.segmentation.PairListSegDataset) and its classes (index = label value)."""

    pairs_file: str
    classes: tuple[str, ...]


def fill_coco(dataset: dict, source: CocoSource, pipeline: list[dict]) -> dict:
    """Fill a CocoDataset of a stage template with a local set and its pipeline (in place).

    An empty ``image_root`` (a pseudo set, whose file names are the images' full URIs) gives
    an empty prefix: mmdet joins prefix and file name, and "/" + "s3://b/x.jpg" is no URL."""
    dataset.update(ann_file=source.ann_file, pipeline=pipeline)
    dataset["data_prefix"]["img"] = source.image_root.rstrip("/") + "/" if source.image_root else ""
    dataset["metainfo"]["classes"] = tuple(source.classes)
    return dataset


def coco_dataset(source: CocoSource, pipeline: list[dict], test_mode: bool) -> dict:
    """A CocoDataset dict (model_configs/_base_/datasets/coco_detection.py) for ``source``."""
    part = stage_template("det_teacher")["val_dataloader" if test_mode else "train_dataloader"]
    return fill_coco(part["dataset"], source, pipeline)


def fill_pairs(dataset: dict, source: SegSource, pipeline: list[dict]) -> dict:
    """Fill a PairListSegDataset of a stage template with a local set and its pipeline (in place)."""
    dataset.update(ann_file=source.pairs_file, pipeline=pipeline)
    dataset["metainfo"]["classes"] = tuple(source.classes)
    return dataset


def seg_dataset(source: SegSource, pipeline: list[dict], test_mode: bool = False) -> dict:
    """A PairListSegDataset dict (model_configs/_base_/datasets/pair_list_seg.py) for ``source``."""
    part = stage_template("seg_teacher")["val_dataloader" if test_mode else "train_dataloader"]
    return fill_pairs(part["dataset"], source, pipeline)


def count_images(source: CocoSource | SegSource) -> int:
    """Images of a local set: a COCO file's images, or a pair list's entries."""
    path = source.ann_file if isinstance(source, CocoSource) else source.pairs_file
    with open(path) as f:
        data = json.load(f)
    return len(data["images"] if isinstance(source, CocoSource) else data)
