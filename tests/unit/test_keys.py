"""Artifact keys: same inputs give the same key; any single change gives a new one."""

import hashlib
import math

import pytest

from storage.keys import KEY_LENGTH, KeyMaterialError, artifact_key, canonical_json, digest_json

BASE = dict(
    stage="pseudo_label_shard",
    stage_version=1,
    config_digest="c0ffee",
    inputs={"teacher": "a" * 32, "shard": "b" * 32},
    params={"score_thr": 0.5, "scales": [1.0]},
)


def test_canonical_json_is_sorted_compact_and_order_free():
    assert canonical_json({"b": 1, "a": [1, 2.5, None, True]}) == '{"a":[1,2.5,null,true],"b":1}'
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})
    assert canonical_json((1, 2)) == canonical_json([1, 2])
    assert canonical_json({"é": "ü"}) == '{"é":"ü"}'


def test_key_is_sha256_of_the_canonical_payload():
    expected_text = (
        '{"config_digest":"c0ffee","inputs":{"shard":"'
        + "b" * 32
        + '","teacher":"'
        + "a" * 32
        + '"},"params":{"scales":[1.0],"score_thr":0.5},"stage":"pseudo_label_shard",'
        '"stage_version":1}'
    )
    expected = hashlib.sha256(expected_text.encode()).hexdigest()[:KEY_LENGTH]
    assert artifact_key(**BASE) == expected
    assert len(expected) == 32


def test_same_inputs_same_key_regardless_of_dict_order():
    other = dict(BASE, inputs={"shard": "b" * 32, "teacher": "a" * 32}, params={"scales": [1.0], "score_thr": 0.5})
    assert artifact_key(**BASE) == artifact_key(**other)


@pytest.mark.parametrize(
    "field,value",
    [
        ("stage", "train_model"),
        ("stage_version", 2),
        ("config_digest", "c0ffef"),
        ("inputs", {"teacher": "a" * 31 + "b", "shard": "b" * 32}),
        ("inputs", {"teacher": "a" * 32}),
        ("params", {"score_thr": 0.4, "scales": [1.0]}),
        ("params", {"score_thr": 0.5, "scales": [1.0, 1.5]}),
        ("params", {"score_thr": 0.5, "scales": [1.0], "flip": True}),
    ],
)
def test_any_single_change_gives_a_new_key(field, value):
    assert artifact_key(**dict(BASE, **{field: value})) != artifact_key(**BASE)


def test_list_order_matters_but_set_order_does_not():
    assert canonical_json([1, 2]) != canonical_json([2, 1])
    assert canonical_json({2, 1, 3}) == canonical_json({3, 1, 2}) == "[1,2,3]"


@pytest.mark.parametrize("bad", [math.nan, math.inf, {1: "x"}, object(), b"bytes"])
def test_values_that_cannot_be_keyed_are_refused_with_the_path(bad):
    with pytest.raises(KeyMaterialError, match=r"\$\.params\.x"):
        canonical_json({"params": {"x": bad}})


def test_pydantic_models_key_by_their_json_dump():
    from pydantic import BaseModel

    class P(BaseModel):
        thr: float = 0.5
        scales: tuple[float, ...] = (1.0,)

    assert digest_json(P()) == digest_json({"thr": 0.5, "scales": [1.0]})


def test_invalid_stage_name_is_refused():
    with pytest.raises(ValueError, match="invalid stage name"):
        artifact_key(**dict(BASE, stage="Bad Stage"))
