"""Register a labeled (or validation) COCO detection set: validate it, store a normalised copy.

The normalised copy is what every later stage reads, so it holds exactly what mmdet and
pycocotools assume of a COCO file, and registration says what it changed:

* categories sorted by id: label index i of every model is the i-th category by id, the one
  mapping (label index <-> category id <-> class name) that training, pseudo boxes,
  per-class thresholds, evaluation and the report share. (mmdet orders labels by the
  file's category order; a file listing ids [2, 1] would otherwise swap classes.)
* annotation ids renumbered 1..N when they are not unique positive integers (pycocotools
  uses id 0 as "unmatched": a ground truth box with id 0 is never counted as found);
* image ids renumbered 1..N when they are not unique integers;
* boxes at most 1 px outside their image clipped; ``iscrowd`` defaulted to 0; a missing or
  invalid ``area`` set to the box area (a given positive area - COCO's mask area - is kept).

Refused, naming the file and the item: malformed JSON or fields, duplicate category ids or
names, unknown image / category ids, non-finite, empty or outside boxes, missing or
undecodable images, an image whose decoded size (as training decodes it: OpenCV, EXIF
orientation applied) differs from the size in the file, and a set without any non-crowd box.
The key is the content: sha256 of the annotation file, the image root URL and the sizes of
the images it names.
"""

from __future__ import annotations

import json
import math
import posixpath
from concurrent.futures import ThreadPoolExecutor

from selftrain.registration import (
    DatasetError,
    decoded_size,
    degenerate,
    exif_orientation,
    orientation_note,
    size_mismatch,
    unreadable_note,
)
from selftrain.stage import done_or_claimed, expect, get_store, log_stage, stage_logger, stage_task
from storage.keys import digest_bytes, digest_json
from storage.listing import list_files, read_url
from storage.store import ArtifactRef

STAGE, VERSION = "dataset", 2
BOX_TOLERANCE = 1.0  # px a box may stick out of its image (rounding); it is clipped
SIZE_CHECK_THREADS = 8


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _categories(coco: dict, source: str, changes: list[str]) -> list[dict]:
    cats: dict = {}
    names: dict = {}
    for c in coco["categories"]:
        if isinstance(c, dict) and isinstance(c.get("id"), float) and c["id"].is_integer():
            c = dict(c, id=int(c["id"]))  # 1.0 from a pandas export
        if (
            not isinstance(c, dict)
            or not _is_int(c.get("id"))
            or not isinstance(c.get("name"), str)
            or not c["name"].strip()
        ):
            raise DatasetError(f"{source}: category {c!r} needs an integer 'id' and a non-empty string 'name'")
        if c["id"] in cats:
            raise DatasetError(f"{source}: category id {c['id']} appears twice")
        if c["name"] in names:
            raise DatasetError(
                f"{source}: category name {c['name']!r} is used by ids {names[c['name']]} and "
                f"{c['id']}; class names must be unique"
            )
        cats[c["id"]], names[c["name"]] = c["name"], c["id"]
    listed = [int(c["id"]) for c in coco["categories"]]
    if listed != sorted(listed):
        changes.append(
            f"categories sorted by id (the file lists ids {listed}); label index i = the i-th category by id"
        )
    return [{"id": i, "name": cats[i]} for i in sorted(cats)]


def _images(coco: dict, source: str, changes: list[str]) -> tuple[list[dict], dict]:
    images: list[dict] = []
    files: dict = {}
    old_ids: list = []
    for im in coco["images"]:
        if not isinstance(im, dict) or not all(k in im for k in ("id", "file_name", "width", "height")):
            raise DatasetError(f"{source}: image {im!r} needs id, file_name, width and height")
        if not isinstance(im["file_name"], str) or not im["file_name"].strip():
            raise DatasetError(f"{source}: image {im['id']!r} has no file_name")
        name = posixpath.normpath(im["file_name"].replace("\\", "/"))  # './a.jpg', 'sub/../a.jpg' -> 'a.jpg'
        if name.startswith("../") or name == "..":
            raise DatasetError(f"{source}: image {im['id']!r} names {im['file_name']!r}, outside the image root")
        w, h = im["width"], im["height"]
        if isinstance(w, float) and w.is_integer():
            w = int(w)
        if isinstance(h, float) and h.is_integer():
            h = int(h)
        if not (_is_int(w) and _is_int(h) and w > 0 and h > 0):
            raise DatasetError(f"{source}: image {im['id']!r} ({name}) has invalid size {w}x{h}")
        if name in files:
            raise DatasetError(f"{source}: images {files[name]!r} and {im['id']!r} name the same file {name}")
        files[name] = im["id"]
        old_ids.append(im["id"])
        images.append(dict(im, file_name=name, width=w, height=h))
    hashable = [i if isinstance(i, (int, str)) and not isinstance(i, bool) else repr(i) for i in old_ids]
    if len(set(hashable)) != len(hashable):
        dup = sorted({repr(i) for i in hashable if hashable.count(i) > 1})
        raise DatasetError(f"{source}: image id(s) {', '.join(dup)} appear twice")
    id_map = {old: old for old in hashable}
    if not all(_is_int(i) for i in old_ids):
        id_map = {old: n for n, old in enumerate(hashable, start=1)}
        changes.append(
            "image ids renumbered 1..N (the file has non-integer ids; the original id is kept as 'source_id')"
        )
        for im, old in zip(images, old_ids):
            im["source_id"], im["id"] = old, id_map[old if isinstance(old, (int, str)) else repr(old)]
    return images, id_map


def normalise_coco(raw: bytes, source: str) -> tuple[dict, list[str]]:
    """Parse, check and normalise a COCO detection file.

    Returns (the normalised COCO dict, the list of changes made, in words). Raises
    DatasetError naming ``source`` and the item for every problem (see the module docstring).
    """
    try:
        coco = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{source}: not valid JSON ({exc})") from exc
    if not isinstance(coco, dict):
        raise DatasetError(f"{source}: the top level must be an object with images/annotations/categories")
    for field in ("images", "annotations", "categories"):
        if not isinstance(coco.get(field), list):
            raise DatasetError(f"{source}: missing or invalid '{field}' list")
    if not coco["images"]:
        raise DatasetError(f"{source}: no images")
    if not coco["categories"]:
        raise DatasetError(f"{source}: no categories")
    changes: list[str] = []
    categories = _categories(coco, source, changes)
    cat_ids = {c["id"] for c in categories}
    images, id_map = _images(coco, source, changes)
    by_id = {im["id"]: im for im in images}
    anns, clipped, filled_area = [], 0, 0
    ann_ids = [a.get("id") if isinstance(a, dict) else None for a in coco["annotations"]]
    for a in coco["annotations"]:
        where = f"{source}: annotation {a.get('id', '?') if isinstance(a, dict) else a!r}"
        if not isinstance(a, dict) or not all(k in a for k in ("image_id", "category_id", "bbox")):
            raise DatasetError(f"{where} needs image_id, category_id and bbox")
        key = (
            a["image_id"]
            if isinstance(a["image_id"], (int, str)) and not isinstance(a["image_id"], bool)
            else repr(a["image_id"])
        )
        if key not in id_map:
            raise DatasetError(f"{where} refers to unknown image id {a['image_id']!r}")
        if isinstance(a["category_id"], float) and a["category_id"].is_integer():
            a = dict(a, category_id=int(a["category_id"]))
        if a["category_id"] not in cat_ids or not _is_int(a["category_id"]):
            raise DatasetError(f"{where} has unknown category id {a['category_id']!r} (known: {sorted(cat_ids)})")
        im = by_id[id_map[key]]
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where} has a malformed bbox {a['bbox']!r} (expected [x, y, w, h])") from exc
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise DatasetError(f"{where} ({im['file_name']}) has a non-finite bbox {a['bbox']}")
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where} ({im['file_name']}) has an empty box {a['bbox']}")
        W, H = im["width"], im["height"]
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > W + t or y + h > H + t:
            raise DatasetError(f"{where} box {a['bbox']} lies outside image {im['file_name']} ({W}x{H})")
        x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h)
        if x2 <= x1 or y2 <= y1:
            raise DatasetError(f"{where} box {a['bbox']} lies outside image {im['file_name']} ({W}x{H})")
        was_clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
        clipped += was_clipped
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1, True, False):
            raise DatasetError(f"{where} has iscrowd={crowd!r}; expected 0 or 1")
        area = a.get("area")
        if not (isinstance(area, (int, float)) and not isinstance(area, bool) and math.isfinite(area) and area > 0):
            area, filled_area = (x2 - x1) * (y2 - y1), filled_area + 1
        elif was_clipped:
            area = (x2 - x1) * (y2 - y1)
        anns.append(dict(a, image_id=im["id"], bbox=[x1, y1, x2 - x1, y2 - y1], area=float(area), iscrowd=int(crowd)))
    if not (all(isinstance(i, int) and _is_int(i) and i > 0 for i in ann_ids) and len(set(ann_ids)) == len(ann_ids)):
        bad = "id 0" if 0 in ann_ids else "missing, duplicate, non-integer or non-positive ids"
        changes.append(
            f"annotation ids renumbered 1..{len(anns)} (the file has {bad}; pycocotools treats id 0 "
            "as no match); the original id is kept as 'source_id'"
        )
        for n, a in enumerate(anns, start=1):
            a["source_id"], a["id"] = a.get("id"), n
    if clipped:
        changes.append(f"{clipped} box(es) at most {BOX_TOLERANCE:g} px outside their image clipped to it")
    if filled_area:
        changes.append(f"{filled_area} annotation(s) without a valid area given the box area")
    return dict(images=images, annotations=anns, categories=categories), changes


def validate_coco(raw: bytes, source: str) -> dict:
    """The normalised COCO dict of ``normalise_coco`` (without the list of changes)."""
    return normalise_coco(raw, source)[0]


def check_image_sizes(images: list[dict], uris: dict[str, str], source: str) -> str | None:
    """Decode every image of a COCO set and compare with its declared width/height.

    ``uris``: file_name -> URL. Raises DatasetError naming the first images (up to 5) that
    differ, do not decode or are degenerate. Returns the note on EXIF-oriented images, if any."""

    def one(im: dict) -> tuple[str | None, int]:
        name = im["file_name"]
        try:
            raw = read_url(uris[name])
        except OSError as exc:  # the cause kept: an outage is still retried (selftrain.stage)
            raise DatasetError(f"{source}: image {uris[name]} cannot be read: {type(exc).__name__}: {exc}") from exc
        try:
            decoded = decoded_size(raw, uris[name])
        except DatasetError as exc:
            return str(exc), 1
        problem = size_mismatch(uris[name], (im["width"], im["height"]), raw, decoded) or degenerate(
            uris[name], decoded
        )
        return problem, exif_orientation(raw)

    with ThreadPoolExecutor(SIZE_CHECK_THREADS) as pool:
        results = list(pool.map(one, images))
    problems = [p for p, _ in results if p]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DatasetError(
            f"{source}: {len(problems)} image(s) do not match the annotations{more}: " + "; ".join(problems[:5])
        )
    return orientation_note([im["file_name"] for im in images], [o for _, o in results])


def image_uris(image_root: str, file_names: list[str]) -> dict[str, tuple[str, int]]:
    """file_name -> (URL, size) of every named image under the root (symbolic links followed);
    missing files are an error naming them."""
    unreadable: list[str] = []
    found = {f.rel: (f.uri, f.size) for f in list_files(image_root, unreadable=unreadable)}
    missing = [f for f in file_names if f not in found]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(
            f"{len(missing)} image(s) named in the annotations are missing under {image_root}: {missing[:5]}{more}"
            + unreadable_note(unreadable)
        )
    return {f: found[f] for f in file_names}


def image_sizes(image_root: str, file_names: list[str]) -> dict[str, int]:
    """Size in bytes of every named image under the root; missing files are an error naming them."""
    return {name: size for name, (_, size) in image_uris(image_root, file_names).items()}


def check_same_categories(labeled: dict, other: dict, source: str) -> None:
    """A held-out set must use the labeled set's classes (names and ids): raises DatasetError
    naming the differences."""
    a = {c["id"]: c["name"] for c in labeled["categories"]}
    b = {c["id"]: c["name"] for c in other["categories"]}
    if a != b:
        only_l = sorted(f"{i}:{n}" for i, n in a.items() if b.get(i) != n)
        only_o = sorted(f"{i}:{n}" for i, n in b.items() if a.get(i) != n)
        raise DatasetError(
            f"{source}: its categories differ from the labeled set's (id:name) - only in the "
            f"labeled set: {only_l}, only here: {only_o}; use the same category ids and names"
        )


@stage_task("register_dataset")
def register_dataset(
    store_url: str, dataset: str, ann_file: str, image_root: str, role: str, like: ArtifactRef | None = None
) -> ArtifactRef:
    """Validate a COCO detection set and store its normalised copy (classes by category id).

    ``like``: a registered labeled set whose categories this set (a held-out set) must share.
    Raises DatasetError naming the file and item for every refusal."""
    expect("register_dataset", "like", like, "registered set")
    store = get_store(store_url)
    try:
        raw = read_url(ann_file)
    except FileNotFoundError as exc:
        raise DatasetError(f"{role} annotations not found: {ann_file}") from exc
    except OSError as exc:  # a folder, a permission (the cause kept: an outage is still retried)
        raise DatasetError(f"{role} annotations {ann_file} cannot be read: {type(exc).__name__}: {exc}") from exc
    coco, changes = normalise_coco(raw, ann_file)
    boxes = sum(1 for a in coco["annotations"] if not a["iscrowd"])
    if not boxes:
        raise DatasetError(
            f"{ann_file}: the {role} set has no boxes (only crowd regions or none at all): "
            + (
                "a teacher cannot learn from it"
                if role.startswith("label")
                else "every COCO metric would be undefined (-1)"
            )
        )
    if like is not None:
        with store.open(like, "coco.json") as f:
            check_same_categories(json.load(f), coco, ann_file)
    try:
        located = image_uris(image_root, [im["file_name"] for im in coco["images"]])
    except DatasetError as exc:
        raise DatasetError(f"{ann_file} ({role} set): {exc}") from exc
    except OSError as exc:  # the root missing, a file, unreadable
        raise DatasetError(f"{ann_file} ({role} set): image root {image_root}: {exc}") from exc
    sizes = {name: size for name, (_, size) in located.items()}
    ref = store.stage_ref(
        dataset,
        STAGE,
        VERSION,
        "",
        {"annotations": digest_bytes(raw), "images": digest_json(sizes)},
        {"image_root": image_root, **({"like": f"{like.stage}/{like.key}"} if like is not None else {})},
    )
    for change in changes:
        stage_logger().warning("%s (%s set): normalised: %s", ann_file, role, change)
    if done_or_claimed(store, ref, f"register {role} set"):
        log_stage(f"register {role} set", ref, reused=True)
        return ref
    note = check_image_sizes(coco["images"], {name: uri for name, (uri, _) in located.items()}, ann_file)
    if note:
        changes.append(note)
        stage_logger().warning("%s (%s set): %s", ann_file, role, note)
    no_box = len({im["id"] for im in coco["images"]} - {a["image_id"] for a in coco["annotations"]})
    meta = {
        "role": role,
        "ann_file": ann_file,
        "image_root": image_root,
        "classes": [c["name"] for c in coco["categories"]],
        "category_ids": [c["id"] for c in coco["categories"]],
        "num_images": len(coco["images"]),
        "num_boxes": boxes,
        "num_crowd": len(coco["annotations"]) - boxes,
        "images_without_boxes": no_box,
        "normalised": changes,
    }
    store.write(ref, {"coco.json": json.dumps(coco).encode()}, meta=meta)
    log_stage(
        f"register {role} set",
        ref,
        reused=False,
        detail=f"{len(coco['images'])} images, {boxes} boxes, classes {meta['classes']}",
    )
    return ref
