"""Register a labelled (or validation) COCO detection set: validate it, store a normalised copy.

The key is the content: sha256 of the annotation file, the image root URL and the sizes of
the images it names. Every problem is reported with the item it concerns.
"""

from __future__ import annotations

import json
import posixpath

import fsspec
from prefect import task
from prefect.cache_policies import NO_CACHE

from selftrain.stage import get_store
from storage.keys import digest_bytes, digest_json
from storage.store import ArtifactRef

STAGE, VERSION = "dataset", 1
BOX_TOLERANCE = 1.0  # px a box may stick out of its image (rounding); it is clipped


class DatasetError(ValueError):
    pass


def validate_coco(raw: bytes, source: str) -> dict:
    """Parse and check a COCO detection file; returns a normalised dict (boxes clipped)."""
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
    cats = {}
    for c in coco["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise DatasetError(f"{source}: category {c!r} needs an integer 'id' and a string 'name'")
        if c["id"] in cats:
            raise DatasetError(f"{source}: category id {c['id']} appears twice")
        cats[c["id"]] = c["name"]
    images = {}
    for im in coco["images"]:
        if not isinstance(im, dict) or not all(k in im for k in ("id", "file_name", "width", "height")):
            raise DatasetError(f"{source}: image {im!r} needs id, file_name, width and height")
        if im["id"] in images:
            raise DatasetError(f"{source}: image id {im['id']} appears twice")
        if not (isinstance(im["width"], int) and isinstance(im["height"], int) and im["width"] > 0 and im["height"] > 0):
            raise DatasetError(f"{source}: image {im['id']} ({im['file_name']}) has invalid size "
                               f"{im['width']}x{im['height']}")
        images[im["id"]] = im
    anns = []
    for a in coco["annotations"]:
        where = f"{source}: annotation {a.get('id', '?') if isinstance(a, dict) else a!r}"
        if not isinstance(a, dict) or not all(k in a for k in ("id", "image_id", "category_id", "bbox")):
            raise DatasetError(f"{where} needs id, image_id, category_id and bbox")
        if a["image_id"] not in images:
            raise DatasetError(f"{where} refers to unknown image id {a['image_id']}")
        if a["category_id"] not in cats:
            raise DatasetError(f"{where} has unknown category id {a['category_id']} "
                               f"(known: {sorted(cats)})")
        im = images[a["image_id"]]
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where} has a malformed bbox {a['bbox']!r} (expected [x, y, w, h])") from exc
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where} ({im['file_name']}) has an empty box {a['bbox']}")
        W, H = im["width"], im["height"]
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > W + t or y + h > H + t:
            raise DatasetError(f"{where} box {a['bbox']} lies outside image {im['file_name']} ({W}x{H})")
        x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h)
        anns.append(dict(a, bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                         iscrowd=int(a.get("iscrowd", 0))))
    return dict(images=coco["images"], annotations=anns,
                categories=[{"id": c["id"], "name": c["name"]} for c in coco["categories"]])


def image_sizes(image_root: str, file_names: list[str]) -> dict[str, int]:
    """Size of every named image under the root; missing files are an error naming them."""
    fs, root = fsspec.core.url_to_fs(image_root)
    found = {}
    for info in fs.find(root, detail=True).values():
        rel = posixpath.relpath(info["name"], root.rstrip("/") or "/")
        found[rel] = int(info.get("size") or 0)
    missing = [f for f in file_names if f not in found]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(f"{len(missing)} image(s) named in the annotations are missing under "
                           f"{image_root}: {missing[:5]}{more}")
    return {f: found[f] for f in file_names}


@task(name="register_dataset", cache_policy=NO_CACHE)
def register_dataset(store_url: str, dataset: str, ann_file: str, image_root: str, role: str) -> ArtifactRef:
    """Validate a COCO set at any fsspec URL and keep a normalised copy in the store."""
    store = get_store(store_url)
    try:
        with fsspec.open(ann_file, "rb") as f:
            raw = f.read()
    except FileNotFoundError as exc:
        raise DatasetError(f"{role} annotations not found: {ann_file}") from exc
    coco = validate_coco(raw, ann_file)
    sizes = image_sizes(image_root, [im["file_name"] for im in coco["images"]])
    ref = store.stage_ref(dataset, STAGE, VERSION, "", {
        "annotations": digest_bytes(raw), "images": digest_json(sizes)}, {"image_root": image_root})
    if store.has(ref):
        return ref
    meta = {"role": role, "ann_file": ann_file, "image_root": image_root,
            "classes": [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])],
            "category_ids": [c["id"] for c in sorted(coco["categories"], key=lambda c: c["id"])],
            "num_images": len(coco["images"]), "num_boxes": len(coco["annotations"])}
    store.write(ref, {"coco.json": json.dumps(coco).encode()}, meta=meta)
    return ref
