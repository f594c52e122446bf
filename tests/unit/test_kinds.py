"""The task kind is decided once, from the registered set, and carries what differs."""

import pytest

from selftrain.kinds import DETECTION, KINDS, SEGMENTATION, kind_of
from selftrain.stage import PSEUDO_STAGES
from storage.store import ArtifactStore


def test_kind_of_a_registered_set(tmp_path):
    store = ArtifactStore(str(tmp_path))
    assert kind_of(store.ref("d", "dataset", "a" * 32)) is DETECTION
    assert kind_of(store.ref("d", "seg_dataset", "a" * 32)) is SEGMENTATION
    with pytest.raises(ValueError, match="is not a registered dataset"):
        kind_of(store.ref("d", "train", "a" * 32))


def test_each_kind_is_complete_and_consistent():
    assert set(KINDS) == {"detection", "segmentation"}
    assert {k.pseudo_stage for k in KINDS.values()} == set(PSEUDO_STAGES)
    for kind in KINDS.values():
        assert kind.main_metric in kind.metrics and "st" in kind.methods and "S1" in kind.aug_presets
        cfg = kind.load_config(kind.default_config)
        assert kind.tta_pipeline(cfg, list(kind.default_tta_scales("st")), True)[-1]["type"] == "TestTimeAug"
        assert kind.tta_model(cfg, 3)["type"] in ("DetTTAModel", "ConfidentSegTTAModel")
    assert DETECTION.metrics_from({}) == {m: 0.0 for m in DETECTION.metrics}  # nothing detected: AP 0
    assert SEGMENTATION.metrics_from({"mIoU": 48.0, "aAcc": 90.0}) == {"mIoU": 0.48, "aAcc": 0.9}
