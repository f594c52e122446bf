"""A real-photo semantic segmentation benchmark, composed at set-up time from photo cut-outs and backgrounds.

No labeled segmentation set ships in the package registries reachable here (docs/design.md §8), but
Debian ships *photo cut-outs with an alpha channel* (Tux Paint's stamps): pasting them on real background
photos gives real-looking images whose masks are exact by construction. Nothing generated is committed:
:func:`fetch_sources` caches the source photos, :func:`prepare` composes the images from them.

Sources (:func:`fetch_sources`)
-------------------------------
Three Debian packages are downloaded with ``apt-get download`` (no installation into the system; works
without root as long as the package lists exist, ``apt-get update`` is run only when the download fails
because they are missing or stale). Only the selected files are unpacked from each ``.deb``
(``dpkg-deb --fsys-tarfile``, streamed through :mod:`tarfile`), into
``$SELFTRAIN_CACHE/sources/<package>/<path in the package>`` (default ``~/.cache/selftrain/sources``); the
``.deb`` is deleted afterwards. ``MANIFEST.json`` (package versions, every file's size and SHA-256, a
digest of the selection rules) is written last; a later call that finds it complete returns at once,
without network. Measured here: 301 MB downloaded once (about 19 s with unpacking), 15 MB of photos kept.

* Foreground classes (:data:`CUTOUT_RULES`), from ``tuxpaint-stamps-default`` (2022.06.04): every ``*.png``
  directly in one stamp folder (sub-folders such as ``cartoon/`` or ``plastic/`` are *not* included),
  minus :data:`CUTOUT_EXCLUDE`. All selected stamps were checked by eye to be photo cut-outs:

  - ``bird``: ``animals/birds`` (34 photos, 86-404 px: crows, ducks, penguins, owls, flamingos, ...);
    ``albino_peahen.png`` is excluded because its cut-out keeps a patch of grass under the bird;
  - ``flower``: ``plants/flowers`` (24 photos, 87-600 px, single blooms of many colours);
  - ``fruit``: ``food/fruit`` (26 photos, 32-500 px: apples, citrus, kiwi, grapes, pineapple, ...).

  These three have enough distinct photos for a train/val split, and they differ in shape and texture
  (feathered animal bodies with legs, radial petals, compact smooth fruit), while flower and fruit share
  colours, which keeps the task from being trivial. Mammals were the other candidate (fewer photos per
  folder, and they resemble birds more). The alpha channel is the mask (``alpha > 127``).
* Backgrounds (:data:`BACKGROUND_FILES`): the real photographs among the wallpapers, chosen by eye, and
  only photos *without flowers, fruit or birds* in them (a background pixel must not show a class):
  7 of ``mate-backgrounds``' ``nature/`` folder (``FreshFlower``, ``Garden``, ``LadyBird``, ``TwoWings``
  and ``YellowFlower`` show flowers; ``abstract/`` and ``desktop/`` are graphics) and 11 of
  ``plasma-workspace-wallpapers`` (the others are drawings or renders, ``Volna`` included). 18 in all,
  1280-2560 px wide.

Train / validation split of the sources (:func:`split_names`)
--------------------------------------------------------------
Each class's cut-outs, and the backgrounds, are ordered by the SHA-256 of their name (their path in the
package, so the rule does not depend on the file contents or on the order of a folder listing); the first
``round(0.3 * n)`` (at least one) are *validation* sources, the others *training* sources (labeled and
unlabeled images). So no validation image shares a cut-out photo or a background photo with any training
image: 24/10 birds, 17/7 flowers, 18/8 fruit, 13/5 backgrounds. ``split.json`` lists both sets.

Composition (:func:`compose_image`, :func:`paste_cutout`)
----------------------------------------------------------
Each image has its own random generator, ``numpy.random.default_rng([seed, split, index])`` (split 0
labeled, 1 unlabeled, 2 val), so an image does not change when the number of images of any split does.

1. Background: one training (or validation) background photo, uniformly; a square crop of side
   ``U(0.35, 1.0) x`` its shorter side at a uniform position, resized to ``size x size`` (Pillow's
   antialiased bilinear), mirrored with probability 1/2.
2. Objects: ``n ~ U{objects_per_image[0], ..., objects_per_image[1]}``. The *primary* class of image ``i`` is
   ``1 + i % C`` (cycling through the classes, so every class appears in every split of at least ``C``
   images); the other ``n - 1`` classes are uniform. Each object is a uniform cut-out of its class from the
   split's pool, cropped to its alpha bounding box, resized (Lanczos on premultiplied alpha) so that its
   longer side is ``U(scale[0], scale[1]) x size`` pixels, and mirrored with probability 1/2. The other
   objects are pasted first, at positions where up to a quarter of their width/height may fall outside the
   image; the primary object is pasted **last** and fully inside, so it is never covered and its class is
   always present in the mask.
3. Pasting: the RGB is alpha-blended, ``(fg * a + bg * (255 - a) + 127) // 255`` (soft cut-out edges);
   the mask takes the object's class wherever ``alpha > 127``, overwriting earlier objects there
   (later layers are on top). Elsewhere it keeps what it had (0 = background).

Output (``out_dir``), mmseg ``BaseSegDataset`` format (``img_suffix='.png'``, ``seg_map_suffix='.png'``)::

    split.json                 parameters, their digest, classes, palette, source lists, counts; written last
    labeled/img/<id>.png      RGB images             labeled/ann/<id>.png   uint8 masks, 0..C
    unlabeled/img/<id>.png     (no labels for training) unlabeled/ann/<id>.png  true masks, diagnostics only
    val/img/<id>.png                                   val/ann/<id>.png

Ids are ``labeled_00000``, ``unlabeled_00000``, ``val_00000``, ... PNGs are written with fixed parameters
(``compress_level=6``, no metadata), so the same arguments and sources give byte-identical files with the
same Pillow/zlib; ``split.json`` also holds the SHA-256 over all written files (``content_sha256``).

:func:`prepare` is idempotent and atomic like :mod:`selftrain.datasets.deepforest`: when ``split.json`` in
``out_dir`` carries the same parameter digest (which covers the sources' SHA-256) it returns at once;
otherwise it builds in a temporary sibling folder and renames it into place. A non-empty folder without
``split.json`` is never replaced.

Defaults, sized for a CPU demo: 128 x 128 images, 16 labeled, 160 unlabeled, 48 validation images,
1-3 objects per image, 25-70 % of the image side (about 2 s to compose on 2 cores).

Command line::

    python -m selftrain.datasets.composed_seg fetch [--cache DIR]
    python -m selftrain.datasets.composed_seg prepare --out DIR [--size 128] [--seed 0] [--num-labeled 16]
        [--num-unlabeled 160] [--num-val 48] [--objects-min 1] [--objects-max 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from selftrain.datasets.common import start_build, swap_into_place

__all__ = [
    "BACKGROUND_FILES",
    "CLASSES",
    "CUTOUT_EXCLUDE",
    "CUTOUT_RULES",
    "PALETTE",
    "SegSplit",
    "Sources",
    "compose_image",
    "default_cache_dir",
    "fetch_sources",
    "load_sources",
    "paste_cutout",
    "prepare",
    "read_split",
    "source_split",
    "split_names",
]

# ----------------------------------------------------------------------------------------------------------
# Selection rules (changing any of them changes SELECTION_DIGEST, so fetch_sources() fetches again)
# ----------------------------------------------------------------------------------------------------------

STAMPS_PACKAGE = "tuxpaint-stamps-default"
_STAMPS = "usr/share/tuxpaint/stamps/"

#: class name -> (package, folder in the package): every ``*.png`` directly in that folder.
CUTOUT_RULES: dict[str, tuple[str, str]] = {
    "bird": (STAMPS_PACKAGE, _STAMPS + "animals/birds"),
    "flower": (STAMPS_PACKAGE, _STAMPS + "plants/flowers"),
    "fruit": (STAMPS_PACKAGE, _STAMPS + "food/fruit"),
}
#: file names left out of a class folder, with the reason.
CUTOUT_EXCLUDE: dict[str, dict[str, str]] = {
    "bird": {"albino_peahen.png": "the cut-out keeps a patch of grass under the bird"},
    "flower": {},
    "fruit": {},
}
#: (package, path) of the background photographs (real photos without birds, flowers or fruit).
BACKGROUND_FILES: tuple[tuple[str, str], ...] = tuple(
    [
        ("mate-backgrounds", f"usr/share/backgrounds/mate/nature/{name}.jpg")
        for name in ("Aqua", "Blinds", "Dune", "GreenMeadow", "RainDrops", "Storm", "Wood")
    ]
    + [
        ("plasma-workspace-wallpapers", f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg")
        for name in (
            "BytheWater",
            "ColdRipple",
            "ColorfulCups",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
            "summer_1am",
        )
    ]
)
PACKAGES: tuple[str, ...] = (STAMPS_PACKAGE, "mate-backgrounds", "plasma-workspace-wallpapers")

CLASSES: tuple[str, ...] = ("background", *CUTOUT_RULES)
PALETTE: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (0, 114, 255), (255, 0, 160), (255, 170, 0))
VAL_FRACTION = 0.3
MIN_CUTOUTS_PER_CLASS = 8  # so that train and val each get a few distinct photos of every class
BG_CROP = (0.35, 1.0)  # square background crop, fraction of the photo's shorter side
MAX_OUTSIDE = 0.25  # a non-primary object may stick out of the image by this fraction of its size
FORMAT_VERSION = 1  # bump when the output layout or any composition rule changes
MANIFEST = "MANIFEST.json"
SPLIT_JSON = "split.json"
SPLITS = ("labeled", "unlabeled", "val")
_PNG = {"compress_level": 6}  # fixed save parameters (no optimize, no metadata): reproducible bytes

SELECTION_DIGEST = hashlib.sha256(
    json.dumps(
        {"cutouts": CUTOUT_RULES, "exclude": CUTOUT_EXCLUDE, "backgrounds": BACKGROUND_FILES, "packages": PACKAGES},
        sort_keys=True,
    ).encode()
).hexdigest()[:16]


def default_cache_dir() -> str:
    """``$SELFTRAIN_CACHE/sources``, else ``${XDG_CACHE_HOME:-~/.cache}/selftrain/sources``."""
    from storage.settings import settings

    return os.path.join(settings().cache, "sources")


# ----------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """The cached source photos. Names (``<package>/<path in the package>``) are relative to ``root``."""

    root: str
    packages: Mapping[str, str]  # package -> Debian version it was taken from
    cutouts: Mapping[str, tuple[str, ...]]  # class -> sorted cut-out names
    backgrounds: tuple[str, ...]  # sorted background names
    sha256: Mapping[str, str] = field(repr=False)  # name -> SHA-256 of the file

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)


def _select(package: str, path: str) -> str | None:
    """The class a package member is a cut-out of, ``""`` for a background, None when not selected."""
    for cls, (pkg, folder) in CUTOUT_RULES.items():
        if pkg == package and os.path.dirname(path) == folder and path.endswith(".png"):
            return None if os.path.basename(path) in CUTOUT_EXCLUDE[cls] else cls
    if (package, path) in BACKGROUND_FILES:
        return ""
    return None


def _sources_from_manifest(root: str, manifest: dict) -> Sources:
    cutouts: dict[str, list[str]] = {cls: [] for cls in CUTOUT_RULES}
    backgrounds = []
    for name, kind in manifest["files"].items():
        if kind["class"]:
            cutouts[kind["class"]].append(name)
        else:
            backgrounds.append(name)
    return Sources(
        root=root,
        packages=dict(manifest["packages"]),
        cutouts={cls: tuple(sorted(v)) for cls, v in cutouts.items()},
        backgrounds=tuple(sorted(backgrounds)),
        sha256={name: f["sha256"] for name, f in manifest["files"].items()},
    )


def _read_manifest(root: str) -> dict | None:
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("selection_digest") != SELECTION_DIGEST:
        return None
    for name, f in manifest.get("files", {}).items():
        try:
            if os.path.getsize(os.path.join(root, name)) != f["size"]:
                return None
        except OSError:
            return None
    return manifest


def load_sources(cache_dir: str | None = None) -> Sources:
    """The sources cached by :func:`fetch_sources` (no network); FileNotFoundError when absent or incomplete."""
    root = os.path.abspath(cache_dir or default_cache_dir())
    manifest = _read_manifest(root)
    if manifest is None:
        raise FileNotFoundError(
            f"the segmentation source photos are not in {root} (no complete {MANIFEST} for this selection); "
            "run `python -m selftrain.datasets.composed_seg fetch` (deploy/setup.sh does)"
        )
    return _sources_from_manifest(root, manifest)


_MISSING_LISTS = (
    "Unable to locate package",
    "Can't select candidate",
    "has no installation candidate",
    "No packages found",
    "404",
    "Failed to fetch",
)


def _apt_download(package: str, workdir: str) -> str:
    """``apt-get download <package>`` into ``workdir``; ``apt-get update`` once if the lists are missing."""

    def run(cmd: list[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
        except FileNotFoundError as e:
            raise RuntimeError(f"cannot download Debian package {package!r}: {cmd[0]} is not available ({e})") from e

    result = run(["apt-get", "download", package])
    if result.returncode != 0 and any(s in result.stderr for s in _MISSING_LISTS):
        update = run(["apt-get", "update"])
        if update.returncode != 0:
            raise RuntimeError(
                f"cannot download Debian package {package!r}: `apt-get download` failed "
                f"({result.stderr.strip()[-300:]}) and `apt-get update` failed too "
                f"({update.stderr.strip()[-300:]}); run `apt-get update` as root"
            )
        result = run(["apt-get", "download", package])
    debs = [f for f in os.listdir(workdir) if f.startswith(package + "_") and f.endswith(".deb")]
    if result.returncode != 0 or len(debs) != 1:
        raise RuntimeError(
            f"cannot download Debian package {package!r}: `apt-get download {package}` exited with "
            f"{result.returncode}: {result.stderr.strip()[-500:]}"
        )
    return os.path.join(workdir, debs[0])


def _deb_version(deb: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True, text=True, check=True).stdout.strip()


def _extract_selected(package: str, deb: str, dest: str) -> dict[str, dict]:
    """Unpack the selected regular files of ``deb`` under ``dest/<package>/``; their manifest entries."""
    files = {}
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                path = os.path.normpath(member.name).removeprefix("./")
                kind = _select(package, path)
                if kind is None or not member.isfile():
                    continue
                data = tar.extractfile(member).read()
                name = f"{package}/{path}"
                out = os.path.join(dest, name)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with open(out, "wb") as f:
                    f.write(data)
                files[name] = {"class": kind, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed (package {package!r})")
    return files


def fetch_sources(cache_dir: str | None = None) -> Sources:
    """Download (once) and cache the selected photos; see the module docstring. Idempotent and fast when cached."""
    root = os.path.abspath(cache_dir or default_cache_dir())
    manifest = _read_manifest(root)
    if manifest is not None:
        return _sources_from_manifest(root, manifest)
    os.makedirs(root, exist_ok=True)
    build = tempfile.mkdtemp(prefix=".fetch-", dir=root)
    try:
        files, versions = {}, {}
        for package in PACKAGES:
            workdir = tempfile.mkdtemp(prefix="deb-", dir=build)
            deb = _apt_download(package, workdir)
            versions[package] = _deb_version(deb)
            files.update(_extract_selected(package, deb, os.path.join(build, "files")))
            shutil.rmtree(workdir)  # the .deb itself is not kept
        missing = [f"{p}/{path}" for p, path in BACKGROUND_FILES if f"{p}/{path}" not in files]
        if missing:
            raise FileNotFoundError(f"background photos missing from the Debian packages {versions}: {missing}")
        for cls, (package, folder) in CUTOUT_RULES.items():
            n = sum(1 for f in files.values() if f["class"] == cls)
            if n < MIN_CUTOUTS_PER_CLASS:
                raise FileNotFoundError(
                    f"only {n} cut-outs of class {cls!r} in {package} {versions[package]}:{folder} "
                    f"(need {MIN_CUTOUTS_PER_CLASS})"
                )
        for package in PACKAGES:  # move each package folder into place, replacing an older one
            target = os.path.join(root, package)
            if os.path.lexists(target):
                shutil.rmtree(target)
            os.rename(os.path.join(build, "files", package), target)
        manifest = {"selection_digest": SELECTION_DIGEST, "packages": versions, "files": dict(sorted(files.items()))}
        tmp = os.path.join(build, MANIFEST)
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, os.path.join(root, MANIFEST))  # written last: the cache is complete
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return _sources_from_manifest(root, manifest)


def split_names(names: Sequence[str], val_fraction: float = VAL_FRACTION) -> tuple[list[str], list[str]]:
    """``(train, val)``, both sorted: the first ``max(1, round(val_fraction * n))`` names by SHA-256 are val."""
    names = sorted(set(names))
    if len(names) < 2:
        raise ValueError(f"need at least 2 names to split into train and val, got {names}")
    k = min(len(names) - 1, max(1, round(val_fraction * len(names))))
    ranked = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    return sorted(ranked[k:]), sorted(ranked[:k])


def source_split(sources: Sources) -> dict[str, dict]:
    """``{"train": {"cutouts": {cls: [names]}, "backgrounds": [names]}, "val": {...}}`` (disjoint)."""
    out: dict[str, dict] = {"train": {"cutouts": {}}, "val": {"cutouts": {}}}
    for cls in CLASSES[1:]:
        out["train"]["cutouts"][cls], out["val"]["cutouts"][cls] = split_names(sources.cutouts[cls])
    out["train"]["backgrounds"], out["val"]["backgrounds"] = split_names(sources.backgrounds)
    return out


# ----------------------------------------------------------------------------------------------------------
# Composition
# ----------------------------------------------------------------------------------------------------------


def paste_cutout(
    image: np.ndarray, mask: np.ndarray, cutout: np.ndarray, class_id: int, x: int, y: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paste an RGBA cut-out with its top-left corner at ``(x, y)`` (may lie partly outside); new arrays.

    ``image`` (H, W, 3) uint8, ``mask`` (H, W) uint8, ``cutout`` (h, w, 4) uint8. RGB:
    ``(fg * a + bg * (255 - a) + 127) // 255``; mask: ``class_id`` where ``a > 127``, unchanged elsewhere.
    """
    image, mask, cutout = np.asarray(image), np.asarray(mask), np.asarray(cutout)
    if image.ndim != 3 or image.shape[2] != 3 or mask.shape != image.shape[:2]:
        raise ValueError(f"image must be (H, W, 3) and mask (H, W), got {image.shape} and {mask.shape}")
    if cutout.ndim != 3 or cutout.shape[2] != 4:
        raise ValueError(f"cutout must be (h, w, 4) RGBA, got {cutout.shape}")
    image, mask = image.copy(), mask.copy()
    height, width = mask.shape
    h, w = cutout.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x0 >= x1 or y0 >= y1:
        return image, mask
    part = cutout[y0 - y : y1 - y, x0 - x : x1 - x]
    alpha = part[..., 3:4].astype(np.uint32)
    bg = image[y0:y1, x0:x1].astype(np.uint32)
    image[y0:y1, x0:x1] = (part[..., :3].astype(np.uint32) * alpha + bg * (255 - alpha) + 127) // 255
    region = mask[y0:y1, x0:x1]
    region[part[..., 3] > 127] = class_id
    return image, mask


def _load_cutout(path: str) -> np.ndarray:
    """RGBA array of a cut-out cropped to the bounding box of its non-transparent pixels."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"))
    ys, xs = np.nonzero(rgba[..., 3])
    if len(ys) == 0:
        raise ValueError(f"{path} is fully transparent")
    return rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _load_background(path: str, size: int) -> np.ndarray:
    """RGB array of a background photo, reduced (JPEG draft, then Lanczos) to a shorter side of ``4 * size``."""
    from PIL import Image

    target = 4 * size
    with Image.open(path) as im:
        if im.format == "JPEG":
            scale = target / min(im.size)
            im.draft("RGB", (int(im.size[0] * scale) + 1, int(im.size[1] * scale) + 1))
        im = im.convert("RGB")
        if min(im.size) > target:
            scale = target / min(im.size)
            im = im.resize(
                (max(target, round(im.size[0] * scale)), max(target, round(im.size[1] * scale))),
                Image.Resampling.LANCZOS,
            )
        return np.asarray(im)


def _resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    # Pillow resizes RGBA on premultiplied alpha, so transparent pixels' colours do not bleed in.
    return np.asarray(Image.fromarray(rgba, "RGBA").resize((width, height), Image.Resampling.LANCZOS))


def compose_image(
    rng: np.random.Generator,
    background: np.ndarray,
    cutouts: Mapping[int, Sequence[np.ndarray]],
    primary: int,
    *,
    size: int,
    num_objects: int,
    scale: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image (size, size, 3), mask (size, size))``; ``cutouts`` maps class id -> RGBA cut-outs.

    The rules are in the module docstring (step 1-3): the ``num_objects - 1`` other objects are pasted
    first, the ``primary`` class last and fully inside the image.
    """
    from PIL import Image

    bh, bw = background.shape[:2]
    side = max(1, int(round(rng.uniform(*BG_CROP) * min(bh, bw))))
    top, left = int(rng.integers(0, bh - side + 1)), int(rng.integers(0, bw - side + 1))
    crop = Image.fromarray(np.ascontiguousarray(background[top : top + side, left : left + side]))
    image = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = np.ascontiguousarray(image)
    mask = np.zeros((size, size), dtype=np.uint8)
    class_ids = sorted(cutouts)
    classes = [int(rng.choice(class_ids)) for _ in range(num_objects - 1)] + [primary]
    for k, cls in enumerate(classes):
        pool = cutouts[cls]
        rgba = pool[int(rng.integers(len(pool)))]
        longer = max(4, int(round(rng.uniform(*scale) * size)))
        f = longer / max(rgba.shape[:2])
        w, h = max(1, int(round(rgba.shape[1] * f))), max(1, int(round(rgba.shape[0] * f)))
        obj = _resize_rgba(rgba, w, h)
        if rng.random() < 0.5:
            obj = obj[:, ::-1]
        if k == len(classes) - 1:  # primary: fully inside, on top
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        else:
            ox, oy = int(MAX_OUTSIDE * w), int(MAX_OUTSIDE * h)
            x, y = int(rng.integers(-ox, size - w + ox + 1)), int(rng.integers(-oy, size - h + oy + 1))
        image, mask = paste_cutout(image, mask, obj, cls, x, y)
    return image, mask


# ----------------------------------------------------------------------------------------------------------
# Preparing a split
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegSplit:
    """Paths of one prepared benchmark (all absolute) and its label set; mmseg ``BaseSegDataset`` layout."""

    root: str
    classes: tuple[str, ...]  # index 0 = "background"
    palette: tuple[tuple[int, int, int], ...]
    labeled_img_dir: str
    labeled_ann_dir: str
    unlabeled_img_dir: str
    unlabeled_ann_dir: str  # true masks of the unlabeled images: diagnostics only, never for training
    val_img_dir: str
    val_ann_dir: str
    img_suffix: str = ".png"
    seg_map_suffix: str = ".png"

    @classmethod
    def at(cls, root: str) -> SegSplit:
        root = os.path.abspath(root)
        dirs = {f"{s}_{k}_dir": os.path.join(root, s, k) for s in SPLITS for k in ("img", "ann")}
        return cls(root=root, classes=CLASSES, palette=PALETTE, **dirs)


def read_split(root: str) -> dict | None:
    """The ``split.json`` of a prepared folder, or None when there is none (or it is unreadable)."""
    try:
        with open(os.path.join(root, SPLIT_JSON)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_int(value, low: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low


def _check_params(size, seed, num_labeled, num_unlabeled, num_val, objects_per_image, scale) -> None:
    n_classes = len(CLASSES) - 1
    if not _is_int(size, 16):
        raise ValueError(f"size must be an integer >= 16 (pixels), got {size!r}")
    if not _is_int(seed, 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    for name, value in (("num_labeled", num_labeled), ("num_val", num_val)):
        if not _is_int(value, n_classes):
            raise ValueError(
                f"{name} must be an integer >= the number of classes ({n_classes}: {', '.join(CLASSES[1:])}) "
                f"so that every class appears, got {value!r}"
            )
    if not _is_int(num_unlabeled, 0):
        raise ValueError(f"num_unlabeled must be an integer >= 0, got {num_unlabeled!r}")
    try:
        lo, hi = objects_per_image
    except (TypeError, ValueError):
        raise ValueError(f"objects_per_image must be a pair (min, max), got {objects_per_image!r}") from None
    if not (_is_int(lo, 1) and _is_int(hi, 1) and lo <= hi <= 16):
        raise ValueError(f"objects_per_image must be integers 1 <= min <= max <= 16, got {objects_per_image!r}")
    try:
        s0, s1 = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a pair (min, max), got {scale!r}") from None
    if not 0.0 < s0 <= s1 <= 1.0:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1 (fraction of the image side), got {scale!r}")


def prepare(
    out_dir: str,
    *,
    size: int = 128,
    seed: int = 0,
    num_labeled: int = 16,
    num_unlabeled: int = 160,
    num_val: int = 48,
    objects_per_image: tuple[int, int] = (1, 3),
    scale: tuple[float, float] = (0.25, 0.70),
    cache_dir: str | None = None,
) -> SegSplit:
    """Compose (or find already composed) the benchmark in ``out_dir``; see the module docstring.

    Reads the sources cached by :func:`fetch_sources` (``cache_dir``, default :func:`default_cache_dir`)
    and never downloads: FileNotFoundError when they are missing.
    """
    _check_params(size, seed, num_labeled, num_unlabeled, num_val, objects_per_image, scale)
    sources = load_sources(cache_dir)
    out_dir = os.path.abspath(os.fspath(out_dir))
    split = SegSplit.at(out_dir)
    chosen = source_split(sources)
    params = {
        "format_version": FORMAT_VERSION,
        "size": int(size),
        "seed": int(seed),
        "num_labeled": int(num_labeled),
        "num_unlabeled": int(num_unlabeled),
        "num_val": int(num_val),
        "objects_per_image": [int(v) for v in objects_per_image],
        "scale": [float(v) for v in scale],
        "classes": list(CLASSES),
        "sources": {
            name: sources.sha256[name]
            for part in chosen.values()
            for name in [*part["backgrounds"], *(n for v in part["cutouts"].values() for n in v)]
        },
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    build = start_build(out_dir, digest, read_split)
    if build is None:
        return split
    try:
        counts, content = _build(build, sources, chosen, params)
        info = {
            "digest": digest,
            "content_sha256": content,
            "params": {k: v for k, v in params.items() if k != "sources"},
            "classes": list(CLASSES),
            "palette": [list(c) for c in PALETTE],
            "img_suffix": split.img_suffix,
            "seg_map_suffix": split.seg_map_suffix,
            "packages": dict(sources.packages),
            "sources": chosen,
            "counts": counts,
        }
        with open(os.path.join(build, SPLIT_JSON), "w") as f:  # written last
            json.dump(info, f, indent=1, sort_keys=True)
            f.write("\n")
        swap_into_place(build, out_dir, digest, read_split)
    finally:
        if os.path.exists(build):
            shutil.rmtree(build, ignore_errors=True)
    return split


def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG", **_PNG)
    return buf.getvalue()


def _build(build: str, sources: Sources, chosen: dict, params: dict) -> tuple[dict, str]:
    size = params["size"]
    lo, hi = params["objects_per_image"]
    scale = tuple(params["scale"])
    content = hashlib.sha256()
    counts = {}
    bg_cache: dict[str, np.ndarray] = {}  # loaded when first drawn
    pools: dict[str, dict[int, list[np.ndarray]]] = {}  # "train"/"val" -> class id -> cut-outs
    for split_index, (split_name, number) in enumerate(
        zip(SPLITS, (params["num_labeled"], params["num_unlabeled"], params["num_val"]))
    ):
        which = "val" if split_name == "val" else "train"
        part = chosen[which]
        if which not in pools:
            pools[which] = {
                i: [_load_cutout(sources.path(n)) for n in part["cutouts"][cls]]
                for i, cls in enumerate(CLASSES)
                if i > 0
            }
        cutouts = pools[which]
        img_dir, ann_dir = os.path.join(build, split_name, "img"), os.path.join(build, split_name, "ann")
        os.makedirs(img_dir)
        os.makedirs(ann_dir)
        pixels = np.zeros(len(CLASSES), dtype=np.int64)
        images_with = np.zeros(len(CLASSES), dtype=np.int64)
        for i in range(number):
            rng = np.random.default_rng([params["seed"], split_index, i])
            bg_name = part["backgrounds"][int(rng.integers(len(part["backgrounds"])))]
            if bg_name not in bg_cache:
                bg_cache[bg_name] = _load_background(sources.path(bg_name), size)
            image, mask = compose_image(
                rng,
                bg_cache[bg_name],
                cutouts,
                1 + i % (len(CLASSES) - 1),
                size=size,
                num_objects=int(rng.integers(lo, hi + 1)),
                scale=scale,
            )
            hist = np.bincount(mask.ravel(), minlength=len(CLASSES))
            pixels += hist
            images_with += hist > 0
            stem = f"{split_name}_{i:05d}"
            for folder, data in ((img_dir, _png_bytes(image, "RGB")), (ann_dir, _png_bytes(mask, "L"))):
                with open(os.path.join(folder, stem + ".png"), "wb") as f:
                    f.write(data)
                content.update(
                    f"{os.path.basename(os.path.dirname(folder))}/{os.path.basename(folder)}/{stem}".encode()
                    + hashlib.sha256(data).digest()
                )
        counts[split_name] = {
            "images": number,
            "pixels": {c: int(p) for c, p in zip(CLASSES, pixels)},
            "images_with": {c: int(n) for c, n in zip(CLASSES, images_with)},
        }
    return counts, content.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selftrain.datasets.composed_seg",
        description="Real-photo segmentation benchmark composed from Debian photo cut-outs and wallpapers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download and cache the source photos (idempotent)")
    fetch.add_argument("--cache", default=None, help=f"cache folder (default: {default_cache_dir()})")
    prep = sub.add_parser("prepare", help="compose the benchmark (fetches the sources first if needed)")
    prep.add_argument("--out", required=True, help="output folder")
    prep.add_argument("--size", type=int, default=128)
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--num-labeled", "--num-labelled", dest="num_labeled", type=int, default=16)
    prep.add_argument("--num-unlabeled", type=int, default=160)
    prep.add_argument("--num-val", type=int, default=48)
    prep.add_argument("--objects-min", type=int, default=1)
    prep.add_argument("--objects-max", type=int, default=3)
    prep.add_argument("--cache", default=None, help=f"source cache folder (default: {default_cache_dir()})")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    sources = fetch_sources(args.cache)
    if args.command == "fetch":
        print(
            f"{sources.root}: sources ready in {time.perf_counter() - t0:.2f} s "
            f"({', '.join(f'{p} {v}' for p, v in sources.packages.items())})"
        )
        for cls, names in sources.cutouts.items():
            print(f"  {cls:<10} {len(names):>3} cut-outs")
        print(f"  {'background':<10} {len(sources.backgrounds):>3} photos")
        return 0
    t0 = time.perf_counter()
    split = prepare(
        args.out,
        size=args.size,
        seed=args.seed,
        num_labeled=args.num_labeled,
        num_unlabeled=args.num_unlabeled,
        num_val=args.num_val,
        objects_per_image=(args.objects_min, args.objects_max),
        cache_dir=args.cache,
    )
    counts = (read_split(split.root) or {}).get("counts", {})
    print(f"{split.root}: ready in {time.perf_counter() - t0:.2f} s; classes {', '.join(split.classes)}")
    for name in SPLITS:
        n = counts.get(name, {}).get("images", "?")
        print(
            f"  {name:<10} {n:>4} images  img {getattr(split, f'{name}_img_dir')}  "
            f"ann {getattr(split, f'{name}_ann_dir')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
