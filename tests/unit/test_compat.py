"""Run-time compatibility fixes: the reference NMS and the checkpoint allow-list."""

import io
import pickle

import pytest
import torch

from selftrain.compat import nms_reference


def test_nms_reference_hand_computed():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 5], [20, 20, 30, 30]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.85, 0.3])
    # IoU(0,1) = 81 / 119 = 0.68; IoU(0,2) = 50 / 100 = 0.5 (not > 0.5, kept); box 3 is apart
    assert nms_reference(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms_reference(boxes, scores, 0.45).tolist() == [0, 3]
    assert nms_reference(boxes, scores, 0.7).tolist() == [0, 2, 1, 3]
    assert nms_reference(boxes[:0], scores[:0], 0.5).tolist() == []


def test_mmengine_checkpoints_load_safely_and_arbitrary_getattr_is_refused():
    from mmengine.logging.history_buffer import HistoryBuffer

    import selftrain.compat  # noqa: F401  (the hook ran when mmengine was imported)

    hb = HistoryBuffer()
    hb.update(1.5)
    buf = io.BytesIO()
    torch.save({"message_hub": {"loss": hb}}, buf)
    buf.seek(0)
    back = torch.load(buf)  # weights_only=True is torch's default
    assert back["message_hub"]["loss"].current() == 1.5

    class Sneaky:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, "__init__"))

    buf = io.BytesIO()
    pickle.dump({"x": Sneaky()}, buf, protocol=2)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="only HistoryBuffer statistics"):
        torch.load(buf)
