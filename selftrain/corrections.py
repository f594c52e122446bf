"""Reviewed pseudo labels back as labeled data: a corrected export (the COCO file or the Label
Studio tasks that `selftrain export` wrote, after a person fixed them) merged with the labeled
set into one COCO file, so that the next run trains its teacher on both and pseudo-labels only
the images that are still unlabeled.

Every correction is checked against the run it came from: its image must be one of the run's
unlabeled images (by the image id the export wrote; a Label Studio task also by its image URL),
its class one of the labeled set's, its box inside the image (1 px of rounding allowed, then
clipped) and not empty. Each failure is a CorrectionError naming the image and the box. Label
Studio tasks nobody reviewed (no annotation, or only cancelled ones) are left out and counted:
their pseudo labels are not corrections.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

BOX_TOLERANCE = 1.0  # px a corrected box may stick out of its image; it is clipped


class CorrectionError(ValueError):
    """A corrected label that cannot join the labeled set; the message names the item."""


@dataclass
class Corrected:
    """One reviewed image: its unlabeled id and URI, size (px) and boxes (category id, x, y,
    w, h in px, COCO order)."""

    image_id: str
    image_uri: str
    width: int
    height: int
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    crowd: list[int] = field(default_factory=list)  # iscrowd of each box (COCO; 0 from Label Studio)
    scored: int = 0  # boxes that still carry the export's score


def _check_box(
    where: str, x: float, y: float, w: float, h: float, width: int, height: int
) -> tuple[float, float, float, float]:
    """A box clipped to the image, or CorrectionError (prefixed by ``where``: the file, the
    image and the box) when it is outside or empty."""
    values = (x, y, w, h)
    if not all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for v in values):
        raise CorrectionError(f"{where} has non-numeric or non-finite values {list(values)}")
    if w <= 0 or h <= 0:
        raise CorrectionError(f"{where} {[x, y, w, h]} is empty (width and height must be > 0)")
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        raise CorrectionError(f"{where} [x {x:g}, y {y:g}, w {w:g}, h {h:g}] lies outside the {width}x{height} image")
    x1, y1 = max(0.0, float(x)), max(0.0, float(y))
    x2, y2 = min(float(width), float(x + w)), min(float(height), float(y + h))
    return (x1, y1, x2 - x1, y2 - y1)


SizeOf = Callable[[str, str], tuple[int, int]]  # (image id, URI) -> (width, height) as training decodes it


def _check_size(source: str, image_id: str, given: tuple[Any, Any], true: tuple[int, int]) -> None:
    if tuple(given) != tuple(true):
        raise CorrectionError(
            f"{source}: image {image_id!r} is given as {given[0]}x{given[1]} px, but the image is "
            f"{true[0]}x{true[1]} (as training decodes it)"
        )


def coco_corrections(
    data: dict, unlabeled: dict[str, str], categories: dict[int, str], source: str, size_of: SizeOf
) -> list[Corrected]:
    """The images of a corrected COCO export (file_name = the unlabeled image's id, as
    `selftrain export --format coco` writes it; boxes [x, y, w, h] px; the labeled set's
    category ids and names). ``unlabeled``: image id -> URI of the run's unlabeled images;
    ``size_of``: an image's true size (the file's must equal it)."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CorrectionError(f"{source}: not a COCO file (no 'images' list)")
    for c in data.get("categories") or []:
        if isinstance(c, dict) and c.get("id") in categories and c.get("name") != categories[c["id"]]:
            raise CorrectionError(
                f"{source}: category id {c['id']} is named {c.get('name')!r}; in the labeled set it is "
                f"{categories[c['id']]!r}"
            )
    by_id: dict[Any, Corrected] = {}
    names: set[str] = set()
    for im in data["images"]:
        name = im.get("file_name") if isinstance(im, dict) else None
        if name not in unlabeled:
            raise CorrectionError(
                f"{source}: image {name!r} is not one of the run's unlabeled images (file_name must be the image "
                "id the export wrote)"
            )
        if im.get("id") in by_id:
            raise CorrectionError(f"{source}: image id {im.get('id')!r} appears twice")
        if name in names:
            raise CorrectionError(f"{source}: image {name!r} is listed twice (ids differ); list each image once")
        names.add(name)
        _check_size(source, name, (im.get("width"), im.get("height")), size_of(name, unlabeled[name]))
        by_id[im["id"]] = Corrected(name, unlabeled[name], im["width"], im["height"])
    for k, a in enumerate(data.get("annotations") or []):
        label = f"annotation {a.get('id', k)!r}" if isinstance(a, dict) else f"annotation {k}"
        image = by_id.get(a.get("image_id"))
        if image is None:
            raise CorrectionError(f"{source}: {label} names image id {a.get('image_id')!r}, not in 'images'")
        where = f"{source}: image {image.image_id!r}: {label}"
        if a.get("category_id") not in categories:
            raise CorrectionError(
                f"{where} has category id {a.get('category_id')!r}, not a class of the labeled set ({categories})"
            )
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise CorrectionError(f"{where} needs bbox [x, y, w, h]")
        x, y, w, h = bbox
        image.boxes.append((int(a["category_id"]), *_check_box(where, x, y, w, h, image.width, image.height)))
        image.crowd.append(1 if a.get("iscrowd") else 0)
        image.scored += "score" in a
    return list(by_id.values())


def label_studio_corrections(
    tasks: list, unlabeled: dict[str, str], names: dict[str, int], source: str, size_of: SizeOf
) -> tuple[list[Corrected], int]:
    """The reviewed images of a Label Studio JSON export (tasks with ``data.image_id`` as
    `selftrain export --format label-studio` writes them, else ``data.image`` matched to an
    image's URI; ``rectanglelabels`` results in percent of the image, each with the image's
    original size, which must be its true size: ``size_of``). ``names``: class name ->
    category id. A task with several annotations that were not cancelled, or a result of
    another type (polygons, brushes), is refused naming the task. Returns the corrected
    images and how many tasks had no annotation."""
    if not isinstance(tasks, list):
        raise CorrectionError(f"{source}: not a Label Studio JSON export (a list of tasks)")
    by_uri = {uri: i for i, uri in unlabeled.items()}
    out: list[Corrected] = []
    unreviewed = 0
    seen: set[str] = set()
    for t, task in enumerate(tasks):
        data = task.get("data") or {} if isinstance(task, dict) else {}
        task_name = f"task {task.get('id', t)!r}" if isinstance(task, dict) else f"task {t}"
        image_id = data.get("image_id")
        if image_id is None:
            image_id = by_uri.get(str(data.get("image")))
        if image_id not in unlabeled:
            raise CorrectionError(
                f"{source}: {task_name} (image {data.get('image_id') or data.get('image')!r}) is not one of the "
                "run's unlabeled images"
            )
        done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not done:
            unreviewed += 1
            continue
        if len(done) > 1:
            raise CorrectionError(
                f"{source}: {task_name} (image {image_id!r}) has {len(done)} annotations; keep the one to train on "
                "(delete or skip the others in Label Studio) and export again"
            )
        if image_id in seen:
            raise CorrectionError(f"{source}: image {image_id!r} is reviewed in two tasks")
        seen.add(image_id)
        true = size_of(image_id, unlabeled[image_id])
        image = Corrected(image_id, unlabeled[image_id], *true)
        for k, r in enumerate(done[0].get("result") or []):
            where = f"{source}: {task_name} (image {image_id!r}): result {r.get('id', k)!r}"
            if r.get("type") != "rectanglelabels":
                raise CorrectionError(f"{where} is of type {r.get('type')!r}; only rectanglelabels boxes come back")
            _check_size(source, image_id, (r.get("original_width"), r.get("original_height")), true)
            w, h = true
            v = r.get("value") or {}
            if float(v.get("rotation") or 0.0) != 0.0:
                raise CorrectionError(f"{where} is rotated; boxes must be axis-aligned")
            labels = v.get("rectanglelabels") or []
            if len(labels) != 1 or labels[0] not in names:
                raise CorrectionError(
                    f"{where} is labeled {labels}, not one class of the labeled set ({sorted(names)})"
                )
            x, y = v.get("x", 0.0) * w / 100.0, v.get("y", 0.0) * h / 100.0
            bw, bh = v.get("width", 0.0) * w / 100.0, v.get("height", 0.0) * h / 100.0
            image.boxes.append((names[labels[0]], *_check_box(where, x, y, bw, bh, w, h)))
            image.crowd.append(0)
        out.append(image)
    return out, unreviewed


def _split(uri: str) -> tuple[str, str]:
    """(scheme://netloc or '', path) of a URI or local path."""
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        netloc, _, path = rest.partition("/")
        return f"{scheme}://{netloc}", "/" + path
    return "", uri


def common_root(uris: Iterable[str]) -> str:
    """The deepest folder holding every URI (same scheme and bucket), for one image_root.
    Raises CorrectionError when they share none (two buckets, or a local path and a URL)."""
    uris = list(uris)
    bases = {_split(u)[0] for u in uris}
    if len(bases) != 1:
        raise CorrectionError(
            f"the labeled and the corrected images lie in different places ({sorted(bases)}); copy the corrected "
            "images beside the labeled ones, then import"
        )
    base = bases.pop()
    folder = posixpath.commonpath([posixpath.dirname(_split(u)[1]) for u in uris])
    return base + folder if base else folder


def merge_labeled(labeled: dict, uris: dict[str, str], corrected: list[Corrected], out: str) -> tuple[dict, str]:
    """Write the labeled set plus the corrected images as one COCO file at ``out``.

    ``labeled``: the registered (normalised) labeled COCO; ``uris``: its file_name ->
    URI. The images' file_names become paths relative to the common root of all images
    (returned: the new set's image_root); ids are renumbered 1..N; the categories are the
    labeled set's. Raises CorrectionError for an image that is labeled already."""
    already = set(uris.values())
    twice = [c.image_id for c in corrected if c.image_uri in already]
    if twice:
        raise CorrectionError(f"image(s) {twice[:5]} are in the labeled set already")
    root = common_root([*uris.values(), *(c.image_uri for c in corrected)])
    base, root_path = _split(root)

    def rel(uri: str) -> str:
        return posixpath.relpath(_split(uri)[1], root_path)

    images: list[dict] = []
    annotations: list[dict] = []
    new_id: dict[int, int] = {}
    for im in labeled["images"]:
        new_id[im["id"]] = len(images) + 1
        images.append(dict(im, id=len(images) + 1, file_name=rel(uris[im["file_name"]])))
    for a in labeled["annotations"]:
        annotations.append(dict(a, id=len(annotations) + 1, image_id=new_id[a["image_id"]]))
    for c in corrected:
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": rel(c.image_uri), "width": c.width, "height": c.height})
        for (category, x, y, w, h), crowd in zip(c.boxes, c.crowd or [0] * len(c.boxes), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
            )
    merged = {"images": images, "annotations": annotations, "categories": labeled["categories"]}
    with open(out, "w") as f:
        json.dump(merged, f)
    return merged, root


def labeled_uris(image_root: str, file_names: list[str]) -> dict[str, str]:
    """file_name -> URI (as listings write it) of a COCO set's images under ``image_root``;
    CorrectionError names the missing ones."""
    from selftrain.registration import unreadable_note
    from storage.listing import list_files

    unreadable: list[str] = []
    found = {f.rel: f.uri for f in list_files(image_root, unreadable=unreadable)}
    missing = [n for n in file_names if n not in found]
    if missing:
        raise CorrectionError(
            f"{len(missing)} labeled image(s) are missing under {image_root}: {missing[:5]}"
            + unreadable_note(unreadable)
        )
    return {n: found[n] for n in file_names}


FORMATS = ("coco", "label-studio")


def import_corrections(store: Any, labeled: Any, unlabeled: Any, path: str, fmt: str, out: str, **_: Any) -> dict:
    """Merge a corrected export of a run's pseudo labels with its labeled set (detection).

    ``labeled``: the run's registered labeled set; ``unlabeled``: its unlabeled listing (both
    ArtifactRefs in ``store``); ``path``: the corrected file (``fmt`` 'coco' or
    'label-studio', as `selftrain export` wrote them, after review); ``out``: the merged COCO
    file to write. Returns {'ann_file', 'image_root', 'labeled_images', 'added_images',
    'added_boxes', 'unreviewed', 'next_labeled': the next run's labeled=dict(ann_file,
    image_root), 'notes'}. Segmentation's reviewed masks: selftrain/mask_corrections.py (each
    kind's ``import_corrections``, selftrain/kinds.py).
    Raises CorrectionError naming the item that does not fit (module docstring)."""
    from selftrain.registration import decoded_size
    from storage.listing import read_url
    from storage.schemas import UNLABELED_IMAGES, read_parquet

    if fmt not in FORMATS:
        raise CorrectionError(f"corrections are read as {list(FORMATS)}, not {fmt!r}")
    meta = store.manifest(labeled).meta
    if "category_ids" not in meta:
        raise CorrectionError("importing corrections applies to detection sets (COCO); this labeled set has masks")
    rows = read_parquet(store.read(unlabeled, "images.parquet"), UNLABELED_IMAGES).to_pylist()
    images = {r["image_id"]: r["image_uri"] for r in rows}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise CorrectionError(f"{path}: cannot read the corrections: {exc}") from exc

    def size_of(image_id: str, uri: str) -> tuple[int, int]:
        try:
            return decoded_size(read_url(uri), uri)
        except (OSError, ValueError) as exc:
            raise CorrectionError(f"{path}: image {image_id!r} ({uri}) cannot be read: {exc}") from exc

    unreviewed = 0
    if fmt == "coco":
        categories = dict(zip(meta["category_ids"], meta["classes"]))
        corrected = coco_corrections(data, images, categories, path, size_of)
    else:
        names = dict(zip(meta["classes"], meta["category_ids"]))
        corrected, unreviewed = label_studio_corrections(data, images, names, path, size_of)
    if not corrected:
        raise CorrectionError(f"{path}: no reviewed image to import ({unreviewed} tasks without an annotation)")
    coco = store.read_json(labeled, "coco.json")
    uris = labeled_uris(meta["image_root"], [im["file_name"] for im in coco["images"]])
    merged, root = merge_labeled(coco, uris, corrected, out)
    return {
        "ann_file": out,
        "image_root": root,
        "labeled_images": len(coco["images"]),
        "added_images": len(corrected),
        "added_boxes": sum(len(c.boxes) for c in corrected),
        "unreviewed": unreviewed,
        "images": len(merged["images"]),
        "boxes_with_scores": sum(c.scored for c in corrected),  # still the export's: was the file reviewed?
        "next_labeled": {"ann_file": out, "image_root": root},
        "notes": [],
    }
