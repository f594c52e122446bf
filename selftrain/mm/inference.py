"""Batched inference over a list of images with an OpenMMLab model: the loop that pseudo
labeling and stability scoring share. The model and the test-time pipeline come from the
config builder; this only loads weights and feeds batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from selftrain.mm.transforms import (
    MISSING,
    READ_FAILED,
    REJECTED,
    InfrastructureError,
    describe,
    infrastructure_kind,
    mark_unreadable,
    with_retries,
)

T = TypeVar("T")


class ImageList:
    """Images (dicts with image_uri) through a test pipeline: a map-style dataset for DataLoader.

    ``pipeline``: a list of transform configs or an mmengine ``Compose`` whose first step
    loads the image (mmcv's LoadImageFromFile or a subclass). Item i is the pipeline's output
    for ``{"img_path": images[i]["image_uri"], "img_id": i}``.

    Any per-image failure of the pipeline (a missing, empty or undecodable file, a degenerate
    size that a Resize cannot handle, ...) does not stop the batch: the item is the black
    placeholder put through the pipeline's steps after loading, with ``load_error`` naming the
    reason, as LoadImageOrMarkUnreadable does for decode errors. Infrastructure failures
    (storage unreachable, access denied, out of memory, not fork-safe) are retried and then
    raised as InfrastructureError naming the image (selftrain.mm.transforms.with_retries).
    """

    def __init__(self, images: list[dict], pipeline):
        from mmcv.transforms import LoadImageFromFile
        from mmengine.dataset import Compose

        self.images = images
        self.pipeline = pipeline if isinstance(pipeline, Compose) else Compose(pipeline)
        steps = list(self.pipeline.transforms)
        if not steps or not isinstance(steps[0], LoadImageFromFile):
            raise ValueError(
                f"the inference pipeline must start by loading the image (LoadImageFromFile or "
                f"a subclass), not {type(steps[0]).__name__ if steps else 'nothing'}"
            )
        self.after_load = Compose(steps[1:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        uri = self.images[i]["image_uri"]
        data, reason = with_retries(lambda: self._run(i), uri)
        if data is None:  # the image's own failure: a placeholder carrying the reason
            data = self._placeholder(i, reason or "unreadable")
        return data

    def _run(self, i: int) -> tuple[dict | None, str | None]:
        """(the pipeline's output, None), or (None, the reason) when a step fails on this image.
        Infrastructure errors are raised."""
        data = {"img_path": self.images[i]["image_uri"], "img_id": i}
        for n, step in enumerate(self.pipeline.transforms):
            shape = data.get("ori_shape")
            try:
                out = step(data)
            except Exception as exc:  # noqa: BLE001 - the image's own failures become its reason
                if isinstance(exc, InfrastructureError) or infrastructure_kind(exc):
                    raise
                return None, step_failure(n, type(step).__name__, shape, exc)
            if out is None:
                return None, f"{REJECTED} in {type(step).__name__} (it dropped the image)"
            data = out
        return data, None

    def _placeholder(self, i: int, reason: str) -> dict:
        results = mark_unreadable({"img_path": self.images[i]["image_uri"], "img_id": i}, reason)
        out = self.after_load(results)
        if out is None:
            raise RuntimeError(f"the inference pipeline drops even the placeholder of {results['img_path']}")
        return out


def step_failure(index: int, step: str, shape, exc: Exception) -> str:
    """The skip reason of an image on which pipeline step ``index`` (named ``step``) raised
    ``exc``; ``shape``: the image's (height, width) when it was loaded, else None."""
    if index == 0:
        return f"{MISSING if isinstance(exc, FileNotFoundError) else READ_FAILED}: {describe(exc)}"
    size = f" ({shape[1]}x{shape[0]} px)" if shape is not None and len(shape) >= 2 else ""
    return f"{REJECTED}{size} in {step}: {describe(exc)}"


PRECISIONS = ("fp32", "amp")
# the parts of an mmdet detector / mmseg segmentor whose forward is the network; decoding boxes,
# NMS and the TTA merge come after them and stay in float32 (mmcv's NMS takes float32 only)
NETWORK_PARTS = ("backbone", "neck", "bbox_head", "rpn_head", "roi_head.bbox_head", "roi_head.mask_head", "decode_head")


def mixed_precision(model, device: str):
    """``model`` (a detector, a segmentor, or a TTA wrapper of one: its ``module``) with each of
    its NETWORK_PARTS run under ``torch.autocast`` - float16 on CUDA, bfloat16 on a CPU - and
    their outputs cast back to float32, so that box decoding, NMS, softmax and the TTA merge
    run in float32 as before. Returns the same model. Raises ValueError when the model has
    none of those parts."""
    import torch

    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    inner = model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model
    wrapped = []
    for name in NETWORK_PARTS:
        part = inner
        for attr in name.split("."):
            part = getattr(part, attr, None)
        if not isinstance(part, torch.nn.Module):
            continue

        def forward(*args, _forward=part.forward, **kwargs):
            with torch.autocast(device_type=device, dtype=dtype):
                out = _forward(*args, **kwargs)
            return _as_float32(out)

        part.forward = forward
        wrapped.append(name)
    if not wrapped:
        raise ValueError(f"mixed precision: {type(inner).__name__} has none of the parts {NETWORK_PARTS}")
    return model


def _as_float32(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_as_float32(o) for o in out)
    if isinstance(out, dict):
        return {k: _as_float32(v) for k, v in out.items()}
    return out


def build_model(model_dict: dict, scope: str, checkpoint: str | None = None, precision: str = "fp32"):
    """Build a model from a config dict in ``scope``, load a checkpoint, move it to the device,
    eval(). ``precision``: 'fp32', or 'amp' (:func:`mixed_precision`); ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    from mmengine.config import ConfigDict
    from mmengine.device import get_device
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    import selftrain.mm  # noqa: F401 - registers the project's models and transforms
    from selftrain.mm.loss_normalization import REVISE_KEYS

    init_default_scope(scope)
    if scope == "mmdet":
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = MODELS.build(ConfigDict(model_dict))
    if checkpoint is not None:
        target = model.module if hasattr(model, "module") and hasattr(model, "merge_preds") else model
        load_checkpoint(target, checkpoint, map_location="cpu", revise_keys=REVISE_KEYS, logger="silent")
    model = model.to(get_device()).eval()
    return mixed_precision(model, get_device()) if precision == "amp" else model


def prefetched(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """``items`` in order, produced ahead by a background thread - at most ``depth`` waiting
    in the queue and one more being handed over: the next batch is read, decoded and
    transformed (cv2 and numpy release the GIL) while the model runs on this one. An exception
    of the producer is raised here, at its place in the order; when the consumer stops early
    the thread reads no further item (it finishes the one it is reading)."""
    import queue
    import threading

    done = object()
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            source = iter(items)
            while not stop.is_set():  # checked before each item: nothing is read once the consumer left
                try:
                    item = next(source)
                except StopIteration:
                    q.put((done, None))
                    return
                q.put((item, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            q.put((done, exc))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def predict(
    model,
    images: list[dict],
    pipeline: list[dict],
    batch_size: int,
    num_workers: int | None = None,
    *,
    scope: str = "mmdet",
    by_shape: bool = False,
    prefetch: bool = False,
) -> Iterator[tuple[dict, Any]]:
    """(image row, prediction) for every image, in batches; the image row's order is kept.

    ``pipeline``: transform configs, built in ``scope`` (the task kind's OpenMMLab scope).
    Images whose pipeline failed come with ``pred.metainfo['load_error']`` (ImageList).
    ``by_shape`` (the kind's ``batch_by_shape``: segmentation) runs each batch in sub-batches
    of equal input shapes (mmseg stacks a test batch without padding and refuses mixed sizes);
    otherwise batches go whole (mmdet pads them). ``prefetch``: prepare the next batch in a
    thread (:func:`prefetched`) while the model runs. Raises InfrastructureError, naming the
    image, when reading fails for a reason that is not the image's own (after retries).
    """
    for image, (pred,) in predict_each(
        [model], images, pipeline, batch_size, num_workers, scope=scope, by_shape=by_shape, prefetch=prefetch
    ):
        yield image, pred


def predict_each(
    models: list,
    images: list[dict],
    pipeline: list[dict],
    batch_size: int,
    num_workers: int | None = None,
    *,
    scope: str = "mmdet",
    by_shape: bool = False,
    prefetch: bool = False,
) -> Iterator[tuple[dict, list]]:
    """(image row, [the prediction of each model, in the order of ``models``]) for every image.

    Each image is read, decoded and transformed once for all the models (ST++'s K checkpoints:
    tasks/score_stability.py); every batch then goes through each model's ``test_step`` in
    turn. The models must take the same inputs (one architecture, one pipeline). Arguments and
    errors as :func:`predict`."""
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    if not models:
        raise ValueError("predict_each needs at least one model")
    if num_workers is None:
        from selftrain.mm.calibrate import default_workers

        num_workers = default_workers()
    with DefaultScope.overwrite_default_scope(scope):  # the model's transforms
        dataset = ImageList(images, pipeline)
    loader: torch.utils.data.DataLoader = torch.utils.data.DataLoader(
        dataset,  # type: ignore[arg-type]  # a map-style dataset (__len__, __getitem__)
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=pseudo_collate,
        shuffle=False,
    )
    with torch.no_grad():
        for batch in prefetched(loader) if prefetch else loader:
            per_model = [grouped_test_step(m, batch) if by_shape else list(m.test_step(batch)) for m in models]
            for preds in zip(*per_model, strict=True):
                yield images[preds[0].metainfo["img_id"]], list(preds)


def _is_tta_batch(batch: dict) -> bool:
    inputs = batch["inputs"]
    return bool(inputs) and isinstance(inputs[0], (list, tuple))


def shape_groups(batch: dict) -> list[list[int]]:
    """Positions of a collated batch's images grouped by input shape, groups in order of first
    appearance, positions ascending. The key is an image's (C, H, W) input shape, or for a TTA
    batch (``inputs`` a list over views of lists over images) the tuple of its shapes over all
    views."""
    inputs = batch["inputs"]
    if _is_tta_batch(batch):
        keys = [tuple(tuple(view[i].shape) for view in inputs) for i in range(len(inputs[0]))]
    else:
        keys = [tuple(x.shape) for x in inputs]
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def sub_batch(batch: dict, positions: list[int]) -> dict:
    """The images at ``positions`` of a collated batch (plain or TTA), in that order."""
    if _is_tta_batch(batch):
        return {k: [[view[i] for i in positions] for view in v] for k, v in batch.items()}
    return {k: [v[i] for i in positions] for k, v in batch.items()}


def grouped_test_step(model, batch: dict) -> list:
    """``model.test_step`` over the batch's sub-batches of equal input shapes; predictions in
    the batch's image order."""
    groups = shape_groups(batch)
    if len(groups) == 1:
        return list(model.test_step(batch))
    preds: list = [None] * sum(len(g) for g in groups)
    for positions in groups:
        for i, pred in zip(positions, model.test_step(sub_batch(batch, positions)), strict=True):
            preds[i] = pred
    return preds
