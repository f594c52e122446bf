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

from selftrain.datasets.composed_seg.build import SegSplit, prepare, read_split
from selftrain.datasets.composed_seg.compose import compose_image, paste_cutout
from selftrain.datasets.composed_seg.sources import (
    BACKGROUND_FILES,
    CLASSES,
    CUTOUT_EXCLUDE,
    CUTOUT_RULES,
    MIN_CUTOUTS_PER_CLASS,
    PALETTE,
    Sources,
    _apt_download,
    default_cache_dir,
    fetch_sources,
    load_sources,
    source_split,
    split_names,
)

__all__ = [
    "_apt_download",
    "BACKGROUND_FILES",
    "CLASSES",
    "CUTOUT_EXCLUDE",
    "CUTOUT_RULES",
    "MIN_CUTOUTS_PER_CLASS",
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
