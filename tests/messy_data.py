"""Tiny sets shaped like users' data, generated on the fly (never committed).

Detection: a COCO file with unsorted, non-contiguous category ids ([7 dog, 3 cat]),
annotation ids starting at 0, an image without boxes, a crowd box, images of varied sizes and
aspect ratios in every format users bring (EXIF-rotated and CMYK JPEGs, grayscale, RGBA and
16-bit PNGs), one of them inside a symlinked sub-folder. Segmentation: binary masks stored as
0/255, images of different sizes, an EXIF-rotated JPEG whose label map is in the decoded
(rotated) frame. Unlabeled folders: varied sizes, a corrupt and an empty file, a valid but
degenerate 600x1 PNG, a symlinked sub-folder.

Objects are drawn as coloured rectangles so a detector has something to find: dogs red,
cats blue.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

DOG, CAT = 7, 3
CATEGORIES = [{"id": DOG, "name": "dog"}, {"id": CAT, "name": "cat"}]  # unsorted, non-contiguous
COLOURS = {DOG: (220, 30, 30), CAT: (30, 30, 220)}
EXIF_ORIENTATION = 0x0112


def _canvas(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(90, 150, (h, w, 3))).astype(np.uint8)


def _draw(img: np.ndarray, box: list[float], colour) -> None:
    x, y, w, h = (int(round(v)) for v in box)
    img[y : y + h, x : x + w] = colour


def save(img: np.ndarray, path: str, kind: str = "png") -> None:
    """Write ``img`` (H x W x 3 uint8, RGB) as one of: png, jpg, gray (8-bit L PNG), rgba,
    gray16 (16-bit PNG), cmyk (CMYK JPEG), exif6 (a JPEG stored rotated by 90 degrees with
    EXIF Orientation=6, so that it decodes as ``img``)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(img)
    if kind == "png":
        im.save(path, format="PNG")
    elif kind == "jpg":
        im.save(path, format="JPEG", quality=95)
    elif kind == "gray":
        im.convert("L").save(path, format="PNG")
    elif kind == "rgba":
        Image.fromarray(np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]), "RGBA").save(path, format="PNG")
    elif kind == "gray16":
        Image.fromarray(np.asarray(im.convert("L"), np.uint16) * 257).save(path, format="PNG")
    elif kind == "cmyk":
        im.convert("CMYK").save(path, format="JPEG", quality=95)
    elif kind == "exif6":
        # Orientation 6: the viewer rotates the stored pixels 90 degrees clockwise. Store the
        # image rotated 90 degrees counter-clockwise so that the decoded image is `img`.
        stored = im.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        stored.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    else:
        raise ValueError(kind)


# (file name, width, height, kind, boxes [(category, [x, y, w, h])], crowd boxes)
LABELED = [
    ("a.png", 96, 64, "png", [(DOG, [10, 10, 30, 20])], []),
    ("b.jpg", 64, 96, "jpg", [(CAT, [20, 40, 24, 30])], []),
    ("c_rot.jpg", 48, 80, "exif6", [(DOG, [8, 8, 20, 30]), (CAT, [10, 50, 20, 20])], []),
    ("d_cmyk.jpg", 80, 80, "cmyk", [(CAT, [40, 40, 30, 30])], [(DOG, [0, 0, 16, 16])]),
    ("e_gray.png", 120, 48, "gray", [(DOG, [60, 10, 40, 30])], []),
    ("f_rgba.png", 72, 72, "rgba", [], []),  # an image without boxes
    ("sub/g16.png", 64, 64, "gray16", [(CAT, [5, 5, 25, 25])], []),  # in a symlinked sub-folder
]
VAL = [
    ("v1.png", 80, 60, "png", [(DOG, [10, 10, 30, 20]), (CAT, [45, 25, 25, 25])], []),
    ("v2.jpg", 60, 80, "jpg", [(CAT, [10, 30, 30, 30])], []),
    ("v3_rot.jpg", 64, 48, "exif6", [(DOG, [20, 10, 30, 20])], []),
]


def write_coco_set(root: str, spec: list, name: str, link_sub: bool = True) -> tuple[str, str]:
    """Images under ``root/<name>/images`` (``sub/`` a symlink to a folder elsewhere) and a
    COCO file with annotation ids from 0, categories [7 dog, 3 cat]. Returns (ann_file, image_root)."""
    image_root = os.path.join(root, name, "images")
    linked = os.path.join(root, name, "elsewhere")
    os.makedirs(image_root, exist_ok=True)
    os.makedirs(linked, exist_ok=True)
    if link_sub and not os.path.exists(os.path.join(image_root, "sub")):
        os.symlink(linked, os.path.join(image_root, "sub"))
    images, anns = [], []
    for i, (file_name, w, h, kind, boxes, crowd) in enumerate(spec):
        img = _canvas(w, h, seed=i)
        for cat, box in boxes + crowd:
            _draw(img, box, COLOURS[cat])
        path = os.path.join(image_root, file_name)
        if file_name.startswith("sub/"):
            path = os.path.join(linked, file_name[4:])
        save(img, path, kind)
        images.append({"id": 100 + 10 * i, "file_name": file_name, "width": w, "height": h})
        for cat, box in boxes:
            anns.append({"id": len(anns), "image_id": 100 + 10 * i, "category_id": cat, "bbox": box, "iscrowd": 0})
        for cat, box in crowd:
            anns.append({"id": len(anns), "image_id": 100 + 10 * i, "category_id": cat, "bbox": box, "iscrowd": 1})
    ann_file = os.path.join(root, name, "annotations.json")
    with open(ann_file, "w") as f:
        json.dump({"images": images[::-1], "annotations": anns, "categories": CATEGORIES}, f)
    return ann_file, image_root


UNLABELED_OK = [
    ("u1.png", 100, 60, "png"),
    ("u2.jpg", 80, 80, "jpg"),
    ("u3_rot.jpg", 40, 72, "exif6"),
    ("u4_cmyk.jpg", 64, 48, "cmyk"),
    ("u5_16.png", 50, 90, "gray16"),
    ("linked/u6.png", 70, 70, "rgba"),
]


def write_unlabeled(root: str) -> tuple[str, dict[str, str]]:
    """An unlabeled folder: images of varied sizes and formats (``linked/`` a symlinked
    sub-folder), plus a corrupt file, an empty file and a 600x1 PNG. Returns (prefix, the
    expected skip reason per bad image id)."""
    prefix = os.path.join(root, "unlabeled")
    elsewhere = os.path.join(root, "unlabeled-elsewhere")
    os.makedirs(prefix, exist_ok=True)
    os.makedirs(elsewhere, exist_ok=True)
    if not os.path.exists(os.path.join(prefix, "linked")):
        os.symlink(elsewhere, os.path.join(prefix, "linked"))
    for i, (name, w, h, kind) in enumerate(UNLABELED_OK):
        img = _canvas(w, h, seed=50 + i)
        _draw(img, [w // 4, h // 4, w // 3, h // 3], COLOURS[DOG if i % 2 else CAT])
        save(
            img,
            os.path.join(prefix, name) if not name.startswith("linked/") else os.path.join(elsewhere, name[7:]),
            kind,
        )
    with open(os.path.join(prefix, "z_corrupt.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is not an image")
    open(os.path.join(prefix, "z_empty.jpg"), "wb").close()
    Image.fromarray(np.full((1, 600, 3), 128, np.uint8)).save(os.path.join(prefix, "z_line.png"))
    return prefix, {"z_corrupt.png": "decode", "z_empty.jpg": "empty", "z_line.png": "degenerate"}


def detection_set(root: str) -> dict:
    """The messy detection set: labeled, val and unlabeled parts. Returns their locations."""
    ann, images = write_coco_set(root, LABELED, "labeled")
    val_ann, val_images = write_coco_set(root, VAL, "val", link_sub=False)
    unlabeled, bad = write_unlabeled(root)
    return {
        "labeled": {"ann_file": ann, "image_root": images},
        "val": {"ann_file": val_ann, "image_root": val_images},
        "unlabeled": unlabeled,
        "bad": bad,
    }


# (stem, width, height, kind): binary masks stored as 0/255 (foreground = a rectangle)
SEG_LABELED = [("s1", 96, 64, "jpg"), ("s2", 64, 96, "jpg"), ("s3_rot", 48, 80, "exif6"), ("s4", 80, 80, "cmyk")]
SEG_VAL = [("t1", 72, 56, "jpg"), ("t2", 56, 72, "jpg")]


def write_seg_set(root: str, spec: list, name: str, foreground: int = 255) -> dict:
    """JPEG images (plain, EXIF-rotated, CMYK) and 0/``foreground`` label maps in the decoded
    frame of their images."""
    img_dir, ann_dir = os.path.join(root, name, "img"), os.path.join(root, name, "ann")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i, (stem, w, h, kind) in enumerate(spec):
        img = _canvas(w, h, seed=200 + i)
        mask = np.zeros((h, w), np.uint8)
        x, y, bw, bh = w // 4, h // 3, w // 2, h // 3
        img[y : y + bh, x : x + bw] = COLOURS[DOG]
        mask[y : y + bh, x : x + bw] = foreground
        save(img, os.path.join(img_dir, f"{stem}.jpg"), kind)
        Image.fromarray(mask, "L").save(os.path.join(ann_dir, f"{stem}.png"))
    return {
        "img_dir": img_dir,
        "ann_dir": ann_dir,
        "classes": ["background", "lesion"],
        "img_suffix": ".jpg",
        "seg_map_suffix": ".png",
    }


def segmentation_set(root: str) -> dict:
    """The messy segmentation set (binary 0/255 masks, mixed sizes, EXIF-rotated image)."""
    unlabeled, bad = write_unlabeled(os.path.join(root, "u"))
    return {
        "labeled": write_seg_set(root, SEG_LABELED, "labeled"),
        "val": write_seg_set(root, SEG_VAL, "val"),
        "unlabeled": unlabeled,
        "bad": bad,
    }
