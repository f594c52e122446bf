"""Data transforms the pipeline needs beyond mmcv/mmdet/mmseg's own.

Registered in mmcv's root TRANSFORMS registry, so configs in the mmdet and the mmseg scope
both find them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmcv.transforms.utils import cache_randomness
from mmengine import fileio
from mmengine.registry import TRANSFORMS

from selftrain.mm import fileio as _object_storage  # noqa: F401 - s3:// for mmengine, also in spawned workers
from storage.store import StorageAccessDenied, StorageUnavailable, classify_error

log = logging.getLogger(__name__)
T = TypeVar("T")

PLACEHOLDER_SIZE = 32
READ_ATTEMPTS = 3
READ_BACKOFF_S = 0.5  # before the 2nd attempt; doubled before each later one

# Reasons for skipping an image start with one of these. The first four are the image's own
# defects; READ_FAILED is any other error while reading, not known to be the image's fault.
MISSING = "file not found"
EMPTY = "empty file"
UNDECODABLE = "cannot decode the image"
REJECTED = "the pipeline rejected the image"
IMAGE_DEFECTS = (MISSING, EMPTY, UNDECODABLE, REJECTED)
READ_FAILED = "cannot read the image"
MAX_REASON = 300


class InfrastructureError(RuntimeError):
    """Reading or processing an image failed for a reason that is not the image's own (the
    storage is unreachable, access is denied, a filesystem was used across a fork, memory ran
    out), on every one of READ_ATTEMPTS attempts. The message names the image URI and the last
    error. Never recorded as a skipped image: it fails the batch, and with it the shard."""


def describe(exc: BaseException) -> str:
    """'TypeName: message' of an exception, on one line ('TypeName' when it has no message)."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def infrastructure_kind(exc: BaseException) -> str | None:
    """What kind of infrastructure failure ``exc`` is: 'storage unavailable', 'access denied',
    'not fork-safe' or 'out of memory'; None when it may be the image's own problem (a missing
    file always is). Explicit causes (``raise ... from``) and the wrapped error of urllib's
    URLError (``reason``; mmengine's http backend) are followed."""
    depth = 0
    current: BaseException | None = exc
    while current is not None and depth < 8:
        exc = current
        if isinstance(exc, FileNotFoundError):
            return None
        if isinstance(exc, MemoryError):
            return "out of memory"
        if "not fork-safe" in str(exc):
            return "not fork-safe"
        kind = classify_error(exc)
        if kind is StorageAccessDenied or isinstance(exc, StorageAccessDenied):
            return "access denied"
        if kind is StorageUnavailable or isinstance(exc, StorageUnavailable):
            return "storage unavailable"
        reason = getattr(exc, "reason", None)
        current, depth = exc.__cause__ or (reason if isinstance(reason, BaseException) else None), depth + 1
    return None


def with_retries(fn: Callable[[], T], uri: str, attempts: int = READ_ATTEMPTS, backoff_s: float = READ_BACKOFF_S) -> T:
    """``fn()``, tried again after backoff_s, 2 * backoff_s, ... while it fails with an
    infrastructure error (``infrastructure_kind``).

    Raises InfrastructureError (naming ``uri``, the kind and the last error) when all
    ``attempts`` failed that way; any other exception, and an InfrastructureError from
    within, propagates at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except InfrastructureError:
            raise
        except Exception as exc:  # noqa: BLE001 - only infrastructure errors are retried
            kind = infrastructure_kind(exc)
            if kind is None:
                raise
            if attempt == attempts:
                raise InfrastructureError(
                    f"{kind} while reading image {uri} (failed {attempts} times; "
                    f"this is not a defect of the image): {describe(exc)}"
                ) from exc
            log.warning(
                "reading image %s failed (%s, attempt %d of %d), retrying: %s",
                uri,
                kind,
                attempt,
                attempts,
                describe(exc),
            )
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def is_image_defect(reason: str) -> bool:
    """Whether a skip reason is a defect of the image itself (missing, empty, undecodable,
    rejected by the pipeline) rather than an unexplained read error."""
    return reason.startswith(IMAGE_DEFECTS)


def mark_unreadable(results: dict, reason: str) -> dict:
    """``results`` with the black PLACEHOLDER_SIZE x PLACEHOLDER_SIZE x 3 uint8 placeholder as
    the image and ``load_error`` = reason (cut to MAX_REASON characters)."""
    img = np.zeros((PLACEHOLDER_SIZE, PLACEHOLDER_SIZE, 3), dtype=np.uint8)
    results.update(
        img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], load_error=(reason or "unknown")[:MAX_REASON]
    )
    return results


@TRANSFORMS.register_module()
class LoadImageOrMarkUnreadable(LoadImageFromFile):
    """mmcv's LoadImageFromFile, except that an image's own defect does not stop the batch.

    Pseudo labeling must never lose a shard to one corrupt, empty or missing file
    (docs/design.md §6.1): the image is replaced by a small black placeholder and
    ``results['load_error']`` names the reason (starting with MISSING, EMPTY, UNDECODABLE or,
    for any other read error, READ_FAILED), so the caller records it as skipped and discards
    whatever the model predicted for the placeholder. ``load_error`` is '' for a good image.
    16-bit, grayscale and RGBA images are read as 8-bit 3-channel by mmcv's decoder ('color'
    flag) and are not errors.

    Infrastructure failures (storage unreachable, access denied, out of memory, a filesystem
    used across a fork) are not the image's fault: the read is retried (``with_retries``) and
    then InfrastructureError is raised, naming the image.
    """

    def _read(self, uri: str) -> bytes:
        if self.file_client_args is not None:
            return fileio.FileClient.infer_client(self.file_client_args, uri).get(uri)
        return fileio.get(uri, backend_args=self.backend_args)

    def transform(self, results: dict) -> dict:
        uri = str(results["img_path"])
        try:
            data = with_retries(lambda: self._read(uri), uri)
        except InfrastructureError:
            raise
        except FileNotFoundError as exc:
            return mark_unreadable(results, f"{MISSING}: {describe(exc)}")
        except Exception as exc:  # noqa: BLE001 - reported as the reason, not raised
            return mark_unreadable(results, f"{READ_FAILED}: {describe(exc)}")
        if not data:
            return mark_unreadable(results, f"{EMPTY} (0 bytes)")
        detail = ""
        try:
            img = mmcv.imfrombytes(data, flag=self.color_type, backend=self.imdecode_backend)
        except Exception as exc:  # noqa: BLE001 - an undecodable image is reported, not raised
            if infrastructure_kind(exc):
                raise
            img, detail = None, f": {describe(exc)}"
        if img is None:
            return mark_unreadable(results, f"{UNDECODABLE} ({len(data)} bytes){detail}")
        if self.to_float32:
            img = img.astype(np.float32)
        results.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], load_error="")
        return results


def shift_hue(img: np.ndarray, factor: float) -> np.ndarray:
    """Rotate the hue of a BGR uint8 image by ``factor`` of the colour circle (torchvision's
    adjust_hue). mmcv.adjust_hue overflows on negative factors with numpy 2."""
    hsv = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.uint8), cv2.COLOR_BGR2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(round(factor * 180))) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


@TRANSFORMS.register_module()
class ColorJitter(BaseTransform):
    """Colour jitter with torchvision's semantics, as ST++'s strong augmentation uses it
    (``ColorJitter(0.5, 0.5, 0.5, 0.25)`` applied with p=0.8, docs/design.md §3.4).

    Brightness, contrast and saturation factors are drawn from [1 - x, 1 + x], the hue shift
    from [-hue, hue] (fraction of the colour circle); the four are applied in a random order
    with mmcv's image operations; a hue of 0 leaves the hue alone (as torchvision does). Image
    only: labels, boxes and masks are untouched. The probability is ``prob`` (wrap nothing
    around it).
    """

    def __init__(
        self,
        brightness: float = 0.5,
        contrast: float = 0.5,
        saturation: float = 0.5,
        hue: float = 0.25,
        prob: float = 0.8,
    ):
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue, self.prob = (
            brightness,
            contrast,
            saturation,
            hue,
            prob,
        )

    @cache_randomness
    def _params(self):
        if np.random.rand() >= self.prob:
            return None
        factors = [np.random.uniform(max(0.0, 1 - v), 1 + v) for v in (self.brightness, self.contrast, self.saturation)]
        return np.random.permutation(4), factors, np.random.uniform(-self.hue, self.hue)

    def transform(self, results: dict) -> dict:
        params = self._params()
        if params is None:
            return results
        order, (b, c, s), h = params
        img = results["img"]
        for op in order:
            if op == 0:
                img = mmcv.adjust_brightness(img, b)
            elif op == 1:
                img = mmcv.adjust_contrast(img, c)
            elif op == 2:
                img = mmcv.adjust_color(img, s)
            elif h:  # hue 0 (strong_no_hue.py): no shift, and no lossy HSV round trip
                img = shift_hue(img, h)
        results["img"] = np.clip(img, 0, 255).astype(np.uint8)
        return results


@TRANSFORMS.register_module()
class GaussianBlur(BaseTransform):
    """Gaussian blur with sigma drawn from ``sigma_range`` with probability ``prob``
    (ST++: sigma in [0.1, 2.0], p=0.5). Image only."""

    def __init__(self, sigma_range: tuple[float, float] = (0.1, 2.0), prob: float = 0.5):
        self.sigma_range: tuple[float, float] = (float(sigma_range[0]), float(sigma_range[1]))
        self.prob = prob

    @cache_randomness
    def _sigma(self):
        return np.random.uniform(*self.sigma_range) if np.random.rand() < self.prob else None

    def transform(self, results: dict) -> dict:
        sigma = self._sigma()
        if sigma is not None:
            results["img"] = cv2.GaussianBlur(results["img"], (0, 0), sigmaX=sigma, sigmaY=sigma)
        return results


@TRANSFORMS.register_module()
class RandomFillCutOut(BaseTransform):
    """One rectangular hole filled with uniform random values, as ST++'s strong augmentation
    cuts (reference code dataset/transform.py ``cutout``; Yang et al. 2022, §3.1).

    With probability ``prob``: the hole's area is a fraction of the image drawn from
    U(``area_range``) (0.02 .. 0.4 of H x W), its aspect h/w from U(``ratio_range``)
    (0.3 .. 1/0.3), width ``int(sqrt(area / ratio))`` and height ``int(sqrt(area * ratio))``,
    its top-left corner uniform over the image, drawn again until the hole lies inside the
    image (the reference's rule: mean hole area about 0.14 of the image on square crops). Its
    pixels get independent uniform values in [0, 255) per channel (``pixel_level``; else one
    value), and a segmentation map's pixels there get ``seg_fill`` (255: ignored in the loss,
    as the reference does). Boxes are untouched (the reference is segmentation only; for
    detection the hole is an occlusion). Modifies ``img`` (H, W, C uint8) and ``gt_seg_map``.
    """

    def __init__(
        self,
        prob: float = 0.5,
        area_range: tuple[float, float] = (0.02, 0.4),
        ratio_range: tuple[float, float] = (0.3, 1 / 0.3),
        pixel_level: bool = True,
        seg_fill: int = 255,
        max_tries: int = 1000,
    ):
        if not (0.0 < area_range[0] <= area_range[1] <= 1.0):
            raise ValueError(f"area_range must lie in (0, 1], got {area_range}")
        self.prob = prob
        self.area_range: tuple[float, float] = (float(area_range[0]), float(area_range[1]))
        self.ratio_range: tuple[float, float] = (float(ratio_range[0]), float(ratio_range[1]))
        self.pixel_level, self.seg_fill, self.max_tries = pixel_level, seg_fill, max_tries

    @cache_randomness
    def _hole(self, h: int, w: int) -> tuple[int, int, int, int] | None:
        if np.random.rand() >= self.prob:
            return None
        for _ in range(self.max_tries):
            area = np.random.uniform(*self.area_range) * h * w
            ratio = np.random.uniform(*self.ratio_range)
            hole_w, hole_h = int(np.sqrt(area / ratio)), int(np.sqrt(area * ratio))
            x, y = np.random.randint(0, w), np.random.randint(0, h)
            if x + hole_w <= w and y + hole_h <= h:
                return x, y, hole_w, hole_h
        return None  # a very thin image: no hole fits

    def transform(self, results: dict) -> dict:
        img = results["img"]
        h, w = img.shape[:2]
        hole = self._hole(h, w)
        if hole is None:
            return results
        x, y, hole_w, hole_h = hole
        channels = 1 if img.ndim == 2 else img.shape[2]
        shape = (hole_h, hole_w) if img.ndim == 2 else (hole_h, hole_w, channels)
        value = np.random.uniform(0, 255, shape) if self.pixel_level else np.random.uniform(0, 255)
        img = img.copy()
        img[y : y + hole_h, x : x + hole_w] = value
        results["img"] = img
        if results.get("gt_seg_map") is not None:
            seg = results["gt_seg_map"].copy()
            seg[y : y + hole_h, x : x + hole_w] = self.seg_fill
            results["gt_seg_map"] = seg
        return results
